"""Whether D's trunk units still switch: trains the package's step on a config and prints, at a
few points, for each convolution or linear layer of D's trunk, the spread of its pre-activations
(standard deviation over the batch, mean over units), the mean |bias|, and the share of units
that are on for (nearly) every image or off for every image of 256 real or fake ones. A unit
that never switches is linear; a trunk of such units makes D a linear function of its input.

    .venv/bin/python benchmarks/d_units.py -c configs/experiments/upsample_sn_ns.yaml [--steps 600]
    .venv/bin/python benchmarks/d_units.py -c configs/experiments/upsample_sn_ns.yaml --biases

``--biases`` gives every trunk layer without one a zero-initialised bias first, as
``upsample_sn``'s trunk had before its biases were removed (docs/results.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import data, hardware, latents, models, optim, plan, step  # noqa: E402
from pipeline.config import load_config  # noqa: E402

CHECKPOINTS = (0, 50, 150, 300, 600, 1200)


def options() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", action="append", default=[], help="config file(s), in order")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--biases", action="store_true", help="give the trunk's layers biases")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p.parse_args()


def add_biases(trunk: nn.Module) -> None:
    for m in trunk.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is None:
            m.bias = nn.Parameter(torch.zeros(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features))


@torch.no_grad()
def layer_rows(trunk: nn.Module, images: torch.Tensor) -> list[tuple[str, float, float, float]]:
    rows, h = [], images
    for m in trunk:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            pre = m(h)
            dims = (0, 2, 3) if pre.dim() == 4 else (0,)
            spread = pre.std(dim=dims).mean().item()
            bias = 0.0 if m.bias is None else m.bias.abs().mean().item()
            on = (pre > 0).float().mean(dim=dims)
            fixed = ((on > 0.99) | (on < 0.01)).float().mean().item()
            rows.append((type(m).__name__.removeprefix("Parametrized"), spread, bias, fixed))
        h = m(h)
    return rows


def main() -> None:
    a = options()
    torch.set_num_threads(1)
    cfg = load_config(a.config, a.overrides)
    t, cpu = cfg.train, torch.device("cpu")
    tensors = data.as_tensors(data.prepare(cfg.data, log=lambda m: None)[0], cpu)
    torch.manual_seed(cfg.seed)
    g, d = models.build(cfg.model)
    if a.biases:
        add_biases(d.trunk)
    opt = optim.make_optimisers(g, d, t)
    rng = torch.Generator().manual_seed(cfg.seed + 1)
    precision = hardware.resolve_precision(t.precision, cpu)
    train_x, bsz = tensors["train_x"][:cfg.data.train_subset], t.batch_size
    probe_real = train_x[:256].float().div(255.0)
    probe_z, probe_c = latents.sample(256, cfg.model.noise_dim, cfg.model.code_dim,
                                      torch.Generator().manual_seed(7), cpu)
    print(f"{cfg.model.arch}, trunk biases: {'added' if a.biases else 'as built'}, {precision}")
    print("| step | images | layer | pre-activation spread | mean abs bias | units that never switch |")
    print("|---:|---|---|---:|---:|---:|")
    per_epoch = train_x.shape[0] // bsz
    # the config's step over a.steps, at constant rates
    steps = dataclasses.replace(plan.Plan.of(cfg, per_epoch), total_steps=a.steps, decay_steps=0)
    for s in range(a.steps + 1):
        if s in CHECKPOINTS or s == a.steps:
            with torch.no_grad():  # G in training mode: the fakes D is trained on
                fakes = g(probe_z, latents.one_hot(probe_c, g.code_dim))
            d.eval()
            for name, images in (("real", probe_real), ("fake", fakes)):
                for layer, spread, bias, fixed in layer_rows(d.trunk, images):
                    print(f"| {s} | {name} | {layer} | {spread:.4f} | {bias:.4f} | {fixed:.2f} |", flush=True)
            d.train()
        if s == a.steps:
            break
        i = s % per_epoch
        x = train_x[i * bsz:(i + 1) * bsz].float().div_(255.0)
        z, c = latents.sample(bsz, cfg.model.noise_dim, cfg.model.code_dim, rng, cpu)
        step.train_step(step.Nets(g, d), opt, step.Batch(x, z, c),
                        steps.settings(s, rng, lambda: hardware.autocast(precision, cpu)))


if __name__ == "__main__":
    main()
