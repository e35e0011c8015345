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


def mnist_style(pixels: np.ndarray, ink: float = 0.1) -> np.ndarray:
    """A drawing (grey [H, W] in [0, 1], a light digit on dark) made the size and place of an
    MNIST digit, as MNIST's were made: the box around the ink scaled, keeping its aspect, to 20
    pixels on its longer side, put in a 28 x 28 field with its centre of mass at pixel (14, 14).
    Returns float32 [28, 28] in [0, 1]; ValueError when nothing is drawn."""
    from PIL import Image
    from scipy import ndimage

    pixels = np.asarray(pixels, dtype=np.float64)
    rows, cols = np.nonzero(pixels > ink)
    if rows.size == 0:
        raise ValueError("the drawing is empty: draw a digit (light on dark) first")
    box = pixels[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = 20.0 / max(box.shape)
    width, height = max(1, round(box.shape[1] * scale)), max(1, round(box.shape[0] * scale))
    small = Image.fromarray((box * 255).round().astype(np.uint8)).resize((width, height), Image.Resampling.LANCZOS)
    field = np.zeros((28, 28))
    top, left = (28 - height) // 2, (28 - width) // 2
    field[top:top + height, left:left + width] = np.asarray(small, dtype=np.float64) / 255.0
    centre = np.asarray(ndimage.center_of_mass(field))
    # MNIST's digits have their centre of mass at pixel (14, 14) (the test set's mean: 13.99, 14.01).
    field = ndimage.shift(field, np.round(14.0 - centre), order=0, mode="constant")
    return field.clip(0, 1).astype(np.float32)
