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
