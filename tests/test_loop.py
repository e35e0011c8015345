"""The training loop on toy networks (one linear layer each) and ten random images, with a tracker
that only records: what it logs and when, its checkpoints, and resuming step for step."""
import time

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import checkpoint, hardware, loop, names
from pipeline.config import load_config
from pipeline.tracking import NullTracker

STEPS_PER_EPOCH = 5  # ten images, batches of two


class ToyG(nn.Module):
    noise_dim, code_dim, continuous_codes = 4, 10, 0

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(self.noise_dim + self.code_dim, 28 * 28)

    def forward(self, z, c, u=None):
        return torch.sigmoid(self.net(torch.cat([z, c], dim=1))).view(-1, 1, 28, 28)


class ToyD(nn.Module):
    batch_norm = False

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.LeakyReLU(0.1))
        self.head = nn.Linear(16, 1)
        self.q = nn.Linear(16, 10)

    def read_codes(self, h):
        out = self.q(h)
        return out[:, :10], out[:, 10:]


class Recorder(NullTracker):
    """Keeps what the loop logs; raises KeyboardInterrupt once it is asked to log step ``stop_at``."""

    def __init__(self, stop_at=None):
        self.metrics, self.images, self.stop_at = [], [], stop_at

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))
        if step == self.stop_at:
            raise KeyboardInterrupt

    def log_image(self, image, key, step):
        self.images.append((key, step, image.shape))


def toy_config(epochs: int = 2, log_every: int = 2, extra: tuple[str, ...] = ()):
    return load_config([], [f"train.epochs={epochs}", "train.batch_size=2", f"train.log_every={log_every}",
                            "model.noise_dim=4", "eval.every_epochs=0", "train.threads=1", *extra])


def toy_arrays():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    labels = np.arange(10, dtype=np.int64)
    return {"train_images": images, "train_labels": labels, "test_images": images, "test_labels": labels}


def toy_fit(tmp_path, tracker, resume=None, **overrides):
    return loop.fit(toy_config(**overrides), tracker, tmp_path / "last.pt", resume=resume, log=lambda m: None,
                    arrays=toy_arrays(), nets=(ToyG(), ToyD()))


def test_fit_logs_the_step_metrics_every_log_every_steps_and_the_epoch_end(tmp_path):
    tracker = Recorder()
    result = toy_fit(tmp_path, tracker)
    assert result.step == 2 * STEPS_PER_EPOCH
    step_points = [step for step, m in tracker.metrics if names.LOSS_D in m]
    assert step_points == [2, 4, 6, 8, 10]
    logged = {*names.STEP_METRICS, names.LOSS_INFO_REAL, names.PERF_IMG_PER_S, names.PERF_THREADS}
    assert set(tracker.metrics[0][1]) == logged
    epoch_ends = [(step, m[names.PERF_EPOCH]) for step, m in tracker.metrics if names.PERF_EPOCH in m]
    assert epoch_ends == [(5, 1.0), (10, 2.0)]
    assert [(key, step) for key, step, _ in tracker.images] == [(names.SAMPLES, 5), (names.SAMPLES, 10)]
    assert tracker.images[0][2] == (10 * 30 + 2, 10 * 30 + 2, 3)  # ten codes x ten styles, 2-px padding
    assert set(result.metrics) == logged
    assert result.g is not None and result.noise.shape == (10, 4)


@pytest.mark.parametrize("log_every, points", [(3, [3, 6, 9, 10]), (25, [10])])
def test_the_run_s_last_step_is_logged_even_off_the_log_every_beat(tmp_path, log_every, points):
    # A run shorter than log_every logged no loss at all, and its pipeline stopped at the report.
    tracker = Recorder()
    toy_fit(tmp_path, tracker, log_every=log_every)
    assert [step for step, m in tracker.metrics if names.LOSS_D in m] == points
    # Each point, the last one too, carries the throughput of the steps it averages.
    assert all(m[names.PERF_IMG_PER_S] > 0 for _, m in tracker.metrics if names.LOSS_D in m)


def test_every_epoch_end_writes_a_checkpoint_of_the_whole_state(tmp_path):
    toy_fit(tmp_path, Recorder())
    state = checkpoint.load(tmp_path / "last.pt")
    assert (state["step"], state["epoch"], state["iter"], state["perm"]) == (10, 2, 0, None)
    assert state["g_ema"] is not None and set(state["opt"]) == {"d", "q", "g"}
    assert "epochs: 2" in state["config"]


def test_an_interrupted_fit_saves_where_it_stopped_and_resumes_step_for_step(tmp_path):
    whole = toy_fit(tmp_path / "whole", Recorder())
    with pytest.raises(KeyboardInterrupt):
        toy_fit(tmp_path / "cut", Recorder(stop_at=6))  # mid-epoch 2
    saved = checkpoint.load(tmp_path / "cut" / "last.pt")
    assert (saved["step"], saved["epoch"], saved["iter"]) == (6, 1, 1)
    resumed_tracker = Recorder()
    resumed = toy_fit(tmp_path / "cut", resumed_tracker, resume=saved)
    assert resumed.step == whole.step
    for a, b in zip(whole.g.state_dict().values(), resumed.g.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [step for step, m in resumed_tracker.metrics if names.LOSS_D in m] == [8, 10]


def test_a_non_finite_loss_stops_the_loop_and_keeps_the_last_checkpoint(tmp_path):
    class Poisoned(Recorder):
        def log_metrics(self, metrics, step):
            super().log_metrics(metrics, step)
            if step == STEPS_PER_EPOCH + 1:  # after epoch 1's checkpoint: poison G
                with torch.no_grad():
                    next(iter(self.g.parameters())).fill_(float("nan"))

    nets = (ToyG(), ToyD())
    tracker = Poisoned()
    tracker.g = nets[0]
    with pytest.raises(loop.NonFiniteLoss, match="non-finite at step 7"):
        loop.fit(toy_config(log_every=1), tracker, tmp_path / "last.pt", log=lambda m: None,
                 arrays=toy_arrays(), nets=nets)
    assert checkpoint.load(tmp_path / "last.pt")["step"] == STEPS_PER_EPOCH


def test_mode_seeking_starts_after_its_epochs_on_pairs_that_share_a_code(tmp_path, monkeypatch):
    seen = []

    def recording_step(nets, opt, batch, settings):
        """The step, recording the codes G draws from and the step's mode-seeking weight."""
        codes, forward = [], nets.g.forward
        nets.g.forward = lambda z, c, u=None: (codes.append(c.argmax(1).tolist()), forward(z, c, u))[1]
        try:
            return real_step(nets, opt, batch, settings)
        finally:
            del nets.g.forward
            seen.append((codes[0], settings.seeking))

    real_step = loop.step.train_step
    monkeypatch.setattr(loop.step, "train_step", recording_step)
    cfg = toy_config(epochs=1, extra=("train.mode_seeking=3", "train.mode_seeking_after_epochs=0.4"))  # from step 2 of 5
    tracker = Recorder()
    loop.fit(cfg, tracker, tmp_path / "last.pt", log=lambda m: None, arrays=toy_arrays(), nets=(ToyG(), ToyD()))
    assert [seeking for _, seeking in seen] == [0.0, 0.0, 3.0, 3.0, 3.0]
    assert all(c[0] == c[1] for c, seeking in seen if seeking)
    curve = [(step, m[names.MODE_SEEKING]) for step, m in tracker.metrics if names.MODE_SEEKING in m]
    assert [step for step, _ in curve] == [2, 4, 5] and curve[0][1] == 0.0 and curve[1][1] > 0  # steps 0-1, 2-3, 4


def test_a_cpu_run_on_auto_threads_gives_up_a_core_to_another_busy_process_and_logs_it(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(hardware.ThreadShare, "INTERVAL_S", 0.0)
    # Every reading finds the rest of the machine 10 cores busier than this process.
    monkeypatch.setattr(hardware, "busy_cpu_seconds", lambda: time.process_time() + 10.0 * time.monotonic())
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 2)
    said: list[str] = []
    tracker = Recorder()
    try:
        loop.fit(toy_config(extra=("train.threads=0",)), tracker, tmp_path / "last.pt", log=said.append,
                 arrays=toy_arrays(), nets=(ToyG(), ToyD()))
        threads = [m[names.PERF_THREADS] for _, m in tracker.metrics if names.PERF_THREADS in m]
        assert threads[-1] == 1.0 and torch.get_num_threads() == 1
        assert any("cores busy: training goes on with 1 thread(s)" in line for line in said), said
    finally:
        torch.set_num_threads(before)


def test_a_run_with_a_set_thread_count_keeps_it_whatever_else_runs(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(hardware.ThreadShare, "INTERVAL_S", 0.0)
    monkeypatch.setattr(hardware, "busy_cpu_seconds", lambda: time.process_time() + 10.0 * time.monotonic())
    tracker = Recorder()
    try:
        loop.fit(toy_config(extra=("train.threads=2",)), tracker, tmp_path / "last.pt", log=lambda m: None,
                 arrays=toy_arrays(), nets=(ToyG(), ToyD()))
        assert {m[names.PERF_THREADS] for _, m in tracker.metrics if names.PERF_THREADS in m} == {2.0}
    finally:
        torch.set_num_threads(before)
