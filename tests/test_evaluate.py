"""The evaluate stage and `infogan generate` on a smoke run (tiny classifier, tiny budgets)."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from conftest import SMOKE
from pipeline import cli, evaluate, train
from pipeline.config import load_config


@pytest.fixture
def smoke_run(home, smoke_overrides) -> str:
    return train.stage(load_config([SMOKE], smoke_overrides), log=lambda m: None)


def test_training_logs_eval_metrics_each_epoch(smoke_run, smoke_overrides):
    client = MlflowClient()
    steps = [m.step for m in client.get_metric_history(smoke_run, "eval/gen_accuracy")]
    assert steps == [8, 16]
    seconds = [m.value for m in client.get_metric_history(smoke_run, "perf/train_seconds")]
    assert len(seconds) == 2 and 0 < seconds[0] < seconds[1]
    classifier = client.search_runs([client.get_experiment_by_name("classifier").experiment_id])
    assert len(classifier) == 1 and "test_accuracy" in classifier[0].data.metrics
    # another training seed is judged by the same classifier, not a new one
    train.stage(load_config([SMOKE], smoke_overrides + ["seed=1"]), log=lambda m: None)
    assert len(client.search_runs([client.get_experiment_by_name("classifier").experiment_id])) == 1


def test_the_epoch_line_shows_the_worst_codes_purity_where_the_demo_grade_misses_a_mix():
    from pipeline import measure, names

    measured = {names.GEN_ACCURACY: 0.922, names.Q_ACCURACY: 0.883, names.DEMO_SCORE_MIN: 10.0,
                names.MIN_CODE_PURITY: 0.543}
    assert measure.evaluation_line(2, measured, 0) == ("epoch 2 evaluation: generated accuracy 0.922, Q accuracy "
                                                       "0.883, demo min 10/10, min code purity 0.54")


def test_evaluate_logs_metrics_mapping_and_figures_to_the_training_run(smoke_run, capsys):
    assert cli.main(["generate", "--run-id", smoke_run, "--digit", "7", "--out", "x.png"]) == 2
    assert "run `infogan evaluate --run-id" in capsys.readouterr().err

    evaluate.stage(smoke_run, log=lambda m: None)
    client = MlflowClient()
    run = client.get_run(smoke_run)
    for key in ("eval/gen_accuracy", "eval/q_accuracy", "eval/demo_score_mean", "eval/demo_score_min",
                "eval/demo_perfect_frac", "eval/fld", "eval/fld_floor", "eval/style_spread"):
        assert key in run.data.metrics
    assert 0.0 <= run.data.metrics["eval/gen_accuracy"] <= 1.0
    assert run.data.metrics["eval/style_spread"] > 0.0  # a barely trained G still varies with z
    # two real splits are far closer than a barely trained generator is to real digits
    assert 0.0 < run.data.metrics["eval/fld_floor"] < run.data.metrics["eval/fld"]
    assert {a.path for a in client.list_artifacts(smoke_run, "eval")} == {
        "eval/mapping.json", "eval/demo.png", "eval/confusion.png"}
    with open(client.download_artifacts(smoke_run, "eval/mapping.json")) as f:
        mapping = json.load(f)
    assert sorted(mapping["digit_of_code"]) == list(range(10))
    # the classifier trained for the training run was reused, not trained again
    assert len(client.search_runs([client.get_experiment_by_name("classifier").experiment_id])) == 1
    stage_runs = client.search_runs([run.info.experiment_id], "tags.`infogan.stage` = 'evaluate'")
    assert [r.data.tags["infogan.evaluated_run_id"] for r in stage_runs] == [smoke_run]


def test_reading_images_in_chunks_gives_what_one_pass_gives():
    """G, Q and the classifier read many images in chunks of ``reference.CHUNK`` (for speed); each
    image's output must not depend on the chunk it was in (eval mode: no batch statistics)."""
    import torch

    from pipeline import measure, models, reference

    torch.manual_seed(0)
    g, d = models.build(load_config([], []).model)
    classifier = reference.Classifier()
    n = 2 * reference.CHUNK + 88
    z, c = torch.randn(n, g.noise_dim), torch.randint(g.code_dim, (n,))
    images = measure.generate(g, z, c)
    torch.testing.assert_close(images, measure.generate(g, z, c, batch_size=n))
    assert g.training and d.training and classifier.training  # each left in the mode it came in
    torch.testing.assert_close(measure.q_codes(d, images), measure.q_codes(d, images, batch_size=n))
    np.testing.assert_allclose(reference.features(classifier, images),
                               reference.features(classifier, images, batch_size=n), rtol=1e-4, atol=1e-5)
    assert torch.equal(reference.predict(classifier, images), reference.predict(classifier, images, batch_size=n))


def test_generate_outputs_are_reproducible(smoke_run, tmp_path):
    evaluate.stage(smoke_run, log=lambda m: None)
    digit = tmp_path / "sevens.png"
    assert cli.main(["generate", "--run-id", smoke_run, "--digit", "7", "--n", "16", "--out", str(digit)]) == 0
    assert Image.open(digit).size == (4 * 30 + 2, 4 * 30 + 2)  # 4x4 grid of 28 px + 2 px padding
    demo = tmp_path / "demo.png"
    assert cli.main(["generate", "--run-id", smoke_run, "--demo", "--out", str(demo)]) == 0
    assert Image.open(demo).size[0] > 300

    outputs = []
    for name, seed in (("a.npz", "3"), ("b.npz", "3"), ("c.npz", "4")):
        path = tmp_path / name
        assert cli.main(["generate", "--run-id", smoke_run, "--raw", "--styles", "5", "--seed", seed,
                         "--out", str(path)]) == 0
        outputs.append(np.load(path)["images"])
    assert outputs[0].shape == (5, 10, 28, 28) and outputs[0].dtype == np.float32
    assert 0.0 <= outputs[0].min() and outputs[0].max() <= 1.0
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])

    # config.yaml deleted from the run's artifacts: the run still loads (its checkpoint holds the config)
    artifacts = Path(url2pathname(urlparse(MlflowClient().get_run(smoke_run).info.artifact_uri).path))
    (artifacts / "config.yaml").unlink()
    again = tmp_path / "d.npz"
    assert cli.main(["generate", "--run-id", smoke_run, "--raw", "--styles", "5", "--seed", "3",
                     "--out", str(again)]) == 0
    np.testing.assert_array_equal(np.load(again)["images"], outputs[0])


def test_generate_refuses_unknown_runs_and_bad_outputs(home, capsys):
    assert cli.main(["generate", "--run-id", "0123abc", "--raw", "--out", "x.npz"]) == 2
    assert "no run '0123abc'" in capsys.readouterr().err
    assert cli.main(["generate", "--run-id", "0123abc", "--raw", "--out", "x.png"]) == 2
    assert "--raw writes an .npz" in capsys.readouterr().err


def test_evaluating_a_run_of_another_stage_leaves_no_evaluate_run(home, capsys):
    from pipeline import tracking

    data_run = tracking.new_run("smoke", "data", {"infogan.stage": "data"})
    tracking.end_run(data_run, "FINISHED")
    assert cli.main(["evaluate", "--run-id", data_run]) == 2
    err = capsys.readouterr().err
    assert "is not a training run (stage: data)" in err and len(err.strip().splitlines()) == 1
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert [r.info.run_id for r in runs] == [data_run]  # no FAILED evaluate run beside it


def test_evaluating_again_adds_only_the_metrics_the_run_lacks(home, smoke_overrides, monkeypatch):
    from pipeline import measure, names

    full = measure.Measurement.as_metrics
    with monkeypatch.context() as older:  # a run trained and evaluated before eval/style_spread existed
        older.setattr(measure.Measurement, "as_metrics",
                      lambda self: {k: v for k, v in full(self).items() if k != names.STYLE_SPREAD})
        run_id = train.stage(load_config([SMOKE], smoke_overrides), log=lambda m: None)
        evaluate.stage(run_id, log=lambda m: None)
    client = MlflowClient()
    assert names.STYLE_SPREAD not in client.get_run(run_id).data.metrics
    before = [(m.step, m.value) for m in client.get_metric_history(run_id, names.GEN_ACCURACY)]

    lines = []
    evaluate.stage(run_id, log=lines.append)
    step = int(client.get_run(run_id).data.tags["infogan.evaluated_step"])
    assert [m.step for m in client.get_metric_history(run_id, names.STYLE_SPREAD)] == [step]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, names.GEN_ACCURACY)] == before
    assert any("metrics it lacked are added: eval/style_spread" in line for line in lines), lines
