"""Image batches to grids that MLflow and PNG files take."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def grid_array(images: torch.Tensor, nrow: int, padding: int = 2) -> np.ndarray:
    """[N, 1, H, W] images in [0, 1] -> an HxWx3 uint8 grid, ``nrow`` images per row, mid-grey
    between them and in the empty cells of a last row that is not full. The same pixels as
    ``torchvision.utils.make_grid(..., pad_value=0.5)`` for two or more images (a test checks);
    written here because importing torchvision costs every command about 2.6 s on a 2-core CPU."""
    x = images.detach().float().cpu().clamp(0, 1)[:, 0]
    n, h, w = x.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    cells = F.pad(x, (0, padding, 0, padding), value=0.5)  # each image with its right and bottom gap
    cells = torch.cat([cells, torch.full((rows * cols - n, h + padding, w + padding), 0.5)])
    grid = cells.reshape(rows, cols, h + padding, w + padding).permute(0, 2, 1, 3)
    grid = F.pad(grid.reshape(rows * (h + padding), cols * (w + padding)), (padding, 0, padding, 0), value=0.5)
    return np.repeat((grid.numpy() * 255).round().astype(np.uint8)[:, :, None], 3, axis=2)
