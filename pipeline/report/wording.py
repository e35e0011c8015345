"""The report's fixed wording: what each architecture is called, the training choices a config
may switch on with why each is there, the set-up table's labels, and how numbers are shown."""
from __future__ import annotations

import math

import yaml

from ..schema import TrainConfig

_DEFAULT = TrainConfig()  # the schema's defaults, which a config's choices are compared with

ARCH_NAMES = {"paper": "the InfoGAN paper's network", "tconv": "the handout's network (transposed conv + BN)",
              "upsample_sn": "upsample+conv G, spectral-norm D"}
# The project's training changes a config may switch on, and why each is there.
CHOICES = (
    ("train.info_augment", lambda v: v == "True",
     "Q learns the code from randomly rotated (±15°), scaled (±15%) and shifted (±2 px) copies of the fakes",
     "a code must then differ in what survives such changes, the digit, not in slant or size"),
    ("train.real_consistency", lambda v: float(v) > 0,
     "Q also learns, on real digits, to give a rotated, scaled, shifted, thicker- or thinner-stroked copy "
     "the code it gives the plain digit with confidence (weight {v}; no labels)",
     "without it about a third of seeds had two codes each drawing the same two digits, told apart by "
     "stroke width or slant; Q's codes on real digits must survive such changes, so style alone cannot "
     "keep two codes apart"),
    ("train.d_augment", lambda v: v == "True",
     "D judges changed copies of the real and the generated digits (rotated, scaled, shifted, strokes "
     "thicker or thinner): every image at the first step, a share falling to train.d_augment_floor by "
     "80% of the run; Q reads its codes from those same passes of D",
     "Q then learns from changed fakes and changed real digits without passes of its own, so a step "
     "costs what a textbook InfoGAN step does; the share falls so that G learns clean strokes once the "
     "codes have formed"),
    ("train.ema_decay", lambda v: float(v) > 0,
     "G's weights are averaged (exponential moving average, decay {v}); the average is drawn and evaluated",
     "it smooths out the jitter of the last steps, which shows as the odd unreadable style"),
    ("train.lr_decay_fraction", lambda v: float(v) > 0,
     "every learning rate falls linearly towards 0 over the last {v} of the run",
     "D, Q and G settle at the end instead of stopping mid-oscillation"),
    ("train.epochs", lambda v: int(v) < 6,
     "trained for {v} epochs, not the handout's 6",
     "the length each config was accepted at on seeds no tuning used: the paper's network reaches its "
     "quality by epoch 5, and with a spectral-norm D at chance the codes, formed by epoch 4, slipped over "
     "two more epochs on most seeds, once until two codes shared two digits"),
    ("train.lr_g", lambda v: float(v) != 2e-4,
     "G learns at {v}, not at the handout's 0.0002",
     "G moves faster than D, as in the default config; with equal rates and real and fake as one batch the "
     "handout's D won within an epoch"),
    ("train.lr_d", lambda v: float(v) != 2e-4,
     "D learns at {v}, not at the handout's 0.0002",
     "the balance of D against G: slower where D won too early, faster where spectral norm holds D back, "
     "or scaled with a larger batch"),
    ("train.batch_size", lambda v: int(v) > 128,
     "each step trains on {v} images, not the handout's 128, with every learning rate scaled by the square "
     "root of the ratio",
     "half the steps at 256, each a larger share of the CPU's work: the same epochs in about 60% of the "
     "time, at the same quality on six seeds"),
    ("train.beta1", lambda v: float(v) != _DEFAULT.beta1,
     f"Adam runs with β₁ {{v}}, not the default {_DEFAULT.beta1} (β₂ in the settings table)",
     "as SNGAN trains a spectral-norm D: each step follows the current gradient, not a running mean "
     "of old ones; with D at twice G's rate this kept more codes on one digit each in short probes"),
    ("train.info_trains_d_trunk", lambda v: v == "False",
     "the info term trains Q's own layers only, not the trunk Q shares with D",
     "the trunk stays a real/fake detector instead of being pulled towards the code"),
    ("train.instance_noise", lambda v: float(v) > 0,
     "D sees every image, real and generated, with Gaussian noise added (std {v} at the start, falling "
     "linearly to 0 by the end)",
     "the handout's G draws 4×4 blocks that D spots at once; under the noise D has to judge shapes, "
     "so G is told how to draw digits, not only that its pixels are wrong"),
    ("train.mode_seeking", lambda v: float(v) > 0,
     "after its first steps, G is rewarded for drawing different images from different z under one code "
     "(mode seeking, weight {v})",
     "a D without batch statistics judges each image alone, and the handout's D sees real and generated "
     "images as one batch in the joint view: neither tells G that a batch repeating one image per code is "
     "fake (with the spectral-norm D every z drew the same image; with the handout's D one run of ten "
     "never grew out of it and formed no code)"),
    ("train.mode_seeking_cap", lambda v: float(v) < _DEFAULT.mode_seeking_cap,
     "the mode-seeking reward stops growing once two images differ by {v} per unit of z distance (mean "
     f"absolute differences), not {_DEFAULT.mode_seeking_cap}",
     "two real images of one digit differ by 0.12 per unit of z on average, of two different digits by "
     "0.15; under the higher cap G went on earning the reward after its codes had settled by drawing two "
     "digits under one code, which a D at chance did not stop"),
    ("train.real_fake_batch", lambda v: v == "joint",
     "D's batch norm sees real and generated images as one batch",
     "the handout's D normalises its features right before its head: a batch of fakes normalised on "
     "its own looks to that head like a batch of reals"),
    ("train.real_fake_batch", lambda v: v == "both",
     "D's and G's adversarial losses add two views: real and generated images normalised as one batch "
     "(weighted by train.joint_weight) and each batch normalised on its own",
     "normalised alone, a batch of fakes that repeats one image per code stands out against a batch of "
     "reals, so G keeps drawing varied digits; the joint view shows D the brightness and contrast that "
     "the handout's D cannot see in a batch normalised alone"),
)
SETTINGS = (("model.arch", "architecture"), ("train.g_loss", "G loss"), ("train.code_weight", "λ"),
            ("train.lr_d", "lr D"), ("train.lr_g", "lr G"), ("train.lr_q", "lr Q"), ("train.beta1", "Adam β₁"),
            ("train.beta2", "Adam β₂"), ("train.batch_size", "batch"),
            ("train.epochs", "epochs"), ("train.info_augment", "Q on transformed fakes"),
            ("train.real_consistency", "Q on changed real digits"), ("train.d_augment", "D on changed copies"),
            ("train.ema_decay", "G average (EMA)"), ("train.lr_decay_fraction", "lr decay (fraction)"),
            ("train.real_fake_batch", "D batch norm"), ("train.joint_weight", "joint share (under both)"),
            ("train.info_trains_d_trunk", "info term trains D's trunk"),
            ("train.instance_noise", "noise on D's inputs (std)"), ("train.mode_seeking", "mode seeking"),
            ("train.mode_seeking_cap", "mode seeking cap"),
            ("model.continuous_codes", "continuous codes"))


def moot(params: dict, key: str) -> bool:
    """Whether a run's ``key`` does nothing under its other settings (``plan.NO_EFFECT``): the
    report gives no sentence for it and shows it as unused."""
    from .. import plan  # with the step's rules, which import torch: only where a report is built

    def value(name: str):
        text = params.get(name)
        return None if text is None else yaml.safe_load(text)

    return key in params and plan.no_effect(value, key) is not None


def setting(params: dict, key: str) -> str:
    """A run's ``key`` as the settings table shows it: "unused" where it is moot."""
    return "unused" if moot(params, key) else params.get(key, "–")


def num(text, digits: int = 3) -> str:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return str(text)
    return "–" if math.isnan(value) else f"{value:.{digits}g}"


def mixed_codes(runs: list[str], below: float) -> str:
    """The sentence naming ``runs`` ("experiment seed s (worst code's share)") in which a code
    draws its own digit in under ``below`` of its samples."""
    return (f"Codes that draw more than one digit: in {', '.join(runs)}, at least one code draws its own digit in "
            f"under {100 * below:.0f}% of its samples (the figure in brackets: the worst code's share), so asking "
            "for that digit often gives another. Where two codes share the same two digits and z decides between "
            "them, each column of a demo gets one of the two wrong and still passes: the demo grade does not see "
            "it. The evaluate stage names the codes and digits (eval/mapping.json).")


def mixed_codes_in_comparison(runs: list[str], below: float) -> str:
    """The comparison's sentence on codes that draw more than one digit: the runs, or that none has one."""
    if not runs:
        return (f"In every run each code draws its own digit in at least {100 * below:.0f}% of its samples: "
                "no code draws two digits.")
    return (f"Runs with a code that draws its own digit in under {100 * below:.0f}% of its samples, i.e. draws "
            f"more than one digit (the worst code's share in brackets): {', '.join(runs)}.")
