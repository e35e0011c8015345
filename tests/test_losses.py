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


def test_pseudo_label_loss_counts_only_confident_images_and_trains_only_the_view():
    # image 0: Q gives code 1 with probability e^3 / (e^3 + 2) = 0.91; image 1: unsure (1/3 each)
    plain = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    view = torch.tensor([[1.0, 0.0, 0.0], [5.0, 0.0, 0.0]], requires_grad=True)
    loss = losses.pseudo_label_loss(view, plain, threshold=0.8)
    expected = -math.log(1 / (math.e + 2)) / 2  # image 0's cross-entropy against code 1, over both images
    assert_close(loss, torch.tensor(expected))
    loss.backward()
    assert plain.grad is None  # the plain images' codes are targets, never trained towards the view
    assert view.grad[1].abs().sum() == 0 and view.grad[0].abs().sum() > 0
    assert losses.pseudo_label_loss(view, plain, threshold=0.95) == 0


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
