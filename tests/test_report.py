"""The report stage: built from two logged smoke runs, deterministic, and refusing incomplete input."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SMOKE


def quiet(message: str) -> None:
    pass


FIGURES = {"samples_final", "demo_tconv-run", "confusion_tconv-run", "eval_curves", "losses", "losses_tconv",
           "losses_upsample_sn", "real_probability", "g_loss", "checkerboard_early", "spectrum"}
HEADINGS = ("Introduction", "Experiment set-up", "Adversarial loss", "Generator loss", "Mutual-information term",
            "Results", "Samples", "Training losses", "Saturating and non-saturating G loss", "Discussion",
            "Checkerboard artefacts", "Architecture comparison", "Conclusion")


@pytest.fixture
def three_runs(home, smoke_overrides):
    """tconv with each G loss (differing in nothing else) and upsample_sn, in experiment 'smoke';
    the first tconv one evaluated."""
    from pipeline import evaluate, train
    from pipeline.config import load_config

    def smoke(*extra):
        return train.stage(load_config([SMOKE], [*smoke_overrides, *extra]), log=quiet)

    joint = ("model.arch=tconv", "train.real_fake_batch=joint", "train.d_augment=false")
    tconv = smoke(*joint, "tracking.run_name=tconv-run")
    saturating = smoke(*joint, "train.g_loss=saturating", "tracking.run_name=tconv-sat")
    upsample = smoke("model.arch=upsample_sn", "tracking.run_name=upsample-run")
    evaluate.evaluate_run(tconv, log=quiet)
    return tconv, saturating, upsample


def pdf_text(path: Path) -> str:
    """The PDF's text, math letters folded to plain ones (Typst sets 𝐷 for D) and spaces dropped."""
    import unicodedata

    from pypdf import PdfReader

    text = "\n".join(page.extract_text() for page in PdfReader(path).pages)
    return "".join(unicodedata.normalize("NFKC", text).split())


@pytest.mark.slow
def test_report_from_smoke_runs_is_a_typeset_document_with_every_figure(home, three_runs):
    from mlflow import MlflowClient
    from pypdf import PdfReader

    from pipeline import report
    from pipeline.report.document import escape

    out = report.build("smoke", out=home / "reports" / "smoke", log=quiet)
    assert {p.stem for p in (out / "figures").glob("*.png")} == FIGURES
    assert (out / "tables" / "runs.csv").read_text().count("\n") == 4  # header + 3 runs
    md, typ = (out / "report.md").read_text(), (out / "report.typ").read_text()
    for heading in HEADINGS:
        assert f" {heading}" in md and f" {escape(heading)}" in typ
    for name in FIGURES:
        assert f"(figures/{name}.png)" in md and f'"figures/{name}.png"' in typ
    client = MlflowClient()
    mixed = [client.get_run(r).data.metrics.get("eval/min_code_purity", 1.0) < 0.8 for r in three_runs]
    assert any(mixed)  # smoke runs are too short to give every code one digit
    sentence = next(line for line in md.splitlines() if "Codes that draw more than one digit: in " in line)
    assert sentence.split(", at least one code")[0].count(" seed ") == sum(mixed)  # each mixed run named once
    comparison = next(line for line in md.splitlines() if line.startswith("Runs with a code that draws its own"))
    assert comparison.count(" seed ") == sum(mixed)
    # Q's own view of the fakes is moot where D judges changed copies: upsample-run trains with d_augment.
    augment = next(line for line in md.splitlines() if line.startswith("Q learns the code from randomly rotated"))
    assert "(tconv-run, tconv-sat)" in augment, augment
    assert "| Q on transformed fakes | True | True | unused |" in md
    # Each change from the handout's recipe is said with its reason, here the smoke runs' 2 epochs.
    length = next(line for line in md.splitlines() if line.startswith("Trained for 2 epochs, not the handout's 6 ("))
    assert {"tconv-run", "tconv-sat", "upsample-run"} <= set(length.split("(")[1].split(")")[0].split(", "))
    assert "L_G = −E[log D(G(z,c))]" in md and "cal(L)_G^\"NS\" = -EE_(z, c) [log D(G(z, c))]" in typ

    reader = PdfReader(out / "report.pdf")
    assert len(reader.pages) == 8
    drawn = [{ref.idnum for ref in page["/Resources"]["/XObject"].get_object().values()
              if ref.get_object()["/Subtype"] == "/Image"} if "/XObject" in page["/Resources"] else set()
             for page in reader.pages]
    assert sum(len(images) for images in drawn) == len(set().union(*drawn)) == len(FIGURES)  # each once
    assert max(len(images) for images in drawn) >= 3  # figures share pages, not one figure per page
    text = pdf_text(out / "report.pdf")
    for heading in HEADINGS:
        assert "".join(heading.split()) in text, heading
    assert "−Ez,c[logD(G(z,c))]" in text  # the non-saturating loss, set as a formula
    assert "L_D" not in text  # no formula left as plain text
    assert "Yourtext(introductioninprose.typ)" in text  # the student's place, shown while empty

    # The same runs give the same files; prose.typ, the student's, is never overwritten.
    prose = out / "prose.typ"
    mine = prose.read_text().replace("#let introduction = none", "#let introduction = [My own introduction.]")
    prose.write_text(mine)
    (out / "notes.txt").write_text("mine too")
    figures = {p.name: p.read_bytes() for p in (out / "figures").glob("*.png")}
    again = report.build("smoke", out=out, log=quiet)
    assert prose.read_text() == mine and (out / "notes.txt").read_text() == "mine too"
    assert {p.name: p.read_bytes() for p in (again / "figures").glob("*.png")} == figures
    assert (again / "report.md").read_text() == md and (again / "report.typ").read_text() == typ
    assert "Myownintroduction." in pdf_text(again / "report.pdf")

    client = MlflowClient()
    exp = client.get_experiment_by_name("smoke")
    logged = client.search_runs([exp.experiment_id], "tags.`infogan.stage` = 'report'")
    assert all("report/report.pdf" in {a.path for a in client.list_artifacts(r.info.run_id, "report")} for r in logged)


def test_a_broken_prose_file_names_its_line_and_leaves_the_report_as_it_was(home, tmp_path, capsys):
    from pipeline import report
    from pipeline.cli import main
    from pipeline.report.document import Document, Prose, prose_template, to_typst

    doc = Document("t", "s", [Prose("introduction", "say hello")])
    (tmp_path / "report.typ").write_text(to_typst(doc))
    (tmp_path / "prose.typ").write_text(prose_template(doc).replace("= none", "= [unclosed"))
    with pytest.raises(report.ReportError, match=r"Typst could not compile .*report.typ: .*"):
        report.compile_pdf(tmp_path)
    assert not (tmp_path / "report.pdf").exists()
    (tmp_path / "prose.typ").write_text(prose_template(doc).replace("= none", "= [Hello *there*.]"))
    assert main(["report", "--compile", str(tmp_path)]) == 0
    assert "Hellothere." in pdf_text(tmp_path / "report.pdf")
    assert main(["report", "--compile", str(tmp_path / "nowhere")]) == 2
    assert "holds no report.typ" in capsys.readouterr().err


def test_report_refuses_an_experiment_without_runs_and_writes_nothing(home, capsys):
    from pipeline import report, tracking
    from pipeline.cli import main

    with pytest.raises(report.ReportError, match="experiment 'nope' does not exist"):
        report.build("nope", out=home / "reports" / "nope", log=quiet)
    tracking.ensure_experiment("empty")
    with pytest.raises(report.ReportError, match="experiment 'empty' has no finished training runs"):
        report.build("empty", out=home / "reports" / "empty", log=quiet)
    assert main(["report", "--experiment", "empty"]) == 2
    assert "has no finished training runs" in capsys.readouterr().err
    assert not (home / "reports").exists() or not any((home / "reports").iterdir())


def test_report_names_the_run_and_metrics_it_lacks(home):
    from pipeline import report, tracking

    run_id = tracking.new_run("partial", "broken", {"infogan.stage": "train"})
    tracker = tracking.MlflowTracker(run_id)
    tracker.log_metrics({"loss/d": 1.0, "loss/g": 0.7}, step=1)
    tracker.flush()  # sent before the run ends (and before another test's store takes this process)
    tracking.end_run(run_id, "FINISHED")
    with pytest.raises(report.ReportError) as e:
        report.build("partial", out=home / "reports" / "partial", log=quiet)
    assert run_id in str(e.value) and "broken" in str(e.value)
    assert "loss/info, prob/d_real, prob/d_fake_before_g, prob/d_fake_after_g" in str(e.value)
    assert "loss/d" not in str(e.value) and "loss/g" not in str(e.value)
    assert not (home / "reports").exists() or not any((home / "reports").iterdir())


def _run(name: str, seed: int, **finals):
    import pandas as pd

    from pipeline.report.collect import RunData

    rows = [(f"eval/{key}", 100, value, 1) for key, value in finals.items()]
    return RunData(f"id{seed}", f"{name} s{seed}", {"seed": str(seed)}, pd.DataFrame(rows, columns=["key", "step", "value", "timestamp"]))


def test_the_comparison_gives_mean_sd_the_worst_seed_and_the_runs_with_a_mixed_code():
    from pipeline.report import spread
    from pipeline.report.collect import variants

    good = dict(q_accuracy=0.95, demo_score_min=10, demo_perfect_frac=1.0, fld=80.0)
    runs = [_run("ns", 0, gen_accuracy=0.99, min_code_purity=0.97, **good),
            _run("ns", 1, gen_accuracy=0.89, min_code_purity=0.43, **{**good, "demo_score_min": 9, "fld": 120.0}),
            _run("ns", 2, gen_accuracy=0.98, min_code_purity=0.95, **good),
            _run("sat", 5, gen_accuracy=0.7, min_code_purity=0.81, **good)]
    rows = spread.comparison_rows(variants(runs))
    assert rows == [["ns", "3", "0.953 ± 0.055", "s1: 0.89", "0.950 ± 0.000", "s1: 0.43", "9", "100", "93.3"],
                    ["sat", "1", "0.700", "s5: 0.7", "0.950", "s5: 0.81", "10", "100", "80"]]
    assert len(rows[0]) == len(spread.COLUMNS)
    assert spread.mixed_runs(runs) == ["ns seed 1 (43%)"]
