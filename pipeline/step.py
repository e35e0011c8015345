"""One InfoGAN iteration, and the running means of the step's scalars between two logging
points (the optimisers and the schedules: ``optim``; Q's and D's views of images: ``augment``).
Nothing here logs or knows runs.

One fake batch serves both halves of a step: G runs once, the D step reads it detached, the G
step backpropagates through the updated D into G without computing D's weight gradients.

- ``joint_batch`` only matters when D has batch norm: the share of D's and G's adversarial losses
  computed on real and fake as one batch. 0, separate (the default, as in the InfoGAN code): real
  and fake batches are normalised each with their own statistics, so D judges a batch of fakes
  against a batch of reals and a batch of near-copies stands out. 1, joint: one batch of both, so
  D judges each image alone; the handout's network needs that view, since it normalises the 1x1
  features right before the D head and, normalised separately, a batch of fakes looks to that head
  like a batch of reals whatever their brightness and contrast. Between (``train.real_fake_batch
  =both``): the losses of the two views, weighted; Q reads the joint one.
- ``info_view`` (``train.info_augment``): in the D step Q learns to read the code from
  ``info_view(fake)``, a randomly rotated, scaled and shifted copy, so Q relies on what survives
  such changes (the digit's identity), not on slant, size or position. The G step is unchanged:
  G makes its codes recognisable to that Q. Costs one more trunk pass in the D step.
- ``real_view``, ``real_weight`` (``train.real_consistency``): in the D step Q also learns to give
  ``real_view(x)``, each real digit moved and thickened or thinned, the code it confidently gives
  the plain digit (``losses.pseudo_label_loss``; no labels), so G cannot keep two codes apart by
  stroke width or slant alone. Costs one more trunk pass in the D step.
- ``d_input`` (``train.instance_noise``): what D sees of every image, real and fake, in both
  steps: the images with fresh Gaussian noise added, so D cannot win on pixel detail that G cannot
  draw yet. The G step reads D on the same noisy fake it was trained against.
- ``u`` (``model.continuous_codes``): the continuous codes G draws from. Q's means for them add
  ``continuous_weight`` times their info term to the categorical one, in both steps. Q learns them
  from the plain fake, never from ``info_view``: rotating and scaling a digit is exactly what they
  are meant to encode.
- ``seeking`` (``train.mode_seeking``): the weight of G's reward for drawing different images from
  different z under one code, computed on the pairs (i, i + n/2) of the batch, which the caller
  gives the same code (``pair_codes``); 0 = off. Capped at ``seeking_cap`` per pair, so G gains
  nothing by drawing noise once its images differ enough.
- ``d_view`` (``train.d_augment``): D judges ``d_view(x)`` and ``d_view(fake)``, each image
  replaced by a changed copy with a probability that falls over the run (DiffAugment's idea). Q's
  info term reads the changed fakes and its term on real digits the changed reals from those two
  passes, instead of adding a pass each (``info_view`` and ``real_view`` are then unused): the D
  step does a textbook D step's work plus one forward pass without gradients for the plain reals'
  codes. The G step reads D and Q on fakes changed the same way. Needs ``joint_batch`` 0 and no
  continuous codes (those encode the very slant and size the changes alter).
- ``precision()`` is the context the forward passes run in (``hardware.autocast``: bf16 autocast,
  or nothing); the losses are computed in fp32 from the logits either way.
"""
from __future__ import annotations

import contextlib
import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Optional

import torch

from . import latents, losses, models, names
from .optim import Optimisers

# Real digits whose code Q gives with at least this probability teach Q their changed copies.
REAL_CONFIDENCE = 0.8
Images = Callable[[torch.Tensor], torch.Tensor]


def joint_share(tcfg) -> float:
    """``train_step``'s ``joint_batch`` for ``train.real_fake_batch`` (and ``train.joint_weight``)."""
    return {"separate": 0.0, "joint": 1.0}.get(tcfg.real_fake_batch, tcfg.joint_weight)


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


def seeking_codes(tcfg, c: torch.Tensor, step: int, steps_per_epoch: int) -> tuple[torch.Tensor, float]:
    """(codes, weight) of the mode-seeking term at iteration ``step``: from
    ``train.mode_seeking_after_epochs`` on, weight ``train.mode_seeking`` and the codes paired
    (``pair_codes``); before that, or with the term off, ``c`` as drawn and 0."""
    if not tcfg.mode_seeking or step < round(tcfg.mode_seeking_after_epochs * steps_per_epoch):
        return c, 0.0
    return pair_codes(c), float(tcfg.mode_seeking)


def mode_seeking_reward(fake: torch.Tensor, z: torch.Tensor, cap: float) -> torch.Tensor:
    """Mean over the pairs (i, i + n/2) of min(|G_i - G_j| / |z_i - z_j|, cap), each distance a mean
    absolute difference: how far G's images move per unit of z, where the pairs share a code."""
    half = fake.shape[0] // 2
    images = (fake[:half] - fake[half:2 * half]).abs().flatten(1).mean(1)
    noise = (z[:half] - z[half:2 * half]).abs().mean(1)
    return (images / noise).clamp(max=cap).mean()


@dataclass
class Batch:
    """What one step trains on: real images, the fake made from (z, c, u), the latents."""
    x: torch.Tensor
    fake: torch.Tensor
    c: torch.Tensor
    u: Optional[torch.Tensor]
    joint: float  # share of the adversarial losses on real and fake through D's batch norm as one batch
    z: Optional[torch.Tensor] = None
    plain_fake: Optional[torch.Tensor] = None  # G's images before D's instance noise

    def features(self, d: models.Discriminator, images: torch.Tensor) -> torch.Tensor:
        """D's trunk on [real; images] when any loss is joint, else on images alone; returns the
        features of images (what Q reads)."""
        if self.joint:
            return d.trunk(torch.cat([self.x, images]))[self.x.shape[0]:]
        return d.trunk(images)

    def views(self, d: models.Discriminator, images: torch.Tensor,
              real: bool) -> list[tuple[float, Optional[torch.Tensor], torch.Tensor, torch.Tensor,
                                        Optional[torch.Tensor]]]:
        """(weight, D's logits on the reals or None, on ``images``, the features of ``images``, of
        the reals or None) for the joint view and the separate one, each where its weight is above
        0; joint first."""
        out = []
        if self.joint:
            h = d.trunk(torch.cat([self.x, images]))
            logits = d.head(h).squeeze(1).float()
            n = self.x.shape[0]
            out.append((self.joint, logits[:n] if real else None, logits[n:], h[n:], h[:n] if real else None))
        if self.joint < 1:
            h_real = d.trunk(self.x) if real else None
            d_real = d.head(h_real).squeeze(1).float() if real else None
            h = d.trunk(images)
            out.append((1.0 - self.joint, d_real, d.head(h).squeeze(1).float(), h, h_real))
        return out


def train_step(g: models.Generator, d: models.Discriminator, opt: Optimisers, x: torch.Tensor,
               z: torch.Tensor, c: torch.Tensor, code_weight: float, g_loss_kind: str,
               info_trains_d_trunk: bool, joint_batch: float = 0.0, info_view: Optional[Images] = None,
               precision: Callable[[], ContextManager] = contextlib.nullcontext,
               d_input: Optional[Images] = None, u: Optional[torch.Tensor] = None,
               continuous_weight: float = 1.0, seeking: float = 0.0,
               seeking_cap: float = 0.2, real_view: Optional[Images] = None,
               real_weight: float = 0.0, d_view: Optional[Images] = None) -> dict[str, torch.Tensor]:
    """One InfoGAN iteration on real batch ``x`` with latents (z, c[, u]): the D step, then the G
    step (see the module's docstring for the options). Returns detached scalars, never logs."""
    with precision():
        plain = g(z, latents.one_hot(c, g.code_dim), u)
    x, fake = (x, plain) if d_input is None else (d_input(x), d_input(plain))
    batch = Batch(x, fake, c, u, float(joint_batch) if d.batch_norm else 0.0, z, plain)
    if d_view is None:
        stats = d_step(d, opt, batch, code_weight, continuous_weight, info_trains_d_trunk, info_view, precision,
                       real_view, real_weight)
    else:
        stats = shared_view_d_step(d, opt, batch, code_weight, info_trains_d_trunk, d_view, precision, real_weight)
        with precision():
            batch = dataclasses.replace(batch, fake=d_view(batch.fake))
    stats.update(g_step(g, d, opt, batch, code_weight, continuous_weight, g_loss_kind, precision,
                        seeking, seeking_cap))
    return {key: stats[key] for key in (*names.STEP_METRICS, names.LOSS_INFO_CONT, names.LOSS_INFO_REAL,
                                        names.MODE_SEEKING)
            if key in stats}


def d_step(d: models.Discriminator, opt: Optimisers, batch: Batch, code_weight: float, continuous_weight: float,
           info_trains_d_trunk: bool, info_view: Optional[Images], precision: Callable[[], ContextManager],
           real_view: Optional[Images] = None, real_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """D: real -> 1, fake -> 0; Q learns to read c back from the fake (openai/InfoGAN puts the info
    term in D's objective; ``info_trains_d_trunk`` decides whether it may shape D's trunk too) and,
    with ``real_weight`` > 0, to give changed real digits the codes it gives the plain ones."""
    fake, c, u = batch.fake.detach(), batch.c, batch.u
    with precision():
        views = batch.views(d, fake, real=True)
        _, d_real, d_fake, h_fake, h_real = views[0]
        h_plain = h_fake if info_trains_d_trunk else h_fake.detach()
        h_view = h_plain
        if info_view is not None:
            h_view = batch.features(d, info_view(fake))
            h_view = h_view if info_trains_d_trunk else h_view.detach()
        q_logits, q_means = d.read_codes(h_view)
        if u is not None and info_view is not None:
            q_means = d.read_codes(h_plain)[1]
        if real_weight > 0:  # Q's codes for the plain reals (the targets) and for changed copies
            plain_logits = d.read_codes(h_real.detach())[0]
            h_changed = batch.features(d, real_view(batch.x))
            changed_logits = d.read_codes(h_changed if info_trains_d_trunk else h_changed.detach())[0]
    loss_d = sum(weight * losses.d_loss(on_real, on_fake) for weight, on_real, on_fake, *_ in views)
    info_d = losses.info_loss(q_logits.float(), c)
    if u is not None:
        info_d = info_d + continuous_weight * losses.info_loss_continuous(q_means.float(), u)
    total = loss_d + code_weight * info_d
    stats = {}
    if real_weight > 0:
        stats[names.LOSS_INFO_REAL] = losses.pseudo_label_loss(changed_logits, plain_logits, REAL_CONFIDENCE)
        total = total + real_weight * stats[names.LOSS_INFO_REAL]
    return update_d(opt, total, stats, loss_d, d_real, d_fake)


def shared_view_d_step(d: models.Discriminator, opt: Optimisers, batch: Batch, code_weight: float,
                       info_trains_d_trunk: bool, d_view: Images, precision: Callable[[], ContextManager],
                       real_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """D under ``train.d_augment``: real -> 1 and fake -> 0 on ``d_view`` of each batch; Q reads c
    back from the changed fakes and, with ``real_weight`` > 0, gives the changed reals the codes it
    gives the plain ones, all from the same two passes of D's trunk."""
    if batch.joint or batch.u is not None:
        raise ValueError("d_view needs real and fake normalised apart (joint_batch 0) and no continuous codes")
    fake, c, x = batch.fake.detach(), batch.c, batch.x
    with precision():
        h_real, h_fake = d.trunk(d_view(x)), d.trunk(d_view(fake))
        d_real, d_fake = d.head(h_real).squeeze(1).float(), d.head(h_fake).squeeze(1).float()
        if not info_trains_d_trunk:
            h_real, h_fake = h_real.detach(), h_fake.detach()
        q_logits = d.read_codes(h_fake)[0]
        if real_weight > 0:
            changed_logits = d.read_codes(h_real)[0]
            with torch.no_grad():
                plain_logits = d.read_codes(d.trunk(x))[0]
    loss_d = losses.d_loss(d_real, d_fake)
    total = loss_d + code_weight * losses.info_loss(q_logits.float(), c)
    stats = {}
    if real_weight > 0:
        stats[names.LOSS_INFO_REAL] = losses.pseudo_label_loss(changed_logits, plain_logits, REAL_CONFIDENCE)
        total = total + real_weight * stats[names.LOSS_INFO_REAL]
    return update_d(opt, total, stats, loss_d, d_real, d_fake)


def update_d(opt: Optimisers, total: torch.Tensor, stats: dict, loss_d: torch.Tensor, d_real: torch.Tensor,
             d_fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """One update of D and Q on ``total``; returns ``stats`` with D's loss and mean probabilities
    added, detached."""
    opt.d.zero_grad(set_to_none=True)
    opt.q.zero_grad(set_to_none=True)
    total.backward()
    opt.d.step()
    opt.q.step()
    stats.update({names.LOSS_D: loss_d, names.PROB_D_REAL: torch.sigmoid(d_real).mean(),
                  names.PROB_D_FAKE_BEFORE_G: torch.sigmoid(d_fake).mean()})
    return {key: value.detach() for key, value in stats.items()}


def g_step(g: models.Generator, d: models.Discriminator, opt: Optimisers, batch: Batch, code_weight: float,
           continuous_weight: float, g_loss_kind: str, precision: Callable[[], ContextManager],
           seeking: float = 0.0, seeking_cap: float = 0.2) -> dict[str, torch.Tensor]:
    """G: fool the updated D, and make c recoverable by Q; D and Q stay fixed here. With
    ``seeking`` > 0, G is also rewarded for images that differ where z does (``mode_seeking_reward``)."""
    with frozen(d):
        with precision():
            views = batch.views(d, batch.fake, real=False)
            _, _, d_fake_after, h, _ = views[0]
            q_logits, q_means = d.read_codes(h)
        loss_g = sum(weight * losses.g_loss(on_fake, g_loss_kind) for weight, _, on_fake, *_ in views)
        loss_info = losses.info_loss(q_logits.float(), batch.c)
        info_g = loss_info
        if batch.u is not None:
            loss_info_cont = losses.info_loss_continuous(q_means.float(), batch.u)
            info_g = loss_info + continuous_weight * loss_info_cont
        total = loss_g + code_weight * info_g
        if seeking > 0:
            reward = mode_seeking_reward(batch.plain_fake.float(), batch.z, seeking_cap)
            total = total - seeking * reward
        opt.g.zero_grad(set_to_none=True)
        total.backward()
        # How much G is told to change: where the saturating loss's gradient vanishes, this shows it.
        g_norm = torch.nn.utils.get_total_norm([p.grad for p in g.parameters() if p.grad is not None])
        opt.g.step()
    stats = {names.LOSS_G: loss_g.detach(), names.LOSS_INFO: loss_info.detach(),
             names.PROB_D_FAKE_AFTER_G: torch.sigmoid(d_fake_after.detach()).mean(),
             names.GRAD_G_NORM: g_norm.detach()}
    if batch.u is not None:
        stats[names.LOSS_INFO_CONT] = loss_info_cont.detach()
    if seeking > 0:
        stats[names.MODE_SEEKING] = reward.detach()
    return stats


def step_metrics(cfg) -> tuple[str, ...]:
    """The names of the scalars a training step logs under this config, in logging order."""
    return (names.STEP_METRICS + ((names.LOSS_INFO_CONT,) if cfg.model.continuous_codes else ())
            + ((names.LOSS_INFO_REAL,) if cfg.train.real_consistency else ())
            + ((names.MODE_SEEKING,) if cfg.train.mode_seeking else ()))


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
        if state["sums"] is not None and state["sums"].shape[0] != len(self.keys):
            return  # saved before a metric was added: the interval's next point averages fewer steps
        self.sums = None if state["sums"] is None else state["sums"].to(device)
        self.count = state["count"]


