"""Exact values and gradients of the pure loss functions."""
import math

import pytest
import torch
from torch.testing import assert_close

from pipeline import losses


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_d_loss_is_bce_real_one_fake_zero():
    d_real, d_fake = torch.tensor([0.0, 2.0]), torch.tensor([-1.0, 1.0])
    expected = (-(log_sigmoid(0) + log_sigmoid(2)) / 2
                - (math.log(1 - 1 / (1 + math.exp(1))) + math.log(1 - 1 / (1 + math.exp(-1)))) / 2)
    assert_close(losses.d_loss(d_real, d_fake), torch.tensor(expected))
    assert_close(losses.d_loss(d_real, d_fake), torch.tensor(1.2232998), atol=1e-6, rtol=0)


def test_g_losses_hand_values():
    d_fake = torch.tensor([-1.0, 1.0])
    # -log D(G): D = sigmoid(l)
    assert_close(losses.g_loss(d_fake, "non_saturating"), torch.tensor((1.3132617 + 0.3132617) / 2))
    # log(1 - D(G))
    assert_close(losses.g_loss(d_fake, "saturating"), torch.tensor(-(0.3132617 + 1.3132617) / 2))


def test_info_loss_is_cross_entropy_of_code():
    q_logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    c = torch.tensor([0, 2])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(3)) / 2
    assert_close(losses.info_loss(q_logits, c), torch.tensor(expected))


@pytest.mark.parametrize("kind", ["non_saturating", "saturating"])
def test_losses_stay_finite_for_extreme_logits(kind):
    logits = torch.tensor([-1000.0, 1000.0], requires_grad=True)
    loss = losses.g_loss(logits, kind) + losses.d_loss(logits, logits)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_saturating_gradient_vanishes_where_non_saturating_does_not():
    # The reason the non-saturating loss is the default: early on D rejects fakes (logit << 0).
    logit = torch.tensor([-8.0], requires_grad=True)
    (g_sat,) = torch.autograd.grad(losses.g_loss(logit, "saturating"), logit)
    (g_ns,) = torch.autograd.grad(losses.g_loss(logit, "non_saturating"), logit)
    assert abs(g_sat.item()) < 1e-3 < 0.99 < abs(g_ns.item())
