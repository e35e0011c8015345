"""The benchmark scripts run as a user runs them: train_speed.py's worker builds and times the
steps it compares, as the package trains them today, and counts the work each does; the probes
of the package's step train a few steps on the smoke config and print what they measure."""
import importlib.util
import os

import torch

import cli_process
from conftest import REPO, SMOKE, subprocess_env


def script(name: str):
    """benchmarks/NAME.py as a module, its ``main`` not run."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_speed_benchmark_times_each_step_and_counts_the_work_of_q_s_views(monkeypatch):
    # The textbook variant clears OpenMP's settings from the environment, as a plain script has it.
    monkeypatch.setattr(os, "environ", dict(os.environ))
    threads = torch.get_num_threads()
    try:
        benchmark = script("train_speed")
        results = {v: benchmark.worker("paper", v, 0.05, 8) for v in ("textbook", "default", "no_real_q", "own_views")}
    finally:
        torch.set_num_threads(threads)  # the default variant may give up threads to a busy neighbour
    assert all(r["img_per_s"] > 0 for r in results.values())
    flops = {v: r["flop_per_img"] for v, r in results.items()}
    # Q's own passes over rotated fakes and changed real digits cost more than reading them from
    # D's passes; there, the term on real digits costs one forward pass over the plain reals.
    assert flops["no_real_q"] < flops["default"] < flops["own_views"]
    # The default step does about the textbook loop's work (its G step computes no D weight
    # gradients; the plain reals' pass is forward only).
    assert 0.9 < flops["default"] / flops["textbook"] < 1.1


def test_the_speed_benchmark_compares_the_default_batch_with_the_textbook_loop_at_the_paper_s():
    from pipeline.config import load_config

    batch_for = script("train_speed").batch_for
    assert [batch_for(v, 0, "paper") for v in ("textbook", "b128", "default", "bf16")] == [
        128, 128, *[load_config([]).train.batch_size] * 2]
    # The lab's networks step at their own configs' batch, not the default config's.
    lab = load_config([str(REPO / "configs" / "experiments" / "tconv_ns.yaml")]).train.batch_size
    assert lab != load_config([]).train.batch_size and batch_for("default", 0, "tconv") == lab
    assert {batch_for(v, 64, a) for v in ("textbook", "default") for a in ("paper", "tconv")} == {64}


def run_script(home, name: str, *args: str) -> str:
    done = cli_process.run([str(REPO / "benchmarks" / name), *args], subprocess_env(home), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_step_probe_trains_the_package_step_and_prints_what_the_loop_measures(home, smoke_overrides):
    import json
    import math

    # The smoke config's 2,048 images at batch 16: 128 steps an epoch, so 0.05 epoch is 6 steps.
    out = run_script(home, "step_probe.py", "-c", SMOKE, *smoke_overrides,
                     "--epochs", "0.05", "--eval-every", "3", "--out", str(home / "probes"))
    header, *rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert header["precision"] in ("fp32", "bf16") and [r["epoch"] for r in rows] == [0.02, 0.05]
    for row in rows:
        assert 0 <= row["gen"] <= 1 and 0 <= row["demo_min"] <= 10
        assert all(math.isfinite(row[k]) for k in ("loss/d", "loss/g", "loss/info", "loss/info_real"))
    assert sorted(p.name for p in (home / "probes").glob("*.png")) == ["probe_3.png", "probe_6.png"]


def test_d_units_prints_each_trunk_layer_for_real_and_fake_images_before_and_after_training(home, smoke_overrides):
    out = run_script(home, "d_units.py", "-c", SMOKE, *smoke_overrides,
                     "--steps", "3")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| 0 ") or line.startswith("| 3 ")]
    layers = {(step.strip(), images.strip()) for step, images, *_ in rows}
    assert layers == {("0", "real"), ("0", "fake"), ("3", "real"), ("3", "fake")}
    assert all(0 <= float(share) <= 1 for *_, share in rows)


def test_time_to_quality_trains_each_seed_and_tabulates_what_mlflow_holds(home, smoke_overrides, monkeypatch, capsys):
    import sys

    ttq = script("time_to_quality")
    monkeypatch.setattr(sys, "argv", ["time_to_quality.py", "--seeds", "3", "-c", SMOKE,
                                      *smoke_overrides])
    ttq.main()
    out = capsys.readouterr().out
    # One row per epoch's evaluation of the smoke run (8 steps an epoch), read back from MLflow.
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    per_epoch, (summary,) = rows[:-1], rows[-1:]
    assert [(r[1].strip(), r[2].strip()) for r in per_epoch] == [("1", "8"), ("2", "16")]
    assert all(0 <= float(r[3]) <= 1 and 0 <= float(r[4]) <= 1 for r in per_epoch)
    assert summary[0].strip() == "3" and summary[2].strip() == per_epoch[-1][3].strip()
    monkeypatch.setattr(sys, "argv", ["time_to_quality.py", "--runs", out.split("(run ")[1].split(")")[0]])
    ttq.main()  # the same table for the finished run, training nothing
    assert capsys.readouterr().out.split("\nseed ")[1] == out.split("\nseed ")[1]
