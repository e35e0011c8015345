"""The typed config schema, its defaults, and loading YAML files plus command-line overrides.

Every default lives in the dataclasses below (``configs/base.yaml`` is the same tree written
out for reading; a test keeps the two equal). YAML files and ``key=value`` overrides are merged
on top in order; an unknown key, a wrong type or an impossible combination raises
:class:`ConfigError` naming the key and the file or override it came from.
"""
from __future__ import annotations

import hashlib
import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

ARCHES = ("paper", "tconv", "upsample_sn")
REAL_FAKE_BATCH = ("separate", "joint")
CHECKPOINT_KEEP = ("last", "none")
G_LOSSES = ("non_saturating", "saturating")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class DataConfig:
    # Folder holding the four standard MNIST IDX files (plain or .gz); tried before any download.
    root: Optional[str] = None
    # Where the verified uint8 cache lives; relative paths are taken from the project directory.
    cache_dir: str = "data/mnist"
    # Try torchvision's downloader when there is no cache (needs the internet).
    download: bool = True
    # Train on the first N training images only (smoke runs); null = all 60,000.
    train_subset: Optional[int] = None


@dataclass
class ModelConfig:
    # paper: the InfoGAN paper's MNIST network (fastest to learn the digits) | tconv: the lab
    # handout's | upsample_sn: upsample+conv G, spectral-norm D, the handout's sizes.
    arch: str = "paper"
    noise_dim: int = 54
    code_dim: int = 10
    # Width of the hidden layer of Q's MLP head.
    q_hidden: int = 128
    # Continuous codes c1, c2, ... ~ U(-1, 1) given to G beside the categorical code, as in the
    # InfoGAN paper (2: rotation and width on MNIST). Q reads back their means. 0 = none.
    continuous_codes: int = 0


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 128
    lr_d: float = 2e-4
    lr_g: float = 1e-3
    # Q's head at D's rate, as in openai/InfoGAN where Q is part of D's optimiser.
    lr_q: float = 2e-4
    # Over this fraction of the run, at its end, every learning rate falls linearly towards 0
    # (0 = constant rates; 0.5 = the second half). A fraction, so it fits any train.epochs.
    lr_decay_fraction: float = 0.5
    # Decay of an exponential moving average of G's weights (0 = none). With it, the average is
    # the generator that is evaluated, drawn in the sample grids and logged as the model; the
    # live G still trains. Averaging smooths out the last steps' jitter, which shows as the odd
    # unreadable style in the demos.
    ema_decay: float = 0.999
    beta1: float = 0.5
    beta2: float = 0.999
    # lambda: weight of the info (mutual-information) term.
    code_weight: float = 1.0
    # Weight of the continuous codes' part of the info term, 1/2 (c - mu)^2 per code (Q's
    # Gaussian with unit variance, as openai/InfoGAN); no effect without model.continuous_codes.
    continuous_weight: float = 1.0
    g_loss: str = "non_saturating"
    # As in openai/InfoGAN: the info term is part of D's objective too, so it trains D's trunk.
    info_trains_d_trunk: bool = True
    # Q learns to read the code from a randomly rotated (+-15 deg), scaled (+-15%) and shifted
    # (+-2 px) copy of each fake, so G's codes must differ in what survives that: the digit, not
    # its slant or size. Stops codes splitting one digit by style; one more D trunk pass per step.
    info_augment: bool = True
    # Instance noise: Gaussian noise of this standard deviation (images are in [0, 1]) is added to
    # every image D sees, real and fake, falling linearly to 0 by the end of training. D then
    # cannot win on pixel detail that G cannot draw yet (the handout's G draws 4x4 blocks). 0 = off.
    instance_noise: float = 0.0
    # How D's batch norm sees real and fake batches: separate (as the InfoGAN code) | joint (one
    # batch; the handout's tconv network needs it). No effect without batch norm in D.
    real_fake_batch: str = "separate"
    # Cap on iterations per epoch (smoke runs); null = one pass over the training set.
    steps_per_epoch: Optional[int] = None
    # Metrics are averaged over this many iterations and logged in one batch.
    log_every: int = 25
    device: str = "auto"
    # Forward passes of the step in bf16 autocast (weights, optimiser state, losses and the
    # evaluation stay fp32): auto = bf16 where the hardware runs it (a CUDA GPU with bf16, a CPU
    # with AMX or AVX512-BF16), fp32 elsewhere | fp32 | bf16.
    precision: str = "auto"
    # torch intra-op threads; 0 = one per CPU core.
    threads: int = 0


@dataclass
class EvalConfig:
    # Evaluate during training every N epochs (0 = never); the final evaluation is `infogan evaluate`.
    every_epochs: int = 1
    # Samples per code value for the code -> digit mapping: during training, and in the evaluate stage.
    train_samples_per_code: int = 200
    samples_per_code: int = 1000
    # Random demos (10 digits x 10 fresh styles each) graded as the lab grades them.
    demos: int = 100
    # Generated and real test images compared by the Frechet distance in classifier features (FLD);
    # eval/fld_floor is the distance between the next as many real test images and those (the floor).
    fld_samples: int = 2000
    # Q's accuracy (eval/q_accuracy) on the first N real test images; null = all 10,000.
    q_test_images: Optional[int] = None
    # The reference classifier: trained once, logged to this experiment, reused while these keys match.
    classifier_experiment: str = "classifier"
    classifier_epochs: int = 5
    classifier_lr: float = 3e-3
    # Train it on the first N training images only (smoke runs); null = all 60,000.
    classifier_train_subset: Optional[int] = None


@dataclass
class TrackingConfig:
    experiment: str = "infogan"
    # The training run's name in the MLflow UI; null = "train <arch> s<seed>", e.g. "train paper s0".
    run_name: Optional[str] = None
    # Log the final generator and discriminator/Q with mlflow.pytorch.log_model.
    log_model: bool = True
    # Sample CPU, memory, disk and network use into the training run's system/ metrics (MLflow's
    # system metrics tab) every 10 s (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL sets another interval).
    system_metrics: bool = True
    # `infogan evaluate` registers the run's generator (the pyfunc model, mapping inside) under
    # this name in the MLflow Model Registry; null = do not register.
    registered_model: Optional[str] = "infogan-generator"
    # Working checkpoints, written every epoch; relative to the project directory.
    checkpoint_dir: str = "checkpoints"
    # What a finished run keeps: last = its final checkpoint, logged once as the run's artifact
    # (the working copy is then removed: one copy on disk) | none = nothing logged; the working
    # copy stays until `infogan gc` removes it. With a tracking server, `last` also uploads each
    # epoch's checkpoint, so another machine can resume the run.
    checkpoint_keep: str = "last"


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


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


def load_config(files: Iterable[str] = (), overrides: Iterable[str] = ()) -> DictConfig:
    """Schema defaults, then each YAML file in order, then ``key=value`` overrides; validated."""
    cfg = OmegaConf.structured(Config)
    sources: dict[str, str] = {}
    for name in files:
        if not name:
            continue
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"config file not found: {name}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{name} is not valid YAML: {e}") from None
        if raw is None:
            continue
        if not isinstance(raw, dict):
            raise ConfigError(f"{name} must hold a mapping of config keys, not {type(raw).__name__}")
        cfg = _merge(cfg, OmegaConf.create(raw), f"config file {name}", sources)
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
    sources = sources or {}

    def fail(key: str, why: str) -> None:
        where = sources.get(key, "the defaults")
        raise ConfigError(f"config key '{key}' (from {where}) {why}")

    def choice(key: str, allowed: tuple) -> None:
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            fail(key, f"is '{value}'; expected one of: {', '.join(allowed)}")

    def at_least(key: str, low: float) -> None:
        value = OmegaConf.select(cfg, key)
        if value is not None and value < low:
            fail(key, f"is {value}; it must be >= {low}")

    for key, value in flatten(cfg).items():
        if isinstance(value, float) and not math.isfinite(value):
            fail(key, f"is {value}; it must be a finite number")
    choice("model.arch", ARCHES)
    choice("train.g_loss", G_LOSSES)
    choice("train.device", DEVICES)
    choice("train.precision", PRECISIONS)
    choice("train.real_fake_batch", REAL_FAKE_BATCH)
    choice("tracking.checkpoint_keep", CHECKPOINT_KEEP)
    for key in ("model.noise_dim", "train.epochs", "train.batch_size", "train.log_every",
                "model.q_hidden", "train.steps_per_epoch", "data.train_subset"):
        at_least(key, 1)
    at_least("model.code_dim", 2)
    for key in ("eval.train_samples_per_code", "eval.samples_per_code", "eval.demos",
                "eval.classifier_epochs", "eval.classifier_train_subset", "eval.q_test_images"):
        at_least(key, 1)
    at_least("eval.every_epochs", 0)
    at_least("eval.fld_samples", 0)
    if cfg.eval.fld_samples == 1:
        fail("eval.fld_samples", "is 1; a covariance needs at least 2 samples (0 turns FLD off)")
    if not cfg.eval.classifier_lr > 0:
        fail("eval.classifier_lr", "must be a positive learning rate")
    at_least("train.code_weight", 0.0)
    at_least("train.continuous_weight", 0.0)
    at_least("model.continuous_codes", 0)
    at_least("train.instance_noise", 0.0)
    at_least("train.threads", 0)
    if not 0.0 <= cfg.train.lr_decay_fraction <= 1.0:
        fail("train.lr_decay_fraction", "must be in [0, 1] (a fraction of the run)")
    for key in ("train.lr_d", "train.lr_g", "train.lr_q"):
        if not OmegaConf.select(cfg, key) > 0:
            fail(key, "must be a positive learning rate")
    for key in ("train.beta1", "train.beta2", "train.ema_decay"):
        if not 0.0 <= OmegaConf.select(cfg, key) < 1.0:
            fail(key, "must be in [0, 1)")
    subset = cfg.data.train_subset
    if subset is not None and subset < cfg.train.batch_size:
        fail("data.train_subset", f"is {subset}, fewer images than one batch "
             f"(train.batch_size={cfg.train.batch_size}); no full batch could be drawn")
    if cfg.train.batch_size > 60000:
        fail("train.batch_size", "is larger than the MNIST training set (60,000)")
    if cfg.model.arch in ("paper", "tconv") and cfg.train.batch_size < 2:
        fail("train.batch_size", f"must be >= 2 for the {cfg.model.arch} architecture (batch norm)")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def from_yaml(text: str) -> DictConfig:
    """A config stored in a checkpoint or run artifact, re-checked against today's schema."""
    raw = yaml.safe_load(text) or {}
    train = raw.get("train") or {}
    if "lr_decay_epochs" in train:  # stored before the schedule became a fraction of the run
        train["lr_decay_fraction"] = train.pop("lr_decay_epochs") / train.get("epochs", Config().train.epochs)
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
              "tracking.checkpoint_keep")


# Keys added after runs were made, with the value that means "as before": at that value they are
# left out of the hash, so runs made before they existed are still found as the same config.
ADDED_LATER = {"train.instance_noise": 0.0, "model.continuous_codes": 0, "train.continuous_weight": 1.0,
               "eval.q_test_images": None}


def config_hash(cfg: DictConfig) -> str:
    """Identity of a training config, used to find an interrupted run to resume. What only
    names, watches or registers the run is left out."""
    body = {k: v for k, v in flatten(cfg).items()
            if k not in NOT_HASHED and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    return hashlib.sha256(repr(sorted(body.items())).encode()).hexdigest()[:16]
