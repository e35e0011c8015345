"""The report stage: built from two logged smoke runs, deterministic, and refusing incomplete input."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SMOKE


def quiet(message: str) -> None:
    pass


FIGURES = {"loss_tconv", "loss_upsample_sn", "loss_architectures", "real_probability", "eval_curves",
           "samples_final", "demo_tconv-run", "confusion_tconv-run", "checkerboard_early", "comparison_table"}


@pytest.fixture
def two_runs(home, smoke_overrides):
    """A tconv and an upsample_sn smoke run in experiment 'smoke'; the tconv one evaluated."""
    from pipeline import evaluate, train
    from pipeline.config import load_config

    tconv = train.run(load_config([SMOKE], [*smoke_overrides, "model.arch=tconv", "train.real_fake_batch=joint",
                                            "tracking.run_name=tconv-run"]), log=quiet)
    upsample = train.run(load_config([SMOKE], [*smoke_overrides, "model.arch=upsample_sn",
                                               "tracking.run_name=upsample-run"]), log=quiet)
    evaluate.run(tconv, log=quiet)
    return tconv, upsample


@pytest.mark.slow
def test_report_from_two_smoke_runs_has_every_figure_and_a_checked_pdf(home, two_runs):
    from mlflow import MlflowClient
    from pypdf import PdfReader

    from pipeline import report

    out = report.build("smoke", out=home / "reports" / "smoke", log=quiet)
    assert {p.stem for p in (out / "figures").glob("*.png")} == FIGURES
    assert (out / "tables" / "runs.csv").read_text().count("\n") == 3  # header + 2 runs
    md = (out / "report.md").read_text()
    for heading in ("## 1 Introduction", "## 2 Experiment set-up", "## 3 Results", "## 4 Discussion"):
        assert heading in md
    for name in FIGURES:
        assert f"(figures/{name}.png)" in md
    assert "L_G = −E[log D(G(z,c))]" in md and "non_saturating" in md

    pages = PdfReader(out / "report.pdf").pages
    # matplotlib lists every image in one shared resource dictionary: count what each page draws.
    drawn = [re.findall(rb"/(I\d+) Do", page.get_contents().get_data()) for page in pages]
    text_pages = next(i for i, names in enumerate(drawn) if names)
    assert text_pages >= 1
    assert [len(names) for names in drawn[text_pages:]] == [1] * len(FIGURES)  # one figure per page
    assert len({name for names in drawn for name in names}) == len(FIGURES)  # each a different image
    xobjects = pages[-1]["/Resources"]["/XObject"].get_object()
    assert all(xobjects[f"/{n.decode()}"].get_object()["/Subtype"] == "/Image" for names in drawn for n in names)
    assert "Experiment set-up" in pages[0].extract_text()

    # The same runs give the same files.
    again = report.build("smoke", out=home / "reports" / "again", log=quiet)
    for path in sorted((out / "figures").glob("*.png")):
        assert path.read_bytes() == (again / "figures" / path.name).read_bytes(), path.name
    assert (again / "report.md").read_text() == md

    client = MlflowClient()
    exp = client.get_experiment_by_name("smoke")
    (logged,) = client.search_runs([exp.experiment_id], "tags.`infogan.stage` = 'report'", max_results=1)
    assert "report/report.pdf" in {a.path for a in client.list_artifacts(logged.info.run_id, "report")}


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
    tracking.MlflowTracker(run_id).log_metrics({"loss/d": 1.0, "loss/g": 0.7}, step=1)
    tracking.MlflowTracker(run_id).flush()
    tracking.end_run(run_id, "FINISHED")
    with pytest.raises(report.ReportError) as e:
        report.build("partial", out=home / "reports" / "partial", log=quiet)
    assert run_id in str(e.value) and "broken" in str(e.value)
    assert "loss/info, prob/d_real, prob/d_fake_before_g, prob/d_fake_after_g" in str(e.value)
    assert not (home / "reports").exists() or not any((home / "reports").iterdir())
