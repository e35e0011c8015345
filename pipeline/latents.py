"""The only place that samples the generator's inputs: noise z, the categorical code c, the fixed grid."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sample(batch_size: int, noise_dim: int, code_dim: int, generator: torch.Generator,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """z ~ N(0, I) of shape [B, noise_dim]; c ~ uniform over code values, as indices [B]."""
    z = torch.randn(batch_size, noise_dim, generator=generator, device=device)
    c = torch.randint(code_dim, (batch_size,), generator=generator, device=device)
    return z, c


def one_hot(c: torch.Tensor, code_dim: int) -> torch.Tensor:
    return F.one_hot(c, code_dim).to(torch.float32)


def fixed_noise(n_styles: int, noise_dim: int, seed: int) -> torch.Tensor:
    """The run's fixed noise vectors [n_styles, noise_dim]: drawn once, saved with the run."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n_styles, noise_dim, generator=generator)


def grid_inputs(noise: torch.Tensor, code_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every code value with every noise vector, code-major: row k of the grid is code k.

    Returns z [code_dim * n_styles, noise_dim] and c [code_dim * n_styles].
    """
    n_styles = noise.shape[0]
    z = noise.repeat(code_dim, 1)
    c = torch.arange(code_dim, device=noise.device).repeat_interleave(n_styles)
    return z, c
