"""The training step's plan, built once from a config: which images D and Q see, the weights and
the schedules, and every rule saying which option excludes another or has no effect under it.

Config validation (``config.validate``), the loop (one line at start for each key that was set
and does nothing), the step and the report's settings table all read these rules from here.

- Where Q reads the fakes' codes (``Plan.q_reads``): ``d_view``, the changed copies D judges under
  ``train.d_augment`` (no pass of its own); ``moved``, a randomly moved copy of each fake
  (``train.info_augment``, one more pass of D's trunk); ``plain``, the fakes as drawn. Continuous
  codes are read from the plain fakes in every case: moving a digit changes what they encode.
- Q's term on real digits (``train.real_consistency``, its weight): under ``d_view`` from D's own
  passes on changed reals, otherwise from a changed copy of its own.
- The schedules are functions of the step count, so a resumed run continues each of them.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Optional

import torch
from omegaconf import OmegaConf

from . import augment, models, names, optim
from .schema import Config

Images = Callable[[torch.Tensor], torch.Tensor]
Values = Callable[[str], Any]  # a config's value for a dotted key


@dataclass(frozen=True)
class Rule:
    """``key`` breaks this rule where ``when(values)`` holds; ``why`` says why (``{key}`` fields
    are filled in with the config's values)."""
    key: str
    when: Callable[[Values], bool]
    why: str

    def reason(self, values: Values) -> str:
        return re.sub(r"\{([\w.]+)\}", lambda field: str(values(field.group(1))), self.why)


# Combinations that cannot train: config validation refuses them, naming the key.
EXCLUSIONS = (
    Rule("train.d_augment", lambda v: v("train.d_augment") and v("train.real_fake_batch") != "separate",
         "must be false with train.real_fake_batch={train.real_fake_batch} (add train.d_augment=false): D judges "
         "changed copies only with real and fake normalised apart"),
)

# Keys that do nothing under other settings. Training says so in one line at start for each such
# key set away from its default; the report's settings table shows them as unused.
NO_EFFECT = (
    Rule("train.info_augment", lambda v: v("train.d_augment"),
         "under train.d_augment Q reads its codes from the changed copies D judges"),
    Rule("train.joint_weight", lambda v: v("train.real_fake_batch") != "both",
         "only train.real_fake_batch=both weighs two views of D's batch norm"),
    Rule("train.real_fake_batch",
         lambda v: v("model.arch") in models.ARCHITECTURES and not models.d_has_batch_norm(v("model.arch")),
         "the {model.arch} D has no batch norm, so every image is judged alone"),
    Rule("train.d_augment_floor", lambda v: not v("train.d_augment"),
         "D judges plain digits (train.d_augment is off)"),
    Rule("train.continuous_weight", lambda v: not v("model.continuous_codes"),
         "there are no continuous codes (model.continuous_codes is 0)"),
    Rule("train.mode_seeking_after_epochs", lambda v: not v("train.mode_seeking"),
         "mode seeking is off (train.mode_seeking is 0)"),
    Rule("train.mode_seeking_cap", lambda v: not v("train.mode_seeking"),
         "mode seeking is off (train.mode_seeking is 0)"),
)


def broken(rules: tuple[Rule, ...], values: Values) -> list[tuple[str, str]]:
    """(key, reason) for each rule of ``rules`` that ``values`` break, in the rules' order."""
    return [(rule.key, rule.reason(values)) for rule in rules if rule.when(values)]


def no_effect(values: Values, key: str) -> Optional[str]:
    """Why ``key`` does nothing under ``values``, or None where it has an effect."""
    return next((rule.reason(values) for rule in NO_EFFECT if rule.key == key and rule.when(values)), None)


def values_of(cfg) -> Values:
    """``cfg``'s value for a dotted key."""
    return lambda key: OmegaConf.select(cfg, key)


def unused_keys(cfg) -> list[str]:
    """One line for each key of ``cfg`` that is set away from its default and does nothing."""
    values, defaults = values_of(cfg), values_of(OmegaConf.structured(Config))

    def written(value) -> str:  # as it is typed: false, not False
        return str(value).lower() if isinstance(value, bool) else str(value)

    return [f"{key}={written(values(key))} has no effect: {why}" for key, why in broken(NO_EFFECT, values)
            if values(key) != defaults(key)]


def step_metrics(cfg) -> tuple[str, ...]:
    """The names of the scalars a training step logs under ``cfg``, in logging order."""
    return (names.STEP_METRICS + ((names.LOSS_INFO_CONT,) if cfg.model.continuous_codes else ())
            + ((names.LOSS_INFO_REAL,) if cfg.train.real_consistency else ())
            + ((names.MODE_SEEKING,) if cfg.train.mode_seeking else ()))


@dataclass(frozen=True)
class Plan:
    """What every step of a run does, from its config and length."""
    g_loss: str
    code_weight: float
    continuous_weight: float
    info_trains_d_trunk: bool  # the info term may shape D's trunk, not only Q's layers
    q_reads: str  # where Q reads the fakes' codes: d_view | moved | plain (the module's docstring)
    real_weight: float  # Q's term on changed real digits (0 = off)
    joint: float  # share of the adversarial losses with real and fake through D's batch norm as one batch
    d_augment_floor: Optional[float]  # None: D judges plain images
    instance_noise: float
    mode_seeking: float  # the weight of mode seeking (0 = off)
    mode_seeking_from: int  # the first step it counts in
    mode_seeking_cap: float
    rates: tuple[float, float, float]  # D's, Q's and G's base learning rates
    total_steps: int
    decay_steps: int  # the last steps over which every rate falls (0 = constant rates)
    metrics: tuple[str, ...]  # the step's scalars, in logging order

    @classmethod
    def of(cls, cfg, steps_per_epoch: int) -> "Plan":
        t, total = cfg.train, cfg.train.epochs * steps_per_epoch
        return cls(
            g_loss=t.g_loss, code_weight=t.code_weight, continuous_weight=t.continuous_weight,
            info_trains_d_trunk=t.info_trains_d_trunk,
            q_reads="d_view" if t.d_augment else "moved" if t.info_augment else "plain",
            real_weight=t.real_consistency,
            joint={"separate": 0.0, "joint": 1.0}.get(t.real_fake_batch, t.joint_weight),
            d_augment_floor=t.d_augment_floor if t.d_augment else None, instance_noise=t.instance_noise,
            mode_seeking=t.mode_seeking, mode_seeking_from=round(t.mode_seeking_after_epochs * steps_per_epoch),
            mode_seeking_cap=t.mode_seeking_cap, rates=(t.lr_d, t.lr_q, t.lr_g), total_steps=total,
            decay_steps=optim.decay_steps_of(t, total), metrics=step_metrics(cfg))

    def settings(self, step: int, rng: torch.Generator,
                 precision: Callable[[], ContextManager] = contextlib.nullcontext) -> "Settings":
        """The settings of iteration ``step``; the random views draw from ``rng`` when called."""
        own_views = self.q_reads != "d_view"
        return Settings(
            self, seeking=self.mode_seeking if self.mode_seeking and step >= self.mode_seeking_from else 0.0,
            lr_scale=optim.lr_scale(step, self.total_steps, self.decay_steps) if self.decay_steps else None,
            d_input=optim.noisy(optim.instance_noise_std(step, self.total_steps, self.instance_noise), rng),
            d_view=None if self.d_augment_floor is None else augment.d_view(
                rng, optim.changed_share(step, self.total_steps, self.d_augment_floor)),
            info_view=augment.q_view(rng) if self.q_reads == "moved" else None,
            real_view=augment.real_q_view(rng) if own_views and self.real_weight else None,
            precision=precision)


@dataclass(frozen=True)
class Settings:
    """One iteration's settings: the plan's weights, and this step's schedules and views."""
    plan: Plan
    seeking: float  # mode seeking's weight at this step (0 before it starts)
    lr_scale: Optional[float]  # the factor on every base rate (None: constant rates)
    d_input: Optional[Images]  # what D sees of every image (instance noise), None = the images
    d_view: Optional[Images]  # D's changed copies (train.d_augment)
    info_view: Optional[Images]  # the moved copy Q reads a fake's code from (q_reads == "moved")
    real_view: Optional[Images]  # the changed copy of a real digit Q learns on, where not D's
    precision: Callable[[], ContextManager]  # the forward passes' context (bf16 autocast or none)
