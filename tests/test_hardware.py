"""Device, threads and precision: what `train.precision=auto` picks, and a bf16 smoke run."""
from __future__ import annotations

import math

import numpy as np

import pytest
import torch
from mlflow import MlflowClient

from conftest import SMOKE
from pipeline import hardware, runs, train
from pipeline.config import ConfigError, load_config

CPU = torch.device("cpu")


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(False, False, "fp32"), (True, False, "bf16"),
                                                        (False, True, "bf16"), (True, True, "bf16")])
def test_auto_picks_bf16_only_on_a_cpu_that_runs_it_in_hardware(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert hardware.resolve_precision("auto", CPU) == expected
    assert hardware.resolve_precision("fp32", CPU) == "fp32"  # asked for, not detected
    assert hardware.resolve_precision("bf16", CPU) == "bf16"


def test_without_torchs_checks_the_cpu_flags_decide(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert hardware.resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert hardware.resolve_precision("auto", CPU) == "bf16"


def test_precision_must_be_one_of_the_known_values():
    with pytest.raises(ConfigError, match="train.precision.*expected one of: auto, fp32, bf16"):
        load_config([], ["train.precision=fp16"])


def test_bf16_smoke_run_logs_finite_losses_and_says_which_precision_it_used(home, smoke_overrides):
    said: list[str] = []
    short = ["train.epochs=1", "train.steps_per_epoch=4", "train.log_every=1"]  # bf16 is emulated on most CPUs: slow
    run_id = train.stage(load_config([SMOKE], smoke_overrides + short + ["train.precision=bf16"]), log=said.append)
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["precision_used"] == "bf16" and run.data.tags["infogan.precision"] == "bf16"
    assert any(line.startswith("training on cpu in bf16") for line in said), said
    history = MlflowClient().get_metric_history(run_id, "loss/d") + MlflowClient().get_metric_history(run_id, "loss/g")
    assert len(history) == 8 and all(math.isfinite(m.value) for m in history)
    ckpt = runs.load_checkpoint(load_config([SMOKE], smoke_overrides), run_id)
    assert all(t.dtype == torch.float32 for t in ckpt["g"].values() if t.is_floating_point())  # fp32 master weights


class FakeMachine:
    """The readings a ThreadShare takes: wall time, every process's CPU seconds, this one's."""

    def __init__(self):
        self.wall = self.busy = self.own = 0.0
        self.applied: list[int] = []

    def run(self, seconds: float, own_cores: float, other_cores: float) -> None:
        self.wall += seconds
        self.own += seconds * own_cores
        self.busy += seconds * (own_cores + other_cores)

    def share(self, cores: int = 2) -> hardware.ThreadShare:
        return hardware.ThreadShare(cores, interval_s=2.0, busy=lambda: self.busy, own=lambda: self.own,
                                    clock=lambda: self.wall, apply=self.applied.append)


def test_a_run_gives_up_the_cores_another_busy_process_takes_and_takes_them_back_when_it_ends():
    m = FakeMachine()
    share = m.share()
    m.run(2.0, own_cores=2.0, other_cores=0.1)  # alone but for a quiet neighbour
    assert share.tick() is None and share.threads == 2
    m.run(2.0, own_cores=1.0, other_cores=1.0)  # a second run arrives
    assert share.tick() == 1 and m.applied == [1]
    assert share.busy_elsewhere == pytest.approx(1.0)
    m.run(2.0, own_cores=1.0, other_cores=1.0)  # it stays: so does the share
    assert share.tick() is None and share.threads == 1
    m.run(2.0, own_cores=1.0, other_cores=0.0)  # it ended
    assert share.tick() == 2 and m.applied == [1, 2]


def test_the_share_reads_only_once_per_interval_and_does_not_flap_on_half_a_core():
    m = FakeMachine()
    share = m.share()
    m.run(1.0, own_cores=0.0, other_cores=2.0)
    assert share.tick() is None  # 1 s: too soon to read
    m.run(1.0, own_cores=0.0, other_cores=2.0)
    assert share.tick() == 1  # every core busy elsewhere: still one thread, never none
    for other in (0.5, 0.7, 0.45):  # a neighbour near half a core moves nothing either way
        m.run(2.0, own_cores=1.0, other_cores=other)
        assert share.tick() is None and share.threads == 1
    share = m.share()
    m.run(2.0, own_cores=1.6, other_cores=0.5)
    assert share.tick() is None and share.threads == 2
    assert m.applied == [1]


def test_the_share_does_nothing_where_the_machine_cannot_be_read():
    applied: list[int] = []
    share = hardware.ThreadShare(2, busy=lambda: None, apply=applied.append)
    assert share.tick() is None and share.threads == 2 and applied == []


def test_the_busy_time_reader_reads_this_linux_machine():
    first = hardware.busy_cpu_seconds()
    assert first is not None and first > 0
    sum(i * i for i in range(2_000_000))  # a little work of this process's own
    assert hardware.busy_cpu_seconds() > first


class Precisions:
    """What precision G's and D's layers compute in (a forward hook on every convolution and
    linear layer, in training steps and in the evaluation after the epoch), and whether autocast
    was on when the loop evaluated."""

    def __init__(self, g, d):
        self.train: set = set()
        self.evaluation: set = set()
        self.evaluating = False
        self.hooks = [self.watch(net) for net in (g, d)]

    def watch(self, net) -> list:
        return [module.register_forward_hook(self.hook) for module in net.modules()
                if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]

    def hook(self, module, inputs, output):
        (self.evaluation if self.evaluating else self.train).add(output.dtype)

    def evaluator(self, g, d):
        from pipeline import measure, metrics, names

        self.evaluating = True
        hooks = self.watch(g) + self.watch(d)  # g is the one shown: G's average, a copy of G
        try:
            with torch.no_grad():
                d(g(torch.randn(4, g.noise_dim), torch.eye(g.code_dim)[:4]))  # as measure.measure reads them
        finally:
            self.evaluating = False
            for hook in hooks:
                hook.remove()
        counts = np.eye(10, dtype=int) * 5
        return measure.Measurement(metrics.CodeMapping(np.arange(10), counts), 1.0, 1.0, np.full(3, 10), None)


def small_fit(tmp_path, precision: str, resume=None, epochs: int = 1):
    from pipeline import loop, models
    from pipeline.tracking import NullTracker

    cfg = load_config([], [f"train.precision={precision}", f"train.epochs={epochs}", "train.batch_size=8",
                           "train.steps_per_epoch=2", "train.log_every=1", "train.threads=1"])
    g, d = models.build(cfg.model)
    seen = Precisions(g, d)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 28, 28), dtype=np.uint8)
    arrays = {"train_images": images, "train_labels": np.arange(16) % 10, "test_images": images,
              "test_labels": np.arange(16) % 10}
    result = loop.fit(cfg, NullTracker(), tmp_path / "last.pt", resume=resume, log=lambda m: None,
                      arrays=arrays, evaluation=loop.Evaluation(seen.evaluator), nets=(g, d))
    return seen, result


def test_bf16_runs_the_step_and_the_evaluation_in_bf16_and_its_checkpoint_resumes_in_fp32(tmp_path):
    from pipeline import checkpoint

    seen, result = small_fit(tmp_path, "bf16")
    assert seen.train == {torch.bfloat16} and seen.evaluation == {torch.bfloat16}
    state = checkpoint.load(tmp_path / "last.pt")
    assert all(t.dtype == torch.float32 for t in state["g"].values() if t.is_floating_point())

    resumed, result = small_fit(tmp_path, "fp32", resume=state, epochs=2)
    assert resumed.train == {torch.float32} and resumed.evaluation == {torch.float32}
    assert result.step == 4 and all(math.isfinite(v) for k, v in result.metrics.items() if k.startswith("loss/"))


def test_fp32_runs_the_step_and_the_evaluation_in_fp32(tmp_path):
    seen, _ = small_fit(tmp_path, "fp32")
    assert seen.train == {torch.float32} and seen.evaluation == {torch.float32}


@pytest.mark.parametrize("cuda, mps, expected", [(False, False, "cpu"), (False, True, "mps"), (True, True, "cuda")])
def test_auto_picks_a_cuda_gpu_then_apples_gpu_then_the_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert hardware.pick_device("auto") == torch.device(expected)
    assert hardware.pick_device("cpu") == CPU
    if mps:
        assert hardware.resolve_precision("auto", torch.device("mps")) == "fp32"
    else:
        with pytest.raises(ConfigError, match="train.device is 'mps' but PyTorch finds no Apple GPU"):
            hardware.pick_device("mps")


def test_a_run_logs_the_device_it_trained_on(tmp_path, monkeypatch):
    from pipeline import names
    from pipeline.tracking import NullTracker

    class Tags(NullTracker):
        def __init__(self):
            self.tags, self.params = {}, {}

        def set_tags(self, tags):
            self.tags.update(tags)

        def log_params(self, params):
            self.params.update(params)

    from pipeline import loop, models

    cfg = load_config([], ["train.epochs=1", "train.batch_size=8", "train.steps_per_epoch=1", "train.threads=1",
                           "eval.every_epochs=0", "train.precision=fp32"])
    tracker = Tags()
    images = np.zeros((8, 28, 28), dtype=np.uint8)
    arrays = {"train_images": images, "train_labels": np.zeros(8), "test_images": images, "test_labels": np.zeros(8)}
    loop.fit(cfg, tracker, tmp_path / "last.pt", log=lambda m: None, arrays=arrays, nets=models.build(cfg.model))
    assert tracker.tags[names.DEVICE] == "cpu" and tracker.params["device_used"] == "cpu"


@pytest.mark.parametrize("user_value, expected", [(None, 1), ("2", 2)])
def test_numpy_and_scipy_get_one_blas_thread_unless_the_user_says_otherwise(user_value, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if user_value:
        env["OPENBLAS_NUM_THREADS"] = user_value
    probe = ("import pipeline, numpy, scipy.linalg, threadpoolctl; "
             "print(sorted({p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas'}))")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([expected])  # NumPy's OpenBLAS and SciPy's own copy
