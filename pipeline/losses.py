"""Pure loss functions on logits: the adversarial variants and the info term.

All are written with log-sigmoid / softplus identities, so they stay finite for any logit:
log D = log sigmoid(l) = -softplus(-l) and log(1 - D) = -softplus(l).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Classical D loss: BCE(real, 1) + BCE(fake, 0) = -log D(x) - log(1 - D(G(z, c)))."""
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def g_loss_non_saturating(d_fake: torch.Tensor) -> torch.Tensor:
    """-log D(G(z, c)): strong gradients while D confidently rejects the fakes."""
    return F.softplus(-d_fake).mean()


def g_loss_saturating(d_fake: torch.Tensor) -> torch.Tensor:
    """log(1 - D(G(z, c))), the original minimax objective; its gradient vanishes as D(G) -> 0."""
    return -F.softplus(d_fake).mean()


G_LOSSES = {"non_saturating": g_loss_non_saturating, "saturating": g_loss_saturating}


def g_loss(d_fake: torch.Tensor, kind: str) -> torch.Tensor:
    return G_LOSSES[kind](d_fake)


def info_loss(q_logits: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of Q(c | G(z, c)) against the sampled code indices c.

    H(c) minus this is the variational lower bound on I(c; G(z, c)) that InfoGAN maximises.
    """
    return F.cross_entropy(q_logits, c)


def info_loss_continuous(means: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The continuous codes' info term: the negative log-likelihood of u [B, K] under Q's
    Gaussians N(means, 1) without its constant, 1/2 (u - mean)^2 summed over the K codes and
    averaged over the batch (openai/InfoGAN's fixed-std continuous codes)."""
    return 0.5 * (u - means).pow(2).sum(dim=1).mean()


def pseudo_label_loss(view_logits: torch.Tensor, plain_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Cross-entropy of Q's logits on changed copies of images against the code Q gives the
    plain images, counting only images where that code's probability is at least ``threshold``
    (FixMatch's pseudo-labels); averaged over the whole batch, so it is 0 while Q is unsure.
    Computed in fp32 whatever precision the logits come in."""
    confidence, code = torch.softmax(plain_logits.detach().float(), dim=1).max(dim=1)
    per_image = F.cross_entropy(view_logits.float(), code, reduction="none")
    return (per_image * (confidence >= threshold)).mean()
