"""Image batches to grids that MLflow and PNG files take."""
from __future__ import annotations

import numpy as np
import torch
from torchvision.utils import make_grid


def grid_array(images: torch.Tensor, nrow: int, padding: int = 2) -> np.ndarray:
    """[N, 1, H, W] images in [0, 1] -> an HxWx3 uint8 grid, ``nrow`` images per row."""
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=0.5)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
