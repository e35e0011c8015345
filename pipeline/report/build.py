"""Building the report folder: collect the runs, write figures, tables, report.typ, report.md
and (once) prose.typ into a staging folder, compile the PDF, and only then swap it in for the
old folder, so a failure leaves the previous report as it was."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from .. import names
from ..config import resolve_path
from .collect import ReportError, RunData, collect
from .document import PROSE_FILE, prose_template, to_markdown, to_typst
from .sections import Writer

# What `infogan report` writes and may replace; everything else in the folder is the student's.
OWNED = ("report.typ", "report.md", "report.pdf", "figures", "tables")


def build(experiment: str, run_ids: Sequence[str] = (), out: Optional[Path] = None,
          report_run: Optional[str] = None, log: Callable[[str], None] = print) -> Path:
    """Build the report of ``experiment`` into ``out`` (default ``reports/<experiment>``) and
    log it as artifacts (``report/``) of ``report_run``, or of a new run named "report" in the
    experiment; returns the folder. prose.typ, and any other file the report does not own, is
    kept as it is."""
    out = Path(out) if out is not None else resolve_path(f"reports/{experiment}")
    with tempfile.TemporaryDirectory() as downloads:
        runs, sweeps = collect(experiment, run_ids, Path(downloads), log)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        staging.chmod(0o755)  # mkdtemp's 0700 would make the report private to this user
        try:
            _write(staging, experiment, runs, sweeps)
            _keep_the_students_files(out, staging)
            compile_pdf(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _swap(staging, out)
    log(f"report written to {out} ({len(runs)} runs): report.pdf (from report.typ; your text goes in "
        f"{PROSE_FILE}), report.md, figures/, tables/")
    _log_report_run(experiment, runs, out, report_run, log)
    return out


def compile_pdf(folder: Path) -> Path:
    """report.typ -> report.pdf in ``folder`` (Typst, no LaTeX); a ReportError names the problem,
    e.g. a syntax error in the student's prose.typ with its line."""
    import typst

    folder = Path(folder)
    source = folder / "report.typ"
    if not source.is_file():
        raise ReportError(f"{folder} holds no report.typ; build the report first (infogan report --experiment NAME)")
    try:
        typst.compile(str(source), output=str(folder / "report.pdf"), root=str(folder))
    except typst.TypstError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReportError(f"Typst could not compile {source}: {first}") from None
    return folder / "report.pdf"


def _write(folder: Path, experiment: str, runs: list[RunData], sweeps: dict) -> None:
    (folder / "figures").mkdir()
    (folder / "tables").mkdir()
    doc = Writer(folder, experiment, runs, sweeps).build()
    _runs_table(runs).to_csv(folder / "tables" / "runs.csv", index=False)
    (folder / "report.typ").write_text(to_typst(doc))
    (folder / "report.md").write_text(to_markdown(doc))
    (folder / PROSE_FILE).write_text(prose_template(doc))


def _runs_table(runs: list[RunData]):
    import pandas as pd

    keys = (names.GEN_ACCURACY, names.Q_ACCURACY, names.DEMO_SCORE_MIN, names.DEMO_PERFECT_FRAC, names.FLD,
            names.PROB_D_REAL, names.PROB_D_FAKE_AFTER_G)
    return pd.DataFrame([{"run": r.name, "experiment": r.variant, "seed": r.seed, "arch": r.arch,
                          "g_loss": r.g_loss, **{k: r.final(k) for k in keys}, "run_id": r.run_id} for r in runs])


def _keep_the_students_files(old: Path, staging: Path) -> None:
    if not old.is_dir():
        return
    for item in old.iterdir():
        if item.name in OWNED:
            continue
        target = staging / item.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, target)


def _swap(staging: Path, out: Path) -> None:
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, trash / out.name)
        os.replace(staging, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, out)


def _log_report_run(experiment: str, runs: list[RunData], out: Path, report_run: Optional[str], log) -> str:
    from .. import tracking

    tags = {names.STAGE: "report", names.REPORT_RUNS: ",".join(r.run_id for r in runs)}
    if report_run is not None:
        tracker = tracking.MlflowTracker(report_run)
        tracker.set_tags(tags)
        tracker.log_artifacts(out, "report")
        return report_run
    run_id = tracking.new_run(experiment, "report", tags)
    try:
        tracking.MlflowTracker(run_id).log_artifacts(out, "report")
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    tracking.end_run(run_id, "FINISHED")
    log(f"report logged to run {run_id} (artifacts: report/)")
    return run_id
