"""benchmarks/train_speed.py's worker: it builds and times the steps it compares, as the package
trains them today, and counts the work each does."""
import importlib.util
import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def train_speed():
    spec = importlib.util.spec_from_file_location("train_speed", ROOT / "benchmarks" / "train_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_speed_benchmark_times_each_step_and_counts_the_work_of_q_s_views(monkeypatch):
    # The textbook variant clears OpenMP's settings from the environment, as a plain script has it.
    monkeypatch.setattr(os, "environ", dict(os.environ))
    threads = torch.get_num_threads()
    try:
        benchmark = train_speed()
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
