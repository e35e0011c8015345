"""Smoke training through every entry: the stage function, the CLI (killed and resumed), and
`mlflow run`. Each uses a temporary store and the small configs/smoke.yaml."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

import cli_process
from conftest import REPO, SMOKE, own_store, subprocess_env
from pipeline import checkpoint, faults, loop, losses, runs, stages, train, tracking
from pipeline.config import load_config

EXPECTED_METRICS = {"loss/d", "loss/g", "loss/info", "prob/d_real", "prob/d_fake_before_g",
                    "prob/d_fake_after_g", "grad/g_norm", "perf/img_per_s"}


def history(run_id: str, key: str = "loss/d") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key))


def only_run(experiment: str = "smoke"):
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def test_smoke_run_logs_everything_a_user_looks_for(home, smoke_overrides):
    cfg = load_config([SMOKE], smoke_overrides + ["tracking.log_model=true"])
    run_id = train.stage(cfg, log=lambda m: None)
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert EXPECTED_METRICS <= set(run.data.metrics)
    assert [step for step, _ in history(run_id)] == list(range(2, 17, 2))  # 2 epochs x 8 steps, every 2
    assert all(math.isfinite(v) for _, v in history(run_id))
    assert run.data.params["train.lr_g"] == "0.0014" and run.data.params["model.arch"] == "paper"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "fixed_noise.npy", "images", "checkpoints", "samples"} <= artifacts
    images = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]
    assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in images if "compressed" not in p) == [8, 16]
    # the generator comes back by model URI, and its samples depend on the code
    import mlflow.pytorch

    g = mlflow.pytorch.load_model(f"runs:/{run_id}/generator").eval()
    z = torch.randn(1, 54).repeat(10, 1)
    images = g(z, torch.eye(10))
    assert images.shape == (10, 1, 28, 28)
    assert (images[0] - images[1]).abs().max() > 1e-4
    ckpt = runs.load_checkpoint(cfg, run_id)
    assert ckpt["step"] == 16 and ckpt["run_id"] == run_id and "lr_g: 0.001" in ckpt["config"]


@pytest.mark.parametrize("arch", ["tconv", "upsample_sn"])
def test_every_architecture_logs_models_that_load_back(home, smoke_overrides, arch):
    """The paper network is covered above; spectral norm (upsample_sn) cannot be pickled as it
    trains, so its logged discriminator must be the same function in a plain form."""
    cfg = load_config([SMOKE], smoke_overrides + ["tracking.log_model=true", f"model.arch={arch}"])
    run_id = train.stage(cfg, log=lambda m: None)
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"
    import mlflow.pytorch

    from pipeline import models

    g = mlflow.pytorch.load_model(f"runs:/{run_id}/generator").eval()
    d = mlflow.pytorch.load_model(f"runs:/{run_id}/discriminator").eval()
    ckpt = runs.load_checkpoint(cfg, run_id)
    trained_g, trained_d = models.build(cfg.model)
    trained_g.load_state_dict(ckpt["g_ema"])
    trained_d.load_state_dict(ckpt["d"])
    z, c = torch.randn(10, 54, generator=torch.Generator().manual_seed(0)), torch.eye(10)
    torch.testing.assert_close(g(z, c), trained_g.eval()(z, c))
    images = g(z, c)
    for logged, trained in zip(d(images), trained_d.eval()(images)):
        torch.testing.assert_close(logged, trained)


def test_same_seed_same_losses(home, smoke_overrides):
    quick = [*smoke_overrides, "eval.every_epochs=0"]  # the losses only: evaluation has its own generator
    cfg = load_config([SMOKE], quick)
    first = train.stage(cfg, log=lambda m: None)
    second = train.stage(cfg, log=lambda m: None)
    assert first != second
    assert history(first) == history(second)
    other = train.stage(load_config([SMOKE], quick + ["seed=1"]), log=lambda m: None)
    assert history(other) != history(first)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(home, smoke_overrides, monkeypatch):
    cfg = load_config([SMOKE], smoke_overrides)
    real_d_loss, calls = losses.d_loss, {"n": 0}

    def poisoned(d_real, d_fake):  # NaN from the 11th iteration on (epoch 2)
        calls["n"] += 1
        loss = real_d_loss(d_real, d_fake)
        return loss * float("nan") if calls["n"] > 10 else loss

    monkeypatch.setattr(losses, "d_loss", poisoned)
    with pytest.raises(loop.NonFiniteLoss, match=r"loss/d, .*became non-finite at step 12"):
        train.stage(cfg, log=lambda m: None)
    run = only_run()
    assert run.info.status == "FAILED" and run.data.tags["infogan.stop_reason"] == "non_finite"
    ckpt = runs.load_checkpoint(cfg, run.info.run_id)
    assert ckpt["step"] == 8  # the end of epoch 1, untouched
    assert all(torch.isfinite(v).all() for v in ckpt["g"].values() if v.is_floating_point())


LONG = ["train.epochs=3", "train.steps_per_epoch=12", "train.ema_decay=0.9"]


def final_g_average(home: Path, run_id: str) -> dict:
    """From the run's kept checkpoint (the logged one: a finished run keeps no working copy)."""
    assert not (home / "checkpoints" / run_id / checkpoint.CHECKPOINT_FILE).exists()
    return runs.load_checkpoint(load_config(), run_id)["g_ema"]


@pytest.fixture(scope="module")
def uninterrupted_long(tmp_path_factory, mnist_cache, store_template) -> tuple[list, dict]:
    """The uninterrupted run of the LONG config, in a store of its own: its loss history and its
    final moving average of G."""
    with own_store(tmp_path_factory.mktemp("reference"), store_template) as ref:
        run_id = train.stage(load_config([SMOKE], [f"data.cache_dir={mnist_cache}", *LONG]), log=lambda m: None)
        return history(run_id), final_g_average(ref, run_id)


@pytest.mark.parametrize("how", ["crash", "sigterm"])
def test_interrupted_run_resumes_without_duplicate_or_missing_steps(uninterrupted_long, home, smoke_overrides, capsys,
                                                                    how):
    from pipeline.cli import main

    args = ["train", "-c", SMOKE, *smoke_overrides, *LONG]
    env = subprocess_env(home)
    # Stopped mid-epoch 2 (its 8th logged point, step 16), after epoch 1's checkpoint: a crash
    # (SIGKILL, no handler runs) or SIGTERM (the loop checkpoints on its way out).
    env[faults.ENV], env[faults.SIGNAL_ENV] = "step_logged:8", "SIGKILL" if how == "crash" else "SIGTERM"
    proc = cli_process.run(args, env, cwd=home, merge=True)
    out = proc.stdout
    assert proc.returncode != 0, f"training finished before it could be interrupted:\n{out}"
    interrupted = only_run()
    assert interrupted.info.status == ("RUNNING" if how == "crash" else "KILLED"), out
    run_id = interrupted.info.run_id
    if how == "sigterm":
        assert f"infogan train --resume {run_id}" in out
        args = ["train", "--resume", run_id]
    capsys.readouterr()
    assert main(args) == 0  # the same command again, in this process (torch and MLflow are loaded here)
    said = capsys.readouterr().out
    where = "iteration 0, step 12" if how == "crash" else "iteration 4, step 16"  # epoch 1's or SIGTERM's checkpoint
    assert f"resuming at epoch 2, {where}" in said, said
    final = only_run()  # the same run continued; no second run
    assert final.info.run_id == run_id and final.info.status == "FINISHED"
    steps = [step for step, _ in history(run_id)]
    assert steps == list(range(2, 3 * 12 + 1, 2))
    losses, average = history(run_id), final_g_average(home, run_id)
    reference_losses, reference_average = uninterrupted_long
    assert losses == reference_losses
    assert average.keys() == reference_average.keys()
    for name, tensor in average.items():  # the average went on from where it stopped
        assert torch.equal(tensor, reference_average[name]), name


def test_pipeline_runs_stages_as_children_of_one_parent(home, smoke_overrides):
    ids = stages.main(load_config([SMOKE], smoke_overrides), log=lambda m: None)
    client = MlflowClient()
    parent = client.search_runs([client.get_experiment_by_name("smoke").experiment_id],
                                filter_string="tags.`infogan.stage` = 'pipeline'")[0]
    for stage in ("data", "train", "evaluate", "report"):
        child = client.get_run(ids[stage])
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert parent.data.tags[f"infogan.{stage}_run_id"] == ids[stage]
    data_run = client.get_run(ids["data"])
    assert data_run.data.tags["infogan.data_sha256"] and len(data_run.inputs.dataset_inputs) == 2
    assert "loss/d" in client.get_run(ids["train"]).data.metrics
    assert client.get_run(ids["evaluate"]).data.tags["infogan.evaluated_run_id"] == ids["train"]
    assert "eval/gen_accuracy" in client.get_run(ids["train"]).data.metrics
    assert "report/report.pdf" in {a.path for a in client.list_artifacts(ids["report"], "report")}
    # Names a person reads, and the MLflow UI's model-training view for the experiment.
    assert parent.info.run_name == "pipeline"
    names = {stage: client.get_run(ids[stage]).info.run_name for stage in ids}
    assert names == {"data": "data", "train": "train paper s0", "evaluate": "evaluate train paper s0",
                     "report": "report"}
    assert client.get_experiment_by_name("smoke").tags["mlflow.experimentKind"] == "custom_model_development"
    trained = client.get_run(ids["train"])
    assert [d.dataset.name for d in trained.inputs.dataset_inputs] == ["mnist-train"]
    assert any(key.startswith("system/cpu_utilization") for key in trained.data.metrics), trained.data.metrics.keys()


def test_system_metrics_sample_every_10_s_unless_the_environment_says_otherwise(monkeypatch, home):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "3")
    tracking.configure()
    assert os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] == "3"
    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")
    tracking.configure()
    assert float(os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"]) == tracking.SYSTEM_METRICS_INTERVAL == 10


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["train", "main"])
def test_mlflow_run_entry_points(home, smoke_overrides, entry):
    # `make run EXPERIMENT=NAME`: the experiment named on the command line, not the config's.
    env = subprocess_env(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "run", str(REPO), "-e", entry, "--env-manager", "local",
         "--experiment-name", "launched", "-P", "config=configs/smoke.yaml", "-P", f"overrides={' '.join(smoke_overrides)}"],
        env=env, cwd=home, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tracking.configure()
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("launched").experiment_id])
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(top) == 1 and top[0].info.status == "FINISHED"
    assert top[0].data.params["config"] == "configs/smoke.yaml"  # MLproject's own parameters...
    trained = [r for r in runs if "loss/d" in r.data.metrics]
    assert len(trained) == 1 and "train.lr_g" in trained[0].data.params  # ...beside the config's
    if entry == "main":
        assert len(runs) == 5 and trained[0].data.tags["mlflow.parentRunId"] == top[0].info.run_id
        (reported,) = [r for r in runs if r.data.tags.get("infogan.stage") == "report"]
        assert reported.data.tags["infogan.report_runs"] == trained[0].info.run_id
        assert (home / "reports" / "launched" / "report.pdf").is_file()
        evaluated = [r for r in runs if r.data.tags.get("infogan.stage") == "evaluate"]
        assert [r.data.tags["infogan.evaluated_run_id"] for r in evaluated] == [trained[0].info.run_id]


def test_resume_with_more_epochs_says_where_the_learning_rates_go_on(home, smoke_overrides):
    cfg = load_config([SMOKE], smoke_overrides)  # 2 epochs of 8 steps; the decay spans the last 8
    run_id = train.stage(cfg, log=lambda m: None)
    said: list[str] = []
    train.stage(cfg, resume=run_id, epochs=4, log=said.append)
    assert any("train.epochs is now 4 (was 2)" in m and "at 1x their base values instead of 0x" in m
               for m in said), said
    ckpt = runs.load_checkpoint(cfg, run_id)
    assert ckpt["step"] == 32
