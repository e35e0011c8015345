"""Probe of a cheaper step, outside the package: `infogan` with D judging changed copies of real
and fake digits, as DiffAugment does, so that Q's reading of the changed fakes and its term on
the changed real digits share D's two passes instead of adding two more.

In D's step, with probability p each image of the real batch and of the fake batch is replaced
by a copy changed as `augment.real_q_view` changes real digits (rotated, scaled, shifted, strokes
thickened or thinned); D's loss, Q's info term (on the changed fakes) and Q's term on real
digits (changed against plain, `losses.pseudo_label_loss`) read those two passes, and the plain
real digits' codes come from one forward pass without gradients. G's step is the package's, on
the fakes changed the same way. p falls linearly from 1 at the first step to ``--floor`` at
``--anneal-steps`` (the default run's 2,340): D sees plain images more and more, so G's images
stay sharp, after the codes have formed under the changes. Counts steps from 0 when it starts,
so a resumed run restarts the schedule.

    .venv/bin/python benchmarks/shared_view_probe.py [--floor 0.2] [--anneal-steps 2340] -- train [ARGS]
    .venv/bin/python benchmarks/shared_view_probe.py -- train --fresh seed=3 train.threads=1
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import augment, cli, losses, names, step  # noqa: E402

RNG = torch.Generator().manual_seed(4321)
CHANGE = augment.real_q_view(RNG)
SCHEDULE = {"step": 0, "floor": 0.2, "anneal_steps": 2340}
PACKAGE_G_STEP = step.g_step


def changed(images: torch.Tensor) -> torch.Tensor:
    """``images`` with each one replaced, with probability p, by its changed copy."""
    p = max(SCHEDULE["floor"], 1 - SCHEDULE["step"] / SCHEDULE["anneal_steps"])
    keep = (torch.rand(images.shape[0], generator=RNG) >= p).to(images.device).view(-1, 1, 1, 1)
    return torch.where(keep, images, CHANGE(images))


def d_step(d, opt, batch, code_weight, continuous_weight, info_trains_d_trunk, info_view, precision,
           real_view=None, real_weight=0.0):
    fake, c, x = batch.fake.detach(), batch.c, batch.x
    SCHEDULE["step"] += 1
    with precision():
        h_real, h_fake = d.trunk(changed(x)), d.trunk(changed(fake))
        d_real, d_fake = d.head(h_real).squeeze(1).float(), d.head(h_fake).squeeze(1).float()
        q_logits, real_logits = d.read_codes(h_fake)[0], d.read_codes(h_real)[0]
        with torch.no_grad():
            plain_logits = d.read_codes(d.trunk(x))[0]
    loss_d = losses.d_loss(d_real, d_fake)
    info_real = losses.pseudo_label_loss(real_logits, plain_logits, step.REAL_CONFIDENCE)
    total = loss_d + code_weight * losses.info_loss(q_logits.float(), c) + real_weight * info_real
    opt.d.zero_grad(set_to_none=True)
    opt.q.zero_grad(set_to_none=True)
    total.backward()
    opt.d.step()
    opt.q.step()
    return {names.LOSS_D: loss_d.detach(), names.PROB_D_REAL: torch.sigmoid(d_real.detach()).mean(),
            names.PROB_D_FAKE_BEFORE_G: torch.sigmoid(d_fake.detach()).mean(),
            names.LOSS_INFO_REAL: info_real.detach()}


def g_step(g, d, opt, batch, code_weight, continuous_weight, g_loss_kind, precision, seeking=0.0, seeking_cap=0.2):
    """The package's G step on the fakes changed as D's step judged them."""
    with precision():
        fakes = changed(batch.fake)
    return PACKAGE_G_STEP(g, d, opt, dataclasses.replace(batch, fake=fakes), code_weight, continuous_weight,
                          g_loss_kind, precision, seeking, seeking_cap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--floor", type=float, default=0.2, help="the share of changed images from --anneal-steps on")
    parser.add_argument("--anneal-steps", type=int, default=2340, help="steps over which the share falls from 1")
    parser.add_argument("infogan", nargs=argparse.REMAINDER, help="the infogan command line, after --")
    args = parser.parse_args()
    SCHEDULE.update(floor=args.floor, anneal_steps=args.anneal_steps)
    step.d_step, step.g_step = d_step, g_step  # train_step calls them by their module names
    sys.exit(cli.main([a for a in args.infogan if a != "--"]))


if __name__ == "__main__":
    main()
