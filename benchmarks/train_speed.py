"""Training throughput (images/s) per architecture: the project's step against a textbook loop,
what each optimisation gives, and what MLflow tracking costs. Variants are interleaved round by
round (the machine is shared; neighbours move absolute numbers) and medians are printed.

    .venv/bin/python benchmarks/train_speed.py [--rounds 3] [--iters 40] [--batch-size 128]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import latents, losses, models  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.train import averaged, make_optimisers, q_view, train_step  # noqa: E402


def textbook_step(g, d, opt_d, opt_gq, x, z, c, code_weight):
    """How public InfoGAN code trains: separate D passes for real and fake, then a fresh D pass
    for the G step with D's weight gradients computed (and thrown away); Q trained with G."""
    fake = g(z, latents.one_hot(c, g.code_dim))
    opt_d.zero_grad()
    d_real, _ = d(x)
    d_fake, _ = d(fake.detach())
    losses.d_loss(d_real, d_fake).backward()
    opt_d.step()
    opt_gq.zero_grad()
    d_fake, q_logits = d(fake)
    (losses.g_loss(d_fake, "non_saturating") + code_weight * losses.info_loss(q_logits, c)).backward()
    opt_gq.step()


def make_variant(name: str, arch: str, bsz: int):
    cfg = load_config([], [f"model.arch={arch}", f"train.batch_size={bsz}"])
    torch.manual_seed(0)
    literal = name in ("textbook", "step+literal")
    g, d = models.build(cfg.model, literal=literal)
    rng = torch.Generator().manual_seed(0)
    x = torch.rand(bsz, 1, 28, 28)
    if name == "textbook":
        betas = (0.5, 0.999)
        opt_d = torch.optim.Adam([*d.trunk.parameters(), *d.head.parameters()], lr=2e-4, betas=betas)
        opt_gq = torch.optim.Adam([*g.parameters(), *d.q.parameters()], lr=1e-3, betas=betas)

        def step():
            z, c = latents.sample(bsz, 54, 10, rng, torch.device("cpu"))
            textbook_step(g, d, opt_d, opt_gq, x, z, c, 1.0)
        return step
    if name == "step+channels_last":
        g.to(memory_format=torch.channels_last)
        d.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = make_optimisers(g, d, cfg.train)

    info_view = q_view(rng) if name.startswith("step+info_augment") else None
    g_ema = averaged(g, 0.999) if name.endswith("+ema") else None

    def step():
        z, c = latents.sample(bsz, 54, 10, rng, torch.device("cpu"))
        train_step(g, d, opt, x, z, c, 1.0, "non_saturating", True, joint_batch=arch == "tconv",
                   info_view=info_view)
        if g_ema is not None:
            g_ema.update_parameters(g)
    return step


def time_steps(step, iters: int) -> float:
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return time.perf_counter() - start


def time_fit(arch: str, bsz: int, iters: int, tracked: bool, arrays) -> float:
    """Wall time of the real loop (sampling real batches, logging every 25 steps, one epoch-end
    grid + checkpoint) with MLflow tracking or with the do-nothing tracker."""
    from pipeline import tracking
    from pipeline.train import fit

    with tempfile.TemporaryDirectory() as home:
        os.environ["INFOGAN_HOME"] = home
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home}/mlflow.db"
        cfg = load_config([], [f"model.arch={arch}", f"train.batch_size={bsz}", "train.epochs=1",
                               f"train.steps_per_epoch={iters}", "tracking.experiment=bench",
                               "eval.every_epochs=0"])
        quiet = lambda m: None  # noqa: E731
        if tracked:
            with tracking.start_run("bench") as run:
                tracker = tracking.MlflowTracker(run.info.run_id)
                start = time.perf_counter()
                fit(cfg, tracker, Path(home) / "ck.pt", arrays=arrays, log=quiet)
                tracker.flush()
                return time.perf_counter() - start
        start = time.perf_counter()
        fit(cfg, tracking.NullTracker(), Path(home) / "ck.pt", arrays=arrays, log=quiet)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=40, help="timed iterations per variant and round")
    parser.add_argument("--loop-iters", type=int, default=None,
                        help="iterations of the full loop per round (default: one epoch, so its "
                             "end-of-epoch grid and checkpoint weigh as much as in a real run)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--archs", default="paper,tconv,upsample_sn")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bsz = args.batch_size
    args.loop_iters = args.loop_iters or 60000 // bsz

    from pipeline.data import prepare

    arrays, _ = prepare(load_config([], ["data.download=false"]).data, log=lambda m: None)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {bsz}, {args.iters} iterations x "
          f"{args.rounds} rounds, medians; device cpu")
    for arch in args.archs.split(","):
        # The paper's network has no 1x1-map convolutions, so it has no literal form to compare.
        names = ["textbook", *(["step+literal"] if arch != "paper" else []), "step", "step+channels_last",
                 "step+info_augment", "step+info_augment+ema"]
        steps = {name: make_variant(name, arch, bsz) for name in names}
        rates: dict[str, list[float]] = {name: [] for name in [*names, "loop untracked", "loop + MLflow"]}
        for _ in range(args.rounds):
            for name in names:
                rates[name].append(args.iters * bsz / time_steps(steps[name], args.iters))
            for name, tracked in (("loop untracked", False), ("loop + MLflow", True)):
                seconds = time_fit(arch, bsz, args.loop_iters, tracked, arrays)
                rates[name].append(args.loop_iters * bsz / seconds)
        med = {k: statistics.median(v) for k, v in rates.items()}
        base = med["textbook"]
        print(f"\n{arch}")
        print(f"| variant | img/s (median) | min..max | vs textbook |")
        print(f"|---|---:|---:|---:|")
        for name, values in rates.items():
            print(f"| {name} | {med[name]:.0f} | {min(values):.0f}..{max(values):.0f} | {med[name] / base:.2f}x |")
        overhead = med["loop untracked"] / med["loop + MLflow"] - 1
        print(f"tracking overhead (loop untracked / loop + MLflow - 1): {overhead * 100:+.1f}% "
              f"(the loop includes one epoch-end grid and checkpoint in both)")


if __name__ == "__main__":
    main()
