"""One InfoGAN iteration, ``train_step(nets, optimisers, batch, settings)``, and the running
means of the step's scalars between two logging points. What the step does (which images D and
Q see, the weights, the schedules) comes from ``plan.Settings``; the views of images are in
``augment``, the optimisers in ``optim``. Nothing here logs or knows runs.

One fake batch serves both halves of a step: G runs once, the D step reads it detached, the G
step backpropagates through the updated D into G without computing D's weight gradients.

- ``joint`` only matters when D has batch norm: the share of D's and G's adversarial losses
  computed on real and fake as one batch. 0, separate (the default, as in the InfoGAN code): real
  and fake batches are normalised each with their own statistics, so D judges a batch of fakes
  against a batch of reals and a batch of near-copies stands out. 1, joint: one batch of both, so
  D judges each image alone; the handout's network needs that view, since it normalises the 1x1
  features right before the D head and, normalised separately, a batch of fakes looks to that head
  like a batch of reals whatever their brightness and contrast. Between (``train.real_fake_batch
  =both``): the losses of the two views, weighted; Q reads the joint one.
- ``d_view`` (``train.d_augment``): D judges ``d_view(x)`` and ``d_view(fake)``, each image
  replaced by a changed copy with a probability that falls over the run (DiffAugment's idea). Q's
  info term reads the changed fakes and its term on real digits the changed reals from those two
  passes: the D step does a textbook D step's work plus one forward pass without gradients for
  the plain reals' codes. The G step reads D and Q on fakes changed the same way.
- ``info_view`` (``train.info_augment`` without ``d_view``): Q learns to read the code from a
  randomly rotated, scaled and shifted copy of each fake, so Q relies on what survives such
  changes (the digit's identity), not on slant, size or position; one more trunk pass in the D
  step. G makes its codes recognisable to that Q.
- ``real_weight`` (``train.real_consistency``): Q also learns to give a changed copy of each real
  digit (moved and thickened or thinned) the code it confidently gives the plain digit
  (``losses.pseudo_label_loss``; no labels), so G cannot keep two codes apart by stroke width or
  slant alone. Without ``d_view`` the changed copy costs one more trunk pass.
- ``d_input`` (``train.instance_noise``): what D sees of every image, real and fake, in both
  steps: the images with fresh Gaussian noise added, so D cannot win on pixel detail that G cannot
  draw yet. The G step reads D on the same noisy fake it was trained against.
- ``u`` (``model.continuous_codes``): the continuous codes G draws from. Q's means for them add
  ``continuous_weight`` times their info term to the categorical one, in both steps. Q reads them
  from the plain fake, never from a moved or changed copy (one more trunk pass in each step
  under ``d_view``): rotating and scaling a digit is exactly what they are meant to encode.
- ``seeking`` (``train.mode_seeking``): the weight of G's reward for drawing different images from
  different z under one code, computed on the pairs (i, i + n/2) of the batch, which the step
  gives the same code (``pair_codes``); 0 = off. Capped at ``mode_seeking_cap`` per pair, so G gains
  nothing by drawing noise once its images differ enough.
- ``precision()`` is the context the forward passes run in (``hardware.autocast``: bf16 autocast,
  or nothing); the losses are computed in fp32 from the logits either way.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Optional

import torch

from . import compat, latents, losses, models, names, optim
from .optim import Optimisers
from .plan import Settings

# Real digits whose code Q gives with at least this probability teach Q their changed copies.
REAL_CONFIDENCE = 0.8


class Nets(NamedTuple):
    g: models.Generator
    d: models.Discriminator


@dataclass
class Batch:
    """What the loop draws for one step: real images and the latents G draws from."""
    x: torch.Tensor
    z: torch.Tensor
    c: torch.Tensor
    u: Optional[torch.Tensor] = None


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """No weight gradients for ``module`` (gradients still flow through it to its input)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


def pair_codes(c: torch.Tensor) -> torch.Tensor:
    """``c`` with its second half replaced by its first: sample i and i + n/2 share a code."""
    half = c.shape[0] // 2
    return torch.cat([c[:half], c[:half], c[2 * half:]])


def mode_seeking_reward(fake: torch.Tensor, z: torch.Tensor, cap: float) -> torch.Tensor:
    """Mean over the pairs (i, i + n/2) of min(|G_i - G_j| / |z_i - z_j|, cap), each distance a mean
    absolute difference: how far G's images move per unit of z, where the pairs share a code."""
    half = fake.shape[0] // 2
    images = (fake[:half] - fake[half:2 * half]).abs().flatten(1).mean(1)
    noise = (z[:half] - z[half:2 * half]).abs().mean(1)
    return (images / noise).clamp(max=cap).mean()


class Trunk:
    """D's trunk for one half of a step, called on one or more image batches as one batch. The
    layers before D's first batch norm see each image alone, so a batch that several views put
    beside different others (the reals, beside the fakes, a moved copy of them and their own
    changed copy) goes through those layers once per half step, and only the batch norm and what
    follows it run per view: the same function, about a third less work for ``tconv`` with both
    views. Made afresh for each half, since D's weights change between them. A trunk without
    batch norm runs whole on every call: no view puts its batches beside others, and a spectrally
    normalised layer takes one step of its power iteration per call."""

    def __init__(self, d: models.Discriminator):
        self.d = d
        self.stems: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, *batches: torch.Tensor) -> torch.Tensor:
        if not self.d.batch_norm:
            return self.d.trunk(batches[0] if len(batches) == 1 else torch.cat(batches))
        stems = [self.stem(images) for images in batches]
        return self.d.rest(stems[0] if len(stems) == 1 else torch.cat(stems))

    def stem(self, images: torch.Tensor) -> torch.Tensor:
        if id(images) not in self.stems:  # (the batch is kept with it, so its id stays its own)
            self.stems[id(images)] = (images, self.d.stem(images))
        return self.stems[id(images)][1]


@dataclass
class Shown:
    """What D is shown in one step: the reals and G's fakes as D sees them (after ``d_input``),
    the latents, and G's images as drawn."""
    x: torch.Tensor
    fake: torch.Tensor
    c: torch.Tensor
    u: Optional[torch.Tensor]
    joint: float  # share of the adversarial losses on real and fake through D's batch norm as one batch
    z: torch.Tensor
    plain_fake: torch.Tensor  # G's images before D's instance noise

    def features(self, trunk: Trunk, images: torch.Tensor) -> torch.Tensor:
        """D's trunk on [real; images] when any loss is joint, else on images alone; returns the
        features of images (what Q reads)."""
        if self.joint:
            return trunk(self.x, images)[self.x.shape[0]:]
        return trunk(images)

    def views(self, trunk: Trunk, images: torch.Tensor,
              real: bool) -> list[tuple[float, Optional[torch.Tensor], torch.Tensor, torch.Tensor,
                                        Optional[torch.Tensor]]]:
        """(weight, D's logits on the reals or None, on ``images``, the features of ``images``, of
        the reals or None) for the joint view and the separate one, each where its weight is above
        0; joint first."""
        out, d = [], trunk.d
        if self.joint:
            h = trunk(self.x, images)
            logits = d.head(h).squeeze(1).float()
            n = self.x.shape[0]
            out.append((self.joint, logits[:n] if real else None, logits[n:], h[n:], h[:n] if real else None))
        if self.joint < 1:
            h_real = trunk(self.x) if real else None
            d_real = d.head(h_real).squeeze(1).float() if real else None
            h = trunk(images)
            out.append((1.0 - self.joint, d_real, d.head(h).squeeze(1).float(), h, h_real))
        return out


def train_step(nets: Nets, opt: Optimisers, batch: Batch, settings: Settings) -> dict[str, torch.Tensor]:
    """One InfoGAN iteration on ``batch``: the D step, then the G step, as ``settings`` say (see
    the module's docstring). Returns the plan's scalars, detached; never logs."""
    g, d = nets
    plan = settings.plan
    if settings.lr_scale is not None:
        optim.set_lr_scale(opt, plan.rates, settings.lr_scale)
    c = pair_codes(batch.c) if settings.seeking else batch.c
    with settings.precision():
        plain = g(batch.z, latents.one_hot(c, g.code_dim), batch.u)
    x, fake = (batch.x, plain) if settings.d_input is None else (settings.d_input(batch.x), settings.d_input(plain))
    shown = Shown(x, fake, c, batch.u, plan.joint if d.batch_norm else 0.0, batch.z, plain)
    stats = d_step(d, opt, shown, settings)
    stats.update(g_step(g, d, opt, shown, settings))
    if plan.mode_seeking and not settings.seeking:  # its curve reads 0 until the term starts
        stats[names.MODE_SEEKING] = torch.zeros((), device=fake.device)
    return {key: stats[key] for key in plan.metrics}


def d_step(d: models.Discriminator, opt: Optimisers, shown: Shown, s: Settings) -> dict[str, torch.Tensor]:
    """D: real -> 1, fake -> 0, on ``d_view``'s changed copies where the plan has them; Q learns to
    read c back from the fakes (openai/InfoGAN puts the info term in D's objective;
    ``info_trains_d_trunk`` decides whether it may shape D's trunk too) and, with ``real_weight`` >
    0, to give changed real digits the codes it gives the plain ones."""
    plan, fake = s.plan, shown.fake.detach()
    if s.d_view is not None and shown.joint:
        raise ValueError("d_view needs real and fake normalised apart (joint 0)")
    with s.precision():
        judged = shown if s.d_view is None else dataclasses.replace(shown, x=s.d_view(shown.x))
        judged_fake = fake if s.d_view is None else s.d_view(fake)
        trunk = Trunk(d)
        views = judged.views(trunk, judged_fake, real=True)
        _, d_real, d_fake, h_fake, h_real = views[0]
        q_logits, q_means = fake_codes(trunk, shown, fake, h_fake, s)
        if plan.real_weight:
            changed_logits, plain_logits = real_codes(trunk, shown, h_real, s)
    loss_d = sum(weight * losses.d_loss(on_real, on_fake) for weight, on_real, on_fake, *_ in views)
    info_d = losses.info_loss(q_logits.float(), shown.c)
    if shown.u is not None:
        info_d = info_d + plan.continuous_weight * losses.info_loss_continuous(q_means.float(), shown.u)
    total = loss_d + plan.code_weight * info_d
    stats = {}
    if plan.real_weight:
        stats[names.LOSS_INFO_REAL] = losses.pseudo_label_loss(changed_logits, plain_logits, REAL_CONFIDENCE)
        total = total + plan.real_weight * stats[names.LOSS_INFO_REAL]
    opt.d.zero_grad(set_to_none=True)
    opt.q.zero_grad(set_to_none=True)
    total.backward()
    opt.d.step()
    opt.q.step()
    stats.update({names.LOSS_D: loss_d, names.PROB_D_REAL: torch.sigmoid(d_real).mean(),
                  names.PROB_D_FAKE_BEFORE_G: torch.sigmoid(d_fake).mean()})
    return {key: value.detach() for key, value in stats.items()}


def trained(h: torch.Tensor, s: Settings) -> torch.Tensor:
    """Features ``h`` as Q's terms read them in the D step: detached unless they may shape D's trunk."""
    return h if s.plan.info_trains_d_trunk else h.detach()


def fake_codes(trunk: Trunk, shown: Shown, fake: torch.Tensor, h_fake: torch.Tensor,
               s: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Q's code logits for the fakes, from where the plan has Q read them (``h_fake``, the features
    of the fakes D judged, or a moved copy's), and its continuous means, from the plain fakes."""
    d = trunk.d
    if s.info_view is not None:
        logits, means = d.read_codes(trained(shown.features(trunk, s.info_view(fake)), s))
    else:
        logits, means = d.read_codes(trained(h_fake, s))
    if shown.u is not None and s.info_view is not None:
        means = d.read_codes(trained(h_fake, s))[1]
    elif shown.u is not None and s.d_view is not None:
        means = d.read_codes(trained(trunk(fake), s))[1]
    return logits, means


def real_codes(trunk: Trunk, shown: Shown, h_real: torch.Tensor,
               s: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Q's code logits for changed copies of the real digits and for the plain ones (the targets):
    under ``d_view`` the changed reals D just judged (``h_real``) and a pass without gradients for
    the plain ones; otherwise the plain reals D judged and a changed copy of Q's own."""
    d = trunk.d
    if s.d_view is not None:
        changed = d.read_codes(trained(h_real, s))[0]
        with torch.no_grad():
            plain = d.read_codes(d.trunk(shown.x))[0]
        return changed, plain
    plain = d.read_codes(h_real.detach())[0]
    changed = d.read_codes(trained(shown.features(trunk, s.real_view(shown.x)), s))[0]
    return changed, plain


def g_step(g: models.Generator, d: models.Discriminator, opt: Optimisers, shown: Shown,
           s: Settings) -> dict[str, torch.Tensor]:
    """G: fool the updated D, and make c recoverable by Q; D and Q stay fixed here. With
    ``seeking`` > 0, G is also rewarded for images that differ where z does (``mode_seeking_reward``)."""
    plan = s.plan
    with frozen(d):
        with s.precision():
            fake = shown.fake if s.d_view is None else s.d_view(shown.fake)
            trunk = Trunk(d)
            views = shown.views(trunk, fake, real=False)
            _, _, d_fake_after, h, _ = views[0]
            q_logits, q_means = d.read_codes(h)
            if shown.u is not None and s.d_view is not None:  # the continuous codes from the plain fake
                q_means = d.read_codes(trunk(shown.fake))[1]
        loss_g = sum(weight * losses.g_loss(on_fake, plan.g_loss) for weight, _, on_fake, *_ in views)
        loss_info = losses.info_loss(q_logits.float(), shown.c)
        info_g = loss_info
        if shown.u is not None:
            loss_info_cont = losses.info_loss_continuous(q_means.float(), shown.u)
            info_g = loss_info + plan.continuous_weight * loss_info_cont
        total = loss_g + plan.code_weight * info_g
        if s.seeking > 0:
            reward = mode_seeking_reward(shown.plain_fake.float(), shown.z, plan.mode_seeking_cap)
            total = total - s.seeking * reward
        opt.g.zero_grad(set_to_none=True)
        total.backward()
        # How much G is told to change: where the saturating loss's gradient vanishes, this shows it.
        g_norm = torch.nn.utils.get_total_norm([p.grad for p in g.parameters() if p.grad is not None])
        opt.g.step()
    stats = {names.LOSS_G: loss_g.detach(), names.LOSS_INFO: loss_info.detach(),
             names.PROB_D_FAKE_AFTER_G: torch.sigmoid(d_fake_after.detach()).mean(),
             names.GRAD_G_NORM: g_norm.detach()}
    if shown.u is not None:
        stats[names.LOSS_INFO_CONT] = loss_info_cont.detach()
    if s.seeking > 0:
        stats[names.MODE_SEEKING] = reward.detach()
    return stats


class Accumulator:
    """Sums of step scalars between two logging points (kept on the device; no per-step sync)."""

    def __init__(self, keys: tuple[str, ...] = names.STEP_METRICS):
        self.keys = keys
        self.sums: Optional[torch.Tensor] = None
        self.count = 0

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        values = torch.stack([stats[k] for k in self.keys])
        self.sums = values if self.sums is None else self.sums + values
        self.count += 1

    def means(self) -> dict[str, float]:
        return dict(zip(self.keys, (self.sums / self.count).tolist()))

    def state(self) -> dict:
        return {"sums": None if self.sums is None else self.sums.cpu(), "count": self.count}

    def load(self, state: dict, device: torch.device) -> None:
        if not compat.sums_fit(state, len(self.keys)):
            return
        self.sums = None if state["sums"] is None else state["sums"].to(device)
        self.count = state["count"]


