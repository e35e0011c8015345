"""Random small changes of image batches that keep a digit's identity: affine transforms
(rotation, isotropic scaling, shift) and thicker or thinner strokes; and the views the training
step takes from them (Q's: ``q_view`` of a fake, ``real_q_view`` of a real digit; D's under
``train.d_augment``: ``d_view``).

Differentiable (``grid_sample``), so gradients reach whatever made the images: the reference
classifier trains on them, and InfoGAN's info term can read the code back from transformed
fakes (``train.info_augment``).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


# Q's view of a fake under train.info_augment: digits keep their identity under these.
INFO_AUGMENT = {"max_degrees": 15.0, "max_scale": 0.15, "max_shift_px": 2.0}
# Q's view of a real digit under train.real_consistency: the same, and strokes up to half a 3x3
# dilation thicker or erosion thinner (about half a pixel either way).
REAL_STROKE_BLEND = 0.5


def random_affine(x: torch.Tensor, generator: torch.Generator, max_degrees: float, max_scale: float,
                  max_shift_px: float) -> torch.Tensor:
    """Each image of ``x`` [B, C, H, W] rotated by up to ``max_degrees``, scaled by up to
    ``max_scale`` (a fraction) and shifted by up to ``max_shift_px`` pixels, uniformly at random;
    the random numbers come from ``generator`` (on its own device)."""
    b, h = x.shape[0], x.shape[-1]

    def uniform(*shape: int) -> torch.Tensor:  # in [-1, 1)
        return (torch.rand(*shape, generator=generator, device=generator.device) * 2 - 1).to(x.device)

    angle = uniform(b) * math.radians(max_degrees)
    scale = 1 + uniform(b) * max_scale
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = scale * angle.cos()
    theta[:, 0, 1] = -scale * angle.sin()
    theta[:, 1, 0] = scale * angle.sin()
    theta[:, :, 2] = uniform(b, 2) * (2 * max_shift_px / h)  # grid units: the image spans [-1, 1]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def random_stroke_width(x: torch.Tensor, generator: torch.Generator, max_blend: float) -> torch.Tensor:
    """Each image of ``x`` (bright strokes on a dark ground) blended towards its 3x3 dilation
    (thicker strokes) or erosion (thinner) by a weight drawn uniformly from [-max_blend,
    max_blend]; max_blend 1 is about one pixel of stroke width either way."""
    weight = (torch.rand(x.shape[0], generator=generator, device=generator.device) * 2 - 1).to(x.device)
    weight = (weight * max_blend).view(-1, 1, 1, 1).to(x.dtype)
    thicker, thinner = dilate3(x), -dilate3(-x)
    return x + weight.clamp(min=0) * (thicker - x) + (-weight).clamp(min=0) * (thinner - x)


def dilate3(x: torch.Tensor) -> torch.Tensor:
    """Each pixel of ``x`` [B, C, H, W] replaced by the largest in its 3x3 neighbourhood: a 3x3 max
    pool with stride 1. Where no gradient is needed (real digits, detached fakes) as the maximum
    of shifted copies, the same values about 10x faster than PyTorch's max pool on one-channel
    images on a CPU; where one is, the max pool, whose backward is the faster of the two."""
    if torch.is_grad_enabled() and x.requires_grad:
        return F.max_pool2d(x, 3, stride=1, padding=1)
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    rows = torch.maximum(torch.maximum(padded[..., 0:h, :], padded[..., 1:h + 1, :]), padded[..., 2:h + 2, :])
    return torch.maximum(torch.maximum(rows[..., 0:w], rows[..., 1:w + 1]), rows[..., 2:w + 2])


def q_view(rng: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """The copy of a fake Q reads its code from under ``train.info_augment`` (``plan``), drawing from ``rng``."""
    return lambda images: random_affine(images, rng, **INFO_AUGMENT)


def real_q_view(rng: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """The changed copy of a real digit Q learns on under ``train.real_consistency``, drawing from ``rng``."""
    return lambda images: random_stroke_width(random_affine(images, rng, **INFO_AUGMENT), rng, REAL_STROKE_BLEND)


def d_view(rng: torch.Generator, share: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """What D judges of a batch under ``train.d_augment`` (``plan``): each image replaced, with
    probability ``share``, by a copy changed as ``real_q_view`` changes real digits."""
    change = real_q_view(rng)

    def view(images: torch.Tensor) -> torch.Tensor:
        draw = torch.rand(images.shape[0], generator=rng, device=rng.device).to(images.device)
        return torch.where((draw >= share).view(-1, 1, 1, 1), images, change(images))

    return view
