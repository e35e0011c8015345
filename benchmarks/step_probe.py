"""Trains the package's own step (``step.train_step``) on a config for a few epochs outside
MLflow, and prints every ``--eval-every`` steps what the training loop's evaluation measures
(generated accuracy, Q accuracy, demo grades, style spread), on the config's budget for it
(``eval.train_samples_per_code``, ``eval.demos``; Q on ``eval.q_test_images`` test digits, 2,000
where the config says all), beside the step's mean losses. It saves G's fixed grid at each of
those points as ``OUT/TAG_STEP.png`` (rows: code values). One thread, so two probes run side by
side on 2 cores; bf16 where ``train.precision=auto`` picks it.

    .venv/bin/python benchmarks/step_probe.py [-c CONFIG ...] [--epochs 2] [--eval-every 234] [key=value ...]
    .venv/bin/python benchmarks/step_probe.py model.arch=tconv train.real_fake_batch=both --epochs 1.5

``--init torch`` builds the networks with PyTorch's default initialisation instead of the
project's (DCGAN's N(0, 0.02)). For variants the package does not have, see handout_probe.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import data, hardware, latents, measure, models, optim, plan, reference, step  # noqa: E402
from pipeline.config import load_config  # noqa: E402


def options() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", action="append", default=[], help="config file(s), in order")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--eval-every", type=int, default=234, help="steps between evaluations")
    p.add_argument("--init", choices=("project", "torch"), default="project")
    p.add_argument("--tag", default="probe", help="name of the saved grids")
    p.add_argument("--out", default="outputs/probes", help="folder for the grids")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p.parse_args()


def networks(cfg, init: str) -> tuple[models.Generator, models.Discriminator]:
    torch.manual_seed(cfg.seed)
    if init == "project":
        return models.build(cfg.model)
    m = cfg.model
    return (models.Generator(m.noise_dim, m.code_dim, m.arch, continuous_codes=m.continuous_codes),
            models.Discriminator(m.code_dim, m.arch, m.q_hidden, continuous_codes=m.continuous_codes))


def save_grid(g: models.Generator, path: Path) -> None:
    z, c = latents.grid_inputs(latents.fixed_noise(10, g.noise_dim, 0), g.code_dim)
    with torch.no_grad():
        images = measure.generate(g, z, c).float().clamp(0, 1)
    tiles = images.reshape(g.code_dim, 10, 28, 28).permute(0, 2, 1, 3).reshape(g.code_dim * 28, 280)
    Image.fromarray((tiles.numpy() * 255).astype(np.uint8)).resize((560, g.code_dim * 56), 0).save(path)


def main() -> None:
    a = options()
    torch.set_num_threads(1)
    cfg = load_config(a.config, a.overrides)
    t, cpu = cfg.train, torch.device("cpu")
    arrays, info = data.prepare(cfg.data, log=lambda m: None)
    tensors = data.as_tensors(arrays, cpu)
    classifier = reference.get_classifier(cfg, tensors, info.sha256, log=print)[0]
    g, d = networks(cfg, a.init)
    opt = optim.make_optimisers(g, d, t)
    average = optim.averaged(g, t.ema_decay) if t.ema_decay else None
    rng = torch.Generator().manual_seed(cfg.seed + 1)
    precision = hardware.resolve_precision(t.precision, cpu)
    real_spread = measure.real_style_spread(tensors)
    train_x, bsz = tensors["train_x"][:cfg.data.train_subset], t.batch_size
    per_epoch = train_x.shape[0] // bsz
    total = int(a.epochs * per_epoch)
    steps = dataclasses.replace(plan.Plan.of(cfg, per_epoch), total_steps=total,
                                decay_steps=optim.decay_steps_of(t, total))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"tag": a.tag, "precision": precision, "config": a.config, "overrides": a.overrides}), flush=True)
    sums, since, start = {}, 0, time.monotonic()
    for s in range(total):
        if s % per_epoch == 0:
            perm = torch.randperm(train_x.shape[0], generator=rng)
        i = s % per_epoch
        x = train_x[perm[i * bsz:(i + 1) * bsz]].float().div_(255.0)
        z, c = latents.sample(bsz, cfg.model.noise_dim, cfg.model.code_dim, rng, cpu)
        stats = step.train_step(step.Nets(g, d), opt, step.Batch(x, z, c),
                                steps.settings(s, rng, lambda: hardware.autocast(precision, cpu)))
        if average is not None:
            average.update_parameters(g)
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        since += 1
        if (s + 1) % a.eval_every == 0 or s + 1 == total:
            shown = g if average is None else average.module
            budget = measure.Budget(cfg.eval.train_samples_per_code, cfg.eval.demos,
                                    q_test_images=cfg.eval.q_test_images or 2000)
            m = measure.measure(shown, d, classifier, tensors, budget, seed=7, real_spread=real_spread)
            save_grid(shown, out / f"{a.tag}_{s + 1}.png")
            row = {"epoch": round((s + 1) / per_epoch, 2), "gen": round(m.gen_accuracy, 3), "q": round(m.q_accuracy, 3),
                   "demo_min": int(m.demo_scores.min()), "demos_10": int((m.demo_scores == 10).sum()),
                   "style_spread": round(m.style_spread, 3),
                   **{k: round(v / since, 3) for k, v in sums.items()},
                   "img_per_s": round((s + 1) * bsz / (time.monotonic() - start))}
            sums, since = {}, 0
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
