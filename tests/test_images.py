"""Sample grids: the same pixels as torchvision's make_grid, without importing torchvision."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.images import grid_array


@pytest.mark.parametrize("n, nrow, padding", [(2, 10, 2), (100, 10, 2), (7, 3, 2), (10, 10, 0), (12, 5, 1), (90, 9, 2)])
def test_grid_matches_torchvision_make_grid(n, nrow, padding):
    from torchvision.utils import make_grid

    images = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(n)) * 1.2 - 0.1  # some out of [0, 1]
    expected = make_grid(images.clamp(0, 1), nrow=nrow, padding=padding, pad_value=0.5)
    expected = (expected.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    got = grid_array(images, nrow, padding)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
