"""Device, threads and precision: what `train.precision=auto` picks, and a bf16 smoke run."""
from __future__ import annotations

import math

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
