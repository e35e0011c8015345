"""The only place that samples the generator's inputs: noise z, the categorical code c, the
continuous codes u, the fixed grid and the traversals."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sample(batch_size: int, noise_dim: int, code_dim: int, generator: torch.Generator,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """z ~ N(0, I) of shape [B, noise_dim]; c ~ uniform over code values, as indices [B]."""
    z = torch.randn(batch_size, noise_dim, generator=generator, device=device)
    c = torch.randint(code_dim, (batch_size,), generator=generator, device=device)
    return z, c


def continuous(batch_size: int, n_codes: int, generator: torch.Generator,
               device: torch.device) -> torch.Tensor | None:
    """The continuous codes u ~ U(-1, 1) of shape [B, n_codes]; None (and no draw from
    ``generator``, so runs without them are unchanged) when ``n_codes`` is 0."""
    if n_codes == 0:
        return None
    return torch.rand(batch_size, n_codes, generator=generator, device=device) * 2.0 - 1.0


TRAVERSAL_VALUES = torch.linspace(-2.0, 2.0, 9)  # beyond the training range U(-1, 1), as the paper shows


def traversal_inputs(noise: torch.Tensor, codes: torch.Tensor, n_codes: int, index: int,
                     values: torch.Tensor = TRAVERSAL_VALUES) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One row per entry of ``codes`` (categorical code values), one column per entry of
    ``values`` for continuous code ``index``; the other continuous codes stay 0 and every cell
    has the same noise vector ``noise`` [noise_dim]. Row-major: z [R * V, noise_dim], c [R * V],
    u [R * V, n_codes]."""
    rows, cols = codes.shape[0], values.shape[0]
    z = noise.reshape(1, -1).expand(rows * cols, -1)
    c = codes.repeat_interleave(cols)
    u = torch.zeros(rows * cols, n_codes, device=noise.device)
    u[:, index] = values.to(noise.device).repeat(rows)
    return z, c.to(noise.device), u


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
