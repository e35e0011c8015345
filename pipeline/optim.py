"""The optimisers and what changes over a run: the learning-rate schedule, G's moving average,
D's instance noise, and the share of changed images D judges (``train.d_augment``). Functions of
the step count, so a resumed run continues each schedule where it stopped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch.optim.swa_utils import AveragedModel

from . import models


@dataclass
class Optimisers:
    d: torch.optim.Optimizer  # D's trunk and head
    q: torch.optim.Optimizer  # Q's head
    g: torch.optim.Optimizer

    def state_dict(self) -> dict:
        return {"d": self.d.state_dict(), "q": self.q.state_dict(), "g": self.g.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Loads a checkpoint's state, keeping this machine's choice of Adam kernel (a checkpoint
        written with fused Adam resumes where the fused kernel is missing, and the reverse)."""
        for optimiser, key in ((self.d, "d"), (self.q, "q"), (self.g, "g")):
            kernels = [(group["fused"], group["foreach"]) for group in optimiser.param_groups]
            optimiser.load_state_dict(state[key])
            for group, (fused, foreach) in zip(optimiser.param_groups, kernels):
                group["fused"], group["foreach"] = fused, foreach


# Devices with PyTorch's fused Adam kernel: one kernel over all of a model's parameters instead of
# several per tensor (the default); the same update, about 1.2x the whole step on a 2-core CPU.
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def make_optimisers(g: models.Generator, d: models.Discriminator, tcfg) -> Optimisers:
    betas = (tcfg.beta1, tcfg.beta2)
    d_params = [*d.trunk.parameters(), *d.head.parameters()]
    fused = next(g.parameters()).device.type in FUSED_ADAM_DEVICES or None

    def adam(params, lr: float) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused)

    return Optimisers(d=adam(d_params, tcfg.lr_d), q=adam(d.q.parameters(), tcfg.lr_q), g=adam(g.parameters(), tcfg.lr_g))


def lr_scale(step: int, total_steps: int, decay_steps: int) -> float:
    """The factor on every base learning rate for the iteration after ``step`` completed ones:
    1, then over the last ``decay_steps`` iterations a linear fall that reaches 1/decay_steps on
    the last one. A function of the step alone, so a resumed run continues the schedule."""
    if decay_steps <= 0:
        return 1.0
    return min(1.0, (total_steps - step) / decay_steps)


def decay_steps_of(tcfg, total_steps: int) -> int:
    """How many of ``total_steps`` iterations the learning-rate decay spans."""
    return round(tcfg.lr_decay_fraction * total_steps)


def set_lr_scale(opt: Optimisers, rates: tuple[float, float, float], scale: float) -> None:
    """Every learning rate at ``scale`` times its base rate (``rates``: D's, Q's, G's)."""
    for optimiser, base in zip((opt.d, opt.q, opt.g), rates):
        for group in optimiser.param_groups:
            group["lr"] = base * scale


def instance_noise_std(step: int, total_steps: int, start: float) -> float:
    """The standard deviation of the noise added to D's inputs at ``step``: ``start`` at step 0,
    falling linearly to 0 at the end of training."""
    return start * max(0.0, 1.0 - step / max(total_steps, 1))


def noisy(std: float, rng: torch.Generator) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """Adds N(0, std^2) noise drawn from ``rng`` to a batch of images; None when std is 0."""
    if std <= 0:
        return None
    return lambda images: images + std * torch.randn(images.shape, generator=rng, device=images.device,
                                                     dtype=images.dtype)


def averaged(net: torch.nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``net``'s weights and buffers (torch's AveragedModel;
    call ``update_parameters(net)`` after each step, read ``.module``). After n updates the decay
    is min(decay, (1 + n) / (10 + n)), so early on the average follows the network closely
    instead of dragging the random initial weights along."""

    @torch.no_grad()
    def update(average: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        if not torch.is_floating_point(average[0]):  # batch norm's step counters
            for a, c in zip(average, current):
                a.copy_(c)
            return
        weight = 1.0 - torch.clamp((1.0 + n) / (10.0 + n), max=decay)  # stays on the device
        torch._foreach_lerp_(average, current, weight)

    return AveragedModel(net, multi_avg_fn=update, use_buffers=True)


def changed_share(step: int, total_steps: int, floor: float) -> float:
    """The probability that D judges a changed copy of an image at ``step`` under
    ``train.d_augment``: 1 at the first step, falling linearly by 1/total_steps per step, and
    ``floor`` from where it would go lower (80% into the run at the default floor 0.2). The codes
    form while D sees mostly changed digits; D then sees more and more plain ones, so G learns to
    draw clean strokes."""
    return max(floor, 1.0 - step / max(total_steps, 1))
