"""G, the shared D trunk, the D head and the Q head, for the three architectures. Pure modules.

- ``tconv``: the lab handout's network (transposed convolutions + batch norm).
- ``upsample_sn``: the same sizes, with resize+convolution in G and spectral norm in D.
- ``paper``: the InfoGAN paper's MNIST network (Chen et al. 2016, appendix C.1): wider fully
  connected layers (1024), 4x4 transposed convolutions, batch norm in Q. Measured on a 2-core CPU
  it disentangles the digits several times faster than the handout's network, so it is the default.

Layers that act on a 1x1 map (the first two transposed convolutions of G, the 7x7 convolution
that ends D's trunk) are written as ``nn.Linear``: the same function with the same parameter
count, about 1.25x faster on a CPU. ``literal=True`` builds them as the handout's convolutions
instead (used by the benchmark's textbook loop and by the test that proves the two equal).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from . import compat

G_SLOPE = 0.01  # LeakyReLU slopes of the lab handout
D_SLOPE = 0.1


def _g_act() -> nn.Module:
    return nn.LeakyReLU(G_SLOPE, inplace=True)


def _d_act() -> nn.Module:
    return nn.LeakyReLU(D_SLOPE, inplace=True)


def _paper_g(in_dim: int, literal: bool) -> nn.Sequential:
    relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
    return nn.Sequential(
        nn.Linear(in_dim, 1024, bias=False), nn.BatchNorm1d(1024), relu(),
        nn.Linear(1024, 128 * 7 * 7, bias=False), nn.BatchNorm1d(128 * 7 * 7), relu(),
        nn.Unflatten(1, (128, 7, 7)),
        nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1, bias=False),  # 7 -> 14
        nn.BatchNorm2d(64), relu(),
        nn.ConvTranspose2d(64, 1, 4, stride=2, padding=1),  # 14 -> 28
        nn.Sigmoid(),
    )


def _handout_stem(in_dim: int, literal: bool) -> list[nn.Module]:
    """The handout's G up to its 256 x 4 x 4 map (shared by ``tconv`` and ``upsample_sn``)."""
    if literal:
        stem = [nn.Unflatten(1, (in_dim, 1, 1)),
                nn.ConvTranspose2d(in_dim, 512, 1, bias=False), nn.BatchNorm2d(512), _g_act(),
                nn.ConvTranspose2d(512, 256, 4, bias=False)]
    else:
        stem = [nn.Linear(in_dim, 512, bias=False), nn.BatchNorm1d(512), _g_act(),
                nn.Linear(512, 256 * 4 * 4, bias=False), nn.Unflatten(1, (256, 4, 4))]
    return stem + [nn.BatchNorm2d(256), _g_act()]


def _tconv_g(in_dim: int, literal: bool) -> nn.Sequential:
    stem = _handout_stem(in_dim, literal)
    body = [
        nn.ConvTranspose2d(256, 128, 5, stride=2, padding=2, bias=False),  # 4 -> 7
        nn.BatchNorm2d(128), _g_act(),
        nn.ConvTranspose2d(128, 64, 2, stride=2, bias=False),  # 7 -> 14
        nn.BatchNorm2d(64), _g_act(),
        nn.ConvTranspose2d(64, 1, 2, stride=2),  # 14 -> 28
    ]
    return nn.Sequential(*stem, *body, nn.Sigmoid())


def _upsample_g(in_dim: int, literal: bool) -> nn.Sequential:
    stem = _handout_stem(in_dim, literal)
    # Resize, then convolve: every output pixel sees the same number of kernel taps, so there is
    # no checkerboard pattern from uneven overlap.
    body = [
        nn.Upsample(size=(7, 7), mode="bilinear", align_corners=False),
        nn.Conv2d(256, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), _g_act(),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(128, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), _g_act(),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(64, 1, 3, padding=1),
    ]
    return nn.Sequential(*stem, *body, nn.Sigmoid())


class DParts(NamedTuple):
    trunk: nn.Module
    head: nn.Module
    q: nn.Module
    batch_norm: bool  # one sample's features depend on the rest of its batch


def _paper_d(q_hidden: int, q_out: int, literal: bool) -> DParts:
    trunk = nn.Sequential(
        nn.Conv2d(1, 64, 4, stride=2, padding=1), _d_act(),  # 28 -> 14
        nn.Conv2d(64, 128, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(128), _d_act(),  # -> 7
        nn.Flatten(), nn.Linear(128 * 7 * 7, 1024, bias=False), nn.BatchNorm1d(1024), _d_act(),
    )
    head = nn.Linear(1024, 1)
    q = nn.Sequential(nn.Linear(1024, q_hidden, bias=False), nn.BatchNorm1d(q_hidden), _d_act(),
                      nn.Linear(q_hidden, q_out))
    return DParts(trunk, head, q, True)


def _handout_d(q_hidden: int, q_out: int, literal: bool, sn: bool) -> DParts:
    """The handout's D: batch norm (``tconv``), or spectral norm and no batch norm (``upsample_sn``)."""
    if sn:
        norm = spectral_norm
        bn2 = bn1 = lambda n: nn.Identity()  # noqa: E731
    else:
        norm = lambda m: m  # noqa: E731  (batch norm follows instead)
        bn2, bn1 = nn.BatchNorm2d, nn.BatchNorm1d
    # The spectrally normalised trunk has no biases: its pre-activations are a few hundredths
    # wide, biases that Adam moves by about the learning rate each step soon reach that size, and
    # most of the last layer's units then stay on or off for every image (88-99% on the fakes):
    # a D nearly linear in its input, which sees little but the mean image (docs/design.md).
    # Without biases each layer is positively homogeneous, so its units switch at any scale.
    # (In the batch-norm trunk, batch norm's shift is the bias.)
    trunk = [
        norm(nn.Conv2d(1, 64, 4, stride=2, padding=1, bias=not sn)), _d_act(),  # 28 -> 14
        norm(nn.Conv2d(64, 128, 4, stride=2, padding=1, bias=False)),  # 14 -> 7
        bn2(128), _d_act(),
    ]
    if literal:
        trunk += [norm(nn.Conv2d(128, 256, 7, bias=False)), bn2(256), _d_act(), nn.Flatten()]
    else:
        trunk += [nn.Flatten(), norm(nn.Linear(128 * 7 * 7, 256, bias=False)), bn1(256), _d_act()]
    head = norm(nn.Linear(256, 1))
    if sn:
        # Spectral norm leaves the trunk's features about 1000x smaller than batch norm does (std
        # ~0.003 at the start): Q's logits stayed at 0 and its loss at ln 10 for epochs. The
        # InfoGAN paper's Q normalises its hidden layer; so does this variant's.
        q = nn.Sequential(nn.Linear(256, q_hidden, bias=False), nn.BatchNorm1d(q_hidden), _d_act(),
                          nn.Linear(q_hidden, q_out))
    else:
        q = nn.Sequential(nn.Linear(256, q_hidden), _d_act(), nn.Linear(q_hidden, q_out))
    return DParts(nn.Sequential(*trunk), head, q, not sn)


# ``model.arch`` -> (G's network, D's parts): the one place the names become layers.
ARCHITECTURES: dict[str, tuple[Callable[..., nn.Sequential], Callable[..., DParts]]] = {
    "paper": (_paper_g, _paper_d),
    "tconv": (_tconv_g, functools.partial(_handout_d, sn=False)),
    "upsample_sn": (_upsample_g, functools.partial(_handout_d, sn=True)),
}


def d_has_batch_norm(arch: str) -> bool:
    """Whether ``arch``'s D normalises a batch (one image's features then depend on the rest)."""
    with torch.device("meta"):  # no memory, and no draw from the random generators
        return _architecture(arch)[1](q_hidden=2, q_out=2, literal=False).batch_norm


def _architecture(arch: str):
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


class Generator(nn.Module):
    """G(z, c, u): noise [B, noise_dim], one-hot code [B, code_dim] and, with ``continuous_codes``,
    the continuous codes [B, continuous_codes] -> images [B, 1, 28, 28] in [0, 1]."""

    continuous_codes = 0  # also what a generator pickled before continuous codes existed has

    def __init__(self, noise_dim: int, code_dim: int, arch: str, literal: bool = False,
                 continuous_codes: int = 0):
        super().__init__()
        self.noise_dim, self.code_dim, self.arch = noise_dim, code_dim, arch
        self.continuous_codes = continuous_codes
        self.net = _architecture(arch)[0](noise_dim + code_dim + continuous_codes, literal)

    def forward(self, z: torch.Tensor, c: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """``u`` None means every continuous code at 0, the middle of its range."""
        if self.continuous_codes:
            if u is None:
                u = z.new_zeros(z.shape[0], self.continuous_codes)
            return self.net(torch.cat([z, c, u], dim=1))
        return self.net(torch.cat([z, c], dim=1))


class Discriminator(nn.Module):
    """The shared trunk with two heads: D's real/fake logit and Q. Q's last layer gives the code
    logits and, with ``continuous_codes``, the means of Q's Gaussians over those codes."""

    continuous_codes = 0

    def __init__(self, code_dim: int, arch: str, q_hidden: int = 128, literal: bool = False,
                 continuous_codes: int = 0):
        super().__init__()
        self.code_dim, self.arch, self.q_hidden = code_dim, arch, q_hidden
        self.continuous_codes = continuous_codes
        parts = _architecture(arch)[1](q_hidden, code_dim + continuous_codes, literal)
        self.trunk, self.head, self.q = parts.trunk, parts.head, parts.q
        # With batch norm, one sample's features depend on the rest of its batch (see
        # step.train_step and train.real_fake_batch).
        self.batch_norm = parts.batch_norm
        # The trunk in two parts sharing its layers: up to its first batch norm, where each
        # image's output depends on that image alone, and the rest (a tuple, so the layers are
        # not registered twice and the state dict keeps the trunk's keys).
        depth = next((i for i, m in enumerate(self.trunk) if isinstance(m, nn.modules.batchnorm._BatchNorm)),
                     len(self.trunk))
        self.trunk_parts = (self.trunk[:depth], self.trunk[depth:])

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's, with a one-line error for a state today's D cannot hold
        (``compat.check_discriminator_state``)."""
        if strict:
            compat.check_discriminator_state(self.arch, state_dict, self.state_dict())
        return super().load_state_dict(state_dict, strict, assign)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's layers before its first batch norm: what they give an image does not depend
        on the other images of its batch."""
        return self.trunk_parts[0](x)

    def rest(self, h: torch.Tensor) -> torch.Tensor:
        """The rest of the trunk, on ``stem``'s output: ``rest(stem(x)) == trunk(x)``."""
        return self.trunk_parts[1](h)

    def read_codes(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q on trunk features ``h``: (code logits [B, code_dim], continuous means [B, continuous_codes])."""
        out = self.q(h)
        return out[:, :self.code_dim], out[:, self.code_dim:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d_logit [B], q_logits [B, code_dim])."""
        h = self.trunk(x)
        return self.head(h).squeeze(1), self.read_codes(h)[0]


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) weights, batch-norm scales N(1, 0.02).

    A spectrally normalised layer is normalised again after its weights are drawn: its power
    iteration's vectors were estimated for the constructor's weights, and against the new ones
    they would make the first forward passes divide by a far too small norm."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            normalised = parametrize.is_parametrized(m, "weight")
            if normalised:
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            if normalised:
                spectral_norm(m)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def exportable(module: nn.Module) -> nn.Module:
    """``module`` in eval mode as a module that pickles (``mlflow.pytorch.log_model``) and
    computes the same function. Torch refuses to pickle parametrized modules, so a discriminator
    with spectral norm is rebuilt with the weights its parametrizations give now as plain
    tensors. (Built afresh from the state dict: removing parametrizations from a deep copy would
    strip them from the original too, whose dynamically made class the copy shares.)"""
    if not any(parametrize.is_parametrized(m) for m in module.modules()):
        return module.eval()
    if not isinstance(module, Discriminator):
        raise TypeError(f"no plain form of a parametrized {type(module).__name__}")
    plain = Discriminator(module.code_dim, module.arch, module.q_hidden,
                          continuous_codes=module.continuous_codes)
    plain.load_state_dict(module.state_dict())
    plain.eval()
    for m in list(plain.modules()):
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return plain


def build(model_cfg, literal: bool = False) -> tuple[Generator, Discriminator]:
    g = Generator(model_cfg.noise_dim, model_cfg.code_dim, model_cfg.arch, literal=literal,
                  continuous_codes=model_cfg.continuous_codes)
    d = Discriminator(model_cfg.code_dim, model_cfg.arch, model_cfg.q_hidden, literal=literal,
                      continuous_codes=model_cfg.continuous_codes)
    init_weights(g)
    init_weights(d)
    return g, d
