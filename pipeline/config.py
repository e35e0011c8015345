"""Loading a config: the schema's defaults (``schema.py``), then YAML files, then ``key=value``
overrides, merged in order and checked; an unknown key, a wrong type or an impossible combination raises
:class:`ConfigError` naming the key and the file or override it came from.
"""
from __future__ import annotations

import hashlib
import math
import os
import shlex
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from . import compat
from .schema import Config

# Allowed values of the keys that are not registries (``model.arch`` and ``train.g_loss`` are
# checked against ``models.ARCHITECTURES`` and ``losses.G_LOSSES``, which build them).
REAL_FAKE_BATCH = ("separate", "joint", "both")
CHECKPOINT_KEEP = ("last", "none")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and its source."""


class UsageError(ConfigError):
    """Other input that cannot be used (an unknown run id, a missing mapping): the message says
    what is wrong and what to do instead."""


def project_dir() -> Path:
    """The directory that holds the local MLflow store, data cache and checkpoints.

    ``INFOGAN_HOME`` wins; otherwise the nearest ancestor of the working directory that holds an
    ``MLproject`` file (so commands behave the same from any sub-folder of a checkout); otherwise
    the working directory.
    """
    if os.environ.get("INFOGAN_HOME"):
        return Path(os.environ["INFOGAN_HOME"]).resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "MLproject").is_file():
            return folder
    return cwd


def resolve_path(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_dir() / p


def _leaf_keys(node: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaf_keys(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1]


def _merge(cfg: DictConfig, incoming: DictConfig, source: str, sources: dict) -> DictConfig:
    try:
        merged = OmegaConf.merge(cfg, incoming)
    except ConfigKeyError as e:
        key = e.full_key or e.key
        parent = key.rsplit(".", 1)[0] if key and "." in key else None
        known = sorted(OmegaConf.select(cfg, parent).keys()) if parent else sorted(cfg.keys())
        raise ConfigError(
            f"unknown config key '{key}' in {source}; known keys here: {', '.join(known)}"
        ) from None
    except ValidationError as e:
        raise ConfigError(
            f"wrong type for config key '{e.full_key}' in {source}: {str(e.msg).splitlines()[0]}"
        ) from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad value in {source}: {str(e.msg).splitlines()[0]}") from None
    for key in _leaf_keys(OmegaConf.to_container(incoming)):
        sources[key] = source
    return merged


def split_overrides(args: Iterable[str]) -> list[str]:
    """Overrides may come as separate arguments or as one string (MLproject's ``overrides``)."""
    out: list[str] = []
    for arg in args:
        out.extend(shlex.split(arg))
    return out


def read_file(name: str, chain: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """(source, keys) of config file ``name`` and of the files its ``defaults:`` list builds on
    (paths relative to the file, merged in order before its own keys), bases first."""
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"config file not found: {name}" + (f" (in the defaults of {chain[-1]})" if chain else ""))
    if path.resolve() in {Path(earlier).resolve() for earlier in chain}:
        raise ConfigError(f"config file {name} builds on itself: {' -> '.join((*chain, name))}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{name} is not valid YAML: {e}") from None
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ConfigError(f"{name} must hold a mapping of config keys, not {type(raw).__name__}")
    bases = raw.pop("defaults", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        raise ConfigError(f"{name}: defaults must list the config files it builds on, e.g. defaults: [tconv_ns.yaml]")
    read = [entry for base in bases for entry in read_file(str(path.parent / base), (*chain, name))]
    return read + [(f"config file {name}", raw)] if raw else read


def load_config(files: Iterable[str] = (), overrides: Iterable[str] = ()) -> DictConfig:
    """Schema defaults, then each YAML file in order (each after the files its ``defaults:`` list
    names), then ``key=value`` overrides; validated."""
    cfg = OmegaConf.structured(Config)
    sources: dict[str, str] = {}
    for name in files:
        if not name:
            continue
        for source, raw in read_file(name):
            cfg = _merge(cfg, OmegaConf.create(raw), source, sources)
    for item in split_overrides(overrides):
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.epochs=3)")
        try:
            incoming = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as e:
            raise ConfigError(f"cannot parse override '{item}': {e.msg}") from None
        cfg = _merge(cfg, incoming, f"command-line override '{item}'", sources)
    validate(cfg, sources)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def validate(cfg: DictConfig, sources: Optional[dict] = None) -> None:
    """Cross-field and range rules that types alone cannot express."""
    check = _Checker(cfg, sources or {})
    for key, value in flatten(cfg).items():
        if isinstance(value, float) and not math.isfinite(value):
            check.fail(key, f"is {value}; it must be a finite number")
    _check_choices(check)
    _check_ranges(check, cfg)
    _check_batches(check, cfg)
    from . import plan  # the step's exclusion rules live with the step's plan

    for key, why in plan.broken(plan.EXCLUSIONS, plan.values_of(cfg)):
        check.fail(key, why)


class _Checker:
    """Raises the ConfigError for one key, naming the file or override it came from."""

    def __init__(self, cfg: DictConfig, sources: dict):
        self.cfg, self.sources = cfg, sources

    def fail(self, key: str, why: str) -> None:
        where = self.sources.get(key, "the defaults")
        raise ConfigError(f"config key '{key}' (from {where}) {why}")

    def choice(self, key: str, allowed: Iterable[str]) -> None:
        value = OmegaConf.select(self.cfg, key)
        if value not in allowed:
            self.fail(key, f"is '{value}'; expected one of: {', '.join(allowed)}")

    def at_least(self, key: str, low: float) -> None:
        value = OmegaConf.select(self.cfg, key)
        if value is not None and value < low:
            self.fail(key, f"is {value}; it must be >= {low}")


def _check_choices(check: _Checker) -> None:
    from .losses import G_LOSSES
    from .models import ARCHITECTURES

    check.choice("model.arch", ARCHITECTURES)
    check.choice("train.g_loss", G_LOSSES)
    check.choice("train.device", DEVICES)
    check.choice("train.precision", PRECISIONS)
    check.choice("eval.classifier_precision", PRECISIONS)
    check.choice("train.real_fake_batch", REAL_FAKE_BATCH)
    check.choice("tracking.checkpoint_keep", CHECKPOINT_KEEP)


def _check_ranges(check: _Checker, cfg: DictConfig) -> None:
    for key in ("model.noise_dim", "train.epochs", "train.batch_size", "train.log_every",
                "model.q_hidden", "train.steps_per_epoch", "data.train_subset"):
        check.at_least(key, 1)
    check.at_least("model.code_dim", 2)
    for key in ("eval.train_samples_per_code", "eval.samples_per_code", "eval.demos",
                "eval.classifier_epochs", "eval.classifier_train_subset", "eval.q_test_images"):
        check.at_least(key, 1)
    check.at_least("eval.every_epochs", 0)
    check.at_least("eval.fld_samples", 0)
    if cfg.eval.fld_samples == 1:
        check.fail("eval.fld_samples", "is 1; a covariance needs at least 2 samples (0 turns FLD off)")
    if not cfg.eval.classifier_lr > 0:
        check.fail("eval.classifier_lr", "must be a positive learning rate")
    for key in ("train.code_weight", "train.continuous_weight", "train.instance_noise", "train.mode_seeking",
                "train.mode_seeking_after_epochs"):
        check.at_least(key, 0.0)
    check.at_least("model.continuous_codes", 0)
    if not cfg.train.mode_seeking_cap > 0:
        check.fail("train.mode_seeking_cap", "must be > 0 (the largest image distance per unit of z distance "
                   "that is rewarded)")
    check.at_least("train.threads", 0)
    if not 0.0 < cfg.train.joint_weight < 1.0:
        check.fail("train.joint_weight", "must be between 0 and 1, both excluded (real_fake_batch=separate "
                   "and joint are its two ends)")
    if not 0.0 <= cfg.train.d_augment_floor <= 1.0:
        check.fail("train.d_augment_floor", "must be in [0, 1] (a probability)")
    if not 0.0 <= cfg.train.lr_decay_fraction <= 1.0:
        check.fail("train.lr_decay_fraction", "must be in [0, 1] (a fraction of the run)")
    for key in ("train.lr_d", "train.lr_g", "train.lr_q"):
        if not OmegaConf.select(cfg, key) > 0:
            check.fail(key, "must be a positive learning rate")
    for key in ("train.beta1", "train.beta2", "train.ema_decay"):
        if not 0.0 <= OmegaConf.select(cfg, key) < 1.0:
            check.fail(key, "must be in [0, 1)")


def _check_batches(check: _Checker, cfg: DictConfig) -> None:
    subset = cfg.data.train_subset
    if subset is not None and subset < cfg.train.batch_size:
        check.fail("data.train_subset", f"is {subset}, fewer images than one batch "
                   f"(train.batch_size={cfg.train.batch_size}); no full batch could be drawn")
    if cfg.train.batch_size > 60000:
        check.fail("train.batch_size", "is larger than the MNIST training set (60,000)")
    if cfg.train.batch_size < 2:  # every architecture's G normalises its batch
        check.fail("train.batch_size", f"must be >= 2: the {cfg.model.arch} network's batch norm needs two "
                   "samples to normalise")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def from_yaml(text: str) -> DictConfig:
    """A config stored in a checkpoint or run artifact, re-checked against today's schema."""
    raw = compat.stored_config(yaml.safe_load(text) or {}, Config().train.epochs)
    cfg = _merge(OmegaConf.structured(Config), OmegaConf.create(raw), "stored config", {})
    validate(cfg)
    return cfg


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """``{'train.lr_g': 0.001, ...}``: the shape used for MLflow params and sweep spaces."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


NOT_HASHED = ("tracking.run_name", "tracking.system_metrics", "tracking.registered_model",
              "tracking.checkpoint_keep", "eval.classifier_cache", "tracking.registered_classifier")


def config_hash(cfg: DictConfig) -> str:
    """Identity of a training config, used to find an interrupted run to resume. What only
    names, watches or registers the run is left out."""
    body = {k: v for k, v in flatten(cfg).items()
            if k not in NOT_HASHED and compat.hashed(k, v)}
    return hashlib.sha256(repr(sorted(body.items())).encode()).hexdigest()[:16]
