"""The report stage: the lab report's figures, tables and document, rebuilt from what MLflow
holds (params, metric histories, logged images and evaluation artifacts) and nothing else.

``collect`` reads the runs, ``figures`` draws, ``sections`` says what each section holds (its
fixed text is in ``wording``),
``document`` renders it as Typst (compiled to the PDF) and Markdown, ``build`` puts the folder
together: ``reports/<name>/`` with report.pdf, report.typ, prose.typ (the student's words, never
overwritten), report.md, figures/ and tables/.
"""
from .build import build, compile_pdf
from .collect import ReportError

__all__ = ["build", "compile_pdf", "ReportError"]
