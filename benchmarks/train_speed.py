"""Training throughput (images/s) of the step, variant by variant, alone and beside a second
busy process. Every figure comes from a fresh worker process (so each runs with its own
environment, e.g. OpenMP's wait policy), variants are interleaved round by round, and medians
are printed (the machine is shared; neighbours move absolute numbers).

    .venv/bin/python benchmarks/train_speed.py [--archs paper,tconv] [--rounds 3] [--seconds 20]
        [--variants textbook,default,bf16,channels_last,compile] [--beside]

``paper`` steps as the default config trains it (D judges changed copies of the digits and Q
reads them from D's passes, ``train.d_augment``), ``tconv`` and ``upsample_sn`` as the lab's configs
do (configs/experiments/tconv_ns.yaml: both views of D's batch norm; upsample_sn_ns.yaml: mode
seeking). Variants: ``textbook`` (a fresh D forward in the G step with D's weight gradients, fp32, as
public InfoGAN code trains, with OpenMP as the environment leaves it, not as ``pipeline`` sets
it); ``default`` (the project's step as ``infogan train`` runs it: D's changed copies and Q's term
on real digits where the config has them (``paper``), G's average, fused Adam, ``train.precision=auto``, and the share of the cores that
``train.threads=0`` gives a CPU run: it gives up threads to another busy process);
``fp32``/``bf16`` (the default step at that precision, on one thread per core whatever else
runs); ``channels_last``; ``compile`` (``torch.compile`` of G, D's trunk, D's head and Q; its
compile time is printed apart, to weigh against a whole run); ``compile_cl`` (both);
``foreach_adam`` (PyTorch's default Adam kernels in
place of the fused one); ``b128`` (the default step at the textbook loop's batch); ``no_real_q`` (the step at ``auto`` precision on one
thread per core, as ``bf16`` is, without Q's term on real digits, ``train.real_consistency=0``:
beside ``bf16`` it shows what that term costs); ``own_views`` (as ``bf16``, with
``train.d_augment=false``: D judges plain digits and Q reads its rotated fakes and changed real
digits in two passes of its own, the project's step before ``d_augment``);
``1thread``; ``omp_spin``/``omp_passive``/``omp_default``/``omp_short_spin`` (OpenMP's threads
spin while they wait, sleep at once, do as libgomp does unless told: spin a while, then sleep,
or spin only briefly: GOMP_SPINCOUNT=10000). ``--beside``
runs each variant a second time beside an identical second process and reports what the slower
of the two keeps of the alone figure.

Beside the speed, each row gives the step's work: the FLOPs per image of its matrix products and
convolutions (PyTorch's FlopCounterMode, forward and backward), that work against the textbook
loop's, and the FLOP rate it reached; the first line gives a dense matrix product's rate in fp32
and bf16 on the same threads. A variant's multiple of the textbook loop's speed is its FLOP rate
over the textbook's divided by its work over the textbook's.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_BATCH = 128  # the InfoGAN paper's batch, at which the textbook loop trains
VARIANTS = ("textbook", "default", "fp32", "bf16", "channels_last", "compile", "compile_cl", "foreach_adam", "b128",
            "no_real_q", "own_views", "1thread", "omp_spin", "omp_passive", "omp_default", "omp_short_spin")
# OpenMP's wait policy for the omp_* variants, set before torch starts its threads: spin while
# waiting (ACTIVE), sleep at once (PASSIVE), or libgomp's own default (spin a while, then sleep).
OMP_WAIT = {"omp_spin": "ACTIVE", "omp_passive": "PASSIVE", "omp_default": None, "omp_short_spin": None}


# tconv and upsample_sn as the lab's runs train them (configs/experiments/); paper as the default does.
LAB_CONFIGS = {"tconv": "tconv_ns.yaml", "upsample_sn": "upsample_sn_ns.yaml"}


def config_files(arch: str) -> list[str]:
    return [str(ROOT / "configs" / "experiments" / LAB_CONFIGS[arch])] if arch in LAB_CONFIGS else []


def batch_for(variant: str, batch_size: int, arch: str) -> int:
    """``batch_size``, or where it is 0 the textbook loop's (the paper's) for ``textbook`` and
    ``b128`` and the ``train.batch_size`` of the config ``arch`` trains with for the others."""
    from pipeline.config import load_config

    if batch_size:
        return batch_size
    return PAPER_BATCH if variant in ("textbook", "b128") else load_config(config_files(arch)).train.batch_size


def worker(arch: str, variant: str, seconds: float, batch_size: int) -> dict:
    """Runs in its own process: builds the variant's step, warms it up, then steps for
    ``seconds`` and returns images/s (and the warm-up time, which holds compilation); the batch
    is ``batch_for(variant, batch_size, arch)``."""
    sys.path.insert(0, str(ROOT))
    users_policy = os.environ.get("OMP_WAIT_POLICY")
    import pipeline  # noqa: F401  (its set-up of the torch runtime comes first, as in `infogan`)

    if variant == "textbook":  # a plain script: OpenMP as the user's environment leaves it
        os.environ.pop("OMP_WAIT_POLICY", None)
        if users_policy:
            os.environ["OMP_WAIT_POLICY"] = users_policy
    if variant in OMP_WAIT:
        os.environ.pop("OMP_WAIT_POLICY", None)
        os.environ.pop("GOMP_SPINCOUNT", None)
        if OMP_WAIT[variant]:
            os.environ["OMP_WAIT_POLICY"] = OMP_WAIT[variant]
        if variant == "omp_short_spin":  # spin about 10 µs, then sleep
            os.environ["GOMP_SPINCOUNT"] = "10000"
    import torch

    from pipeline import hardware, latents, losses, models
    from pipeline.augment import d_view
    from pipeline.config import load_config
    from pipeline.optim import averaged, make_optimisers
    from pipeline.plan import Plan
    from pipeline.step import Batch, Nets, train_step

    bsz = batch_for(variant, batch_size, arch)
    if variant == "1thread":
        torch.set_num_threads(1)
    files = config_files(arch)
    changed = {"no_real_q": ["train.real_consistency=0"], "own_views": ["train.d_augment=false"]}.get(variant, [])
    cfg = load_config(files, [f"model.arch={arch}", f"train.batch_size={bsz}", *changed])
    torch.manual_seed(0)
    g, d = models.build(cfg.model, literal=variant == "textbook")
    rng = torch.Generator().manual_seed(0)
    x = torch.rand(bsz, 1, 28, 28)
    cpu = torch.device("cpu")
    if variant == "textbook":
        opt_d = torch.optim.Adam([*d.trunk.parameters(), *d.head.parameters()], lr=2e-4, betas=(0.5, 0.999))
        opt_gq = torch.optim.Adam([*g.parameters(), *d.q.parameters()], lr=1e-3, betas=(0.5, 0.999))

        def step():
            z, c = latents.sample(bsz, 54, 10, rng, cpu)
            fake = g(z, latents.one_hot(c, 10))
            opt_d.zero_grad()
            losses.d_loss(d(x)[0], d(fake.detach())[0]).backward()
            opt_d.step()
            opt_gq.zero_grad()
            d_fake, q_logits = d(fake)
            (losses.g_loss(d_fake, "non_saturating") + losses.info_loss(q_logits, c)).backward()
            opt_gq.step()
    else:
        precision = {"fp32": "fp32", "bf16": "bf16"}.get(variant, hardware.resolve_precision("auto", cpu))
        if variant in ("channels_last", "compile_cl"):
            g.to(memory_format=torch.channels_last)
            d.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        opt = make_optimisers(g, d, cfg.train)
        if variant == "foreach_adam":  # PyTorch's default Adam kernels instead of the fused one
            for o in (opt.d, opt.q, opt.g):
                for group in o.param_groups:
                    group["fused"], group["foreach"] = None, None
        g_ema = averaged(g, 0.999)
        plan = Plan.of(cfg, 1000)
        # Mode seeking on from the first step, half of D's images changed (as mid-run), constant
        # rates; every image's copy is made either way.
        settings = dataclasses.replace(
            plan.settings(0, rng, lambda: hardware.autocast(precision, cpu)), seeking=plan.mode_seeking,
            lr_scale=None, d_view=d_view(rng, 0.5) if plan.d_augment_floor is not None else None)
        if variant in ("compile", "compile_cl"):
            # In place, each part the step calls: G, D's trunk (in its two parts), its head and Q
            # (train_step calls D's parts, not D's forward, so compiling D as a whole would compile
            # nothing it runs).
            for part in (g, *d.trunk_parts, d.head, d.q):
                part.compile()

        def step():
            z, c = latents.sample(bsz, 54, 10, rng, cpu)
            train_step(Nets(g, d), opt, Batch(x, z, c), settings)
            g_ema.update_parameters(g)
    share = hardware.ThreadShare(torch.get_num_threads()) if variant == "default" else None
    start = time.perf_counter()
    for _ in range(3):
        step()
    warm_up = time.perf_counter() - start
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        if share is not None:
            share.tick()
        n += 1
    img_per_s = n * bsz / (time.perf_counter() - start)
    return {"img_per_s": img_per_s, "warm_up_s": warm_up, "threads": torch.get_num_threads(), "batch": bsz,
            # Compiled steps run the same products; counting them would trace them again.
            "flop_per_img": None if "compile" in variant else step_flops(step) / bsz}


def step_flops(step) -> float:
    """FLOPs of one call of ``step``, as PyTorch's FlopCounterMode counts them: its matrix
    products and convolutions, forward and backward, whatever their precision."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def matmul_peak(seconds: float = 2.0) -> dict[str, float]:
    """GFLOP/s of a dense 2048x2048 matrix product in fp32 and in bf16 on this process's threads:
    roughly the most a step can draw from the CPU at each precision."""
    import torch

    peak = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        a @ b
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            a @ b
            n += 1
        peak[name] = 2 * 2048 ** 3 * n / (time.perf_counter() - start) / 1e9
    return peak


def measure(arch: str, variant: str, seconds: float, batch_size: int, beside: bool) -> list[dict]:
    """One worker, or two identical ones started together; their results."""
    env = dict(os.environ)
    command = [sys.executable, __file__, "--worker", arch, variant, str(seconds), str(batch_size)]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2 if beside else 1)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="paper,tconv")
    parser.add_argument("--variants", default="textbook,default,fp32,bf16,channels_last,compile,foreach_adam,b128",
                        help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20, help="timed seconds per measurement (after warm-up)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="one batch for every variant (default: the textbook loop and b128 at the paper's 128, "
                             "the others at the train.batch_size of the config each network trains with)")
    parser.add_argument("--beside", action="store_true", help="also measure each variant beside a second identical process")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        arch, variant, seconds, bsz = args.worker
        print(json.dumps(worker(arch, variant, float(seconds), int(bsz))), flush=True)
        return
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; known: {', '.join(VARIANTS)}")
    import torch

    sys.path.insert(0, str(ROOT))
    from pipeline import hardware

    cpu = torch.device("cpu")
    batches = (f"batch {args.batch_size}" if args.batch_size else
               f"batch {PAPER_BATCH} (textbook, b128), the config's for the others ("
               + ", ".join(f"{arch} {batch_for('default', 0, arch)}" for arch in args.archs.split(",")) + ")")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {batches}, {args.seconds:g} s x "
          f"{args.rounds} rounds, medians; auto precision here: {hardware.resolve_precision('auto', cpu)} "
          f"({hardware.describe(cpu, 'auto', hardware.resolve_precision('auto', cpu))})", flush=True)
    peak = matmul_peak()
    print(f"dense 2048x2048 matrix product here: {peak['fp32']:.3g} GFLOP/s in fp32, {peak['bf16']:.3g} in bf16 "
          f"({peak['bf16'] / peak['fp32']:.2g}x)", flush=True)
    for arch in args.archs.split(","):
        alone = {v: [] for v in variants}
        beside = {v: [] for v in variants}
        warm = {v: [] for v in variants}
        work = {}
        for _ in range(args.rounds):
            for v in variants:
                (result,) = measure(arch, v, args.seconds, args.batch_size, beside=False)
                alone[v].append(result["img_per_s"])
                warm[v].append(result["warm_up_s"])
                work[v] = result["flop_per_img"]
                if args.beside:
                    pair = measure(arch, v, args.seconds, args.batch_size, beside=True)
                    beside[v].append(min(r["img_per_s"] for r in pair))
        _table(arch, variants, alone, beside if args.beside else None, warm, work)


def _table(arch: str, variants: list[str], alone: dict, beside, warm: dict, work: dict) -> None:
    med = {v: statistics.median(alone[v]) for v in variants}
    base = med.get("textbook")
    print(f"\n{arch}")
    head = ("| variant | img/s alone (median) | min..max | vs textbook | MFLOP per image | vs textbook's | "
            "GFLOP/s | warm-up s (3 steps)")
    head += " | img/s beside a 2nd process (slower of the two) | kept |" if beside else " |"
    print(head)
    print("|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if beside else ""))
    for v in variants:
        row = (f"| {v} | {med[v]:.0f} | {min(alone[v]):.0f}..{max(alone[v]):.0f} | "
               f"{med[v] / base:.2f}x | " if base else f"| {v} | {med[v]:.0f} | {min(alone[v]):.0f}..{max(alone[v]):.0f} | – | ")
        if work[v] is None:
            row += "– | – | – | "
        else:
            row += f"{work[v] / 1e6:.0f} | " + (f"{work[v] / work['textbook']:.2f}x | " if base else "– | ")
            row += f"{work[v] * med[v] / 1e9:.0f} | "
        row += f"{statistics.median(warm[v]):.1f} |"
        if beside:
            kept = statistics.median(beside[v])
            row += f" {kept:.0f} | {kept / med[v]:.0%} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
