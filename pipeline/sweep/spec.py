"""The sweep file: what a study searches, how trials are judged, and the checks that name
the field that is wrong."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from .. import names
from ..config import ConfigError, flatten, load_config, resolve_path

# What a trial is measured by: the eval/ metrics the training loop logs at every evaluation.
EVAL_METRICS = names.EVAL_METRICS
DIRECTIONS = ("maximize", "minimize")
PARAM_TYPES = ("float", "int", "categorical")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "threshold", "none")
# Keys a sweep may not search over: the budget and evaluation cadence are the sweep's own, and
# tracking keys would scatter the trials.
RESERVED = ("train.epochs", "eval.every_epochs")
RUN_ID_ATTR = "mlflow_run_id"
PARENT_ATTR = "mlflow_parent_run_id"


@dataclass
class ParamSpec:
    # float | int | categorical
    type: str = "float"
    low: Optional[float] = None
    high: Optional[float] = None
    # Sample on a log scale (learning rates).
    log: bool = False
    # Grid step for float/int (optional).
    step: Optional[float] = None
    choices: Optional[List[Any]] = None


@dataclass
class BaseSpec:
    # Config files (relative to the project directory) and key=value overrides every trial starts from.
    configs: List[str] = field(default_factory=list)
    overrides: List[str] = field(default_factory=list)


@dataclass
class ObjectiveSpec:
    metric: str = names.GEN_ACCURACY
    direction: str = "maximize"
    # Among trials within tie_tolerance of the best value, the best is the one with the best
    # tie_breaker (lowest FLD by default). Optuna itself optimises `metric` alone.
    tie_breaker: Optional[str] = names.FLD
    tie_breaker_direction: str = "minimize"
    tie_tolerance: float = 0.005


@dataclass
class SamplerSpec:
    type: str = "tpe"
    seed: int = 0
    # TPE: random trials before the model is used.
    n_startup_trials: int = 5


@dataclass
class PrunerSpec:
    type: str = "median"
    # median: trials that finish before any pruning, and epochs before a trial may be pruned.
    n_startup_trials: int = 2
    n_warmup_steps: int = 1
    # hyperband: the smallest budget in epochs and the reduction factor (max = the budget).
    min_resource: int = 1
    reduction_factor: int = 3
    # threshold: prune when the metric leaves [lower, upper].
    lower: Optional[float] = None
    upper: Optional[float] = None


@dataclass
class HeartbeatSpec:
    # A RUNNING trial whose worker has not beaten for grace_s is failed and retried (max_retry
    # times), resuming its run's checkpoint.
    interval_s: int = 30
    grace_s: int = 120
    max_retry: int = 2


@dataclass
class SweepSpec:
    study_name: str = MISSING
    # MLflow experiment of the parent run and its trials; default: the study name.
    experiment: Optional[str] = None
    # Optuna storage URL; default sqlite:///<project>/optuna.db (overridden by --storage).
    storage: Optional[str] = None
    base: BaseSpec = field(default_factory=BaseSpec)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    space: Dict[str, ParamSpec] = field(default_factory=dict)
    # Finished (complete or pruned) trials the study should hold; and/or a time limit per command.
    n_trials: Optional[int] = 10
    timeout_s: Optional[float] = None
    # Per-trial budget: training epochs (each ends with an evaluation reported to the pruner).
    epochs: int = 2
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    heartbeat: HeartbeatSpec = field(default_factory=HeartbeatSpec)
    # What trials keep once the sweep ends: best = only the best trial's checkpoint (the others'
    # logged and working copies are removed; their curves, params and models stay) | all.
    keep_checkpoints: str = "best"


class Pruned(Exception):
    """Raised in a trial the pruner stops; its MLflow run ends KILLED and Optuna records PRUNED."""

    run_status = "KILLED"


# --- the sweep file ----------------------------------------------------------------------------

def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; a ConfigError names the field that is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping (study_name, space, ...)")
    try:
        spec = OmegaConf.merge(OmegaConf.structured(SweepSpec), OmegaConf.create(raw))
        OmegaConf.to_container(spec, throw_on_missing=True)
    except ConfigKeyError as e:
        raise ConfigError(f"sweep file {path}: unknown field '{e.full_key or e.key}'") from None
    except MissingMandatoryValue as e:
        raise ConfigError(f"sweep file {path}: field '{e.full_key}' is required") from None
    except ValidationError as e:
        raise ConfigError(f"sweep file {path}: wrong type for field '{e.full_key}': "
                          f"{str(e.msg).splitlines()[0]}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"sweep file {path}: {str(e.msg).splitlines()[0]}") from None
    spec = OmegaConf.to_object(spec)
    check_spec(spec, str(path))
    return spec


def check_spec(spec: SweepSpec, source: str = "sweep file") -> None:
    """A ConfigError naming the first field of ``spec`` that is wrong."""
    fail = _Fail(source)
    _check_settings(spec, fail)
    try:
        base = base_config(spec)
    except ConfigError as e:
        raise ConfigError(f"{source}: the base config is unusable: {e}") from None
    known = flatten(base)
    for key, p in spec.space.items():
        _check_param(spec, key, p, known, fail)


class _Fail:
    """Raises the ConfigError for one field of the sweep file ``source``."""

    def __init__(self, source: str):
        self.source = source

    def __call__(self, name: str, why: str) -> None:
        raise ConfigError(f"{self.source}: field '{name}' {why}")

    def unless_one_of(self, name: str, value: Any, allowed: tuple) -> None:
        if value not in allowed:
            self(name, f"is '{value}'; expected one of: {', '.join(allowed)}")


def _check_settings(spec: SweepSpec, fail: _Fail) -> None:
    one_of = fail.unless_one_of
    if not spec.study_name or any(ch.isspace() for ch in spec.study_name):
        fail("study_name", "must be a non-empty name without spaces")
    one_of("objective.direction", spec.objective.direction, DIRECTIONS)
    one_of("keep_checkpoints", spec.keep_checkpoints, ("best", "all"))
    one_of("objective.metric", spec.objective.metric, EVAL_METRICS)
    if spec.objective.tie_breaker is not None:
        one_of("objective.tie_breaker", spec.objective.tie_breaker, EVAL_METRICS)
    one_of("objective.tie_breaker_direction", spec.objective.tie_breaker_direction, DIRECTIONS)
    if spec.objective.tie_tolerance < 0:
        fail("objective.tie_tolerance", "must be >= 0")
    one_of("sampler.type", spec.sampler.type, SAMPLERS)
    one_of("pruner.type", spec.pruner.type, PRUNERS)
    if spec.pruner.type == "threshold" and spec.pruner.lower is None and spec.pruner.upper is None:
        fail("pruner.lower", "or pruner.upper must be set for the threshold pruner")
    if spec.n_trials is None and spec.timeout_s is None:
        fail("n_trials", "and timeout_s are both empty; the sweep would never end")
    if spec.n_trials is not None and spec.n_trials < 1:
        fail("n_trials", f"is {spec.n_trials}; it must be >= 1")
    if spec.timeout_s is not None and spec.timeout_s <= 0:
        fail("timeout_s", "must be > 0 seconds")
    if spec.epochs < 1:
        fail("epochs", f"is {spec.epochs}; it must be >= 1")
    if spec.heartbeat.interval_s < 1 or spec.heartbeat.grace_s <= spec.heartbeat.interval_s:
        fail("heartbeat.grace_s", "must exceed heartbeat.interval_s (>= 1)")
    if not spec.space:
        fail("space", "is empty; name at least one config key to search, e.g. train.lr_g")


def _check_param(spec: SweepSpec, key: str, p: ParamSpec, known: dict, fail: _Fail) -> None:
    name = f"space.{key}"
    if key not in known:
        fail(name, "is not a config key (known keys look like train.lr_g, train.code_weight, model.arch)")
    if key in RESERVED or key.startswith("tracking."):
        fail(name, "cannot be searched: the budget (epochs), evaluation cadence and tracking belong to the sweep")
    fail.unless_one_of(f"{name}.type", p.type, PARAM_TYPES)
    if p.type == "categorical":
        if not p.choices:
            fail(f"{name}.choices", "must list at least one value for a categorical parameter")
        if p.low is not None or p.high is not None or p.log:
            fail(name, "is categorical: give choices, not low/high/log")
        candidates = list(p.choices)
    else:
        if p.low is None or p.high is None:
            fail(name, f"needs low and high for a {p.type} parameter")
        if not p.low < p.high:
            fail(name, f"has low={p.low} >= high={p.high}; a range needs low < high")
        if p.log and p.low <= 0:
            fail(f"{name}.low", f"is {p.low}; a log-scale range must be positive")
        if p.log and p.step is not None:
            fail(f"{name}.step", "cannot be combined with log: true")
        if p.choices is not None:
            fail(f"{name}.choices", f"only applies to categorical parameters, not {p.type}")
        if p.type == "int" and not (float(p.low).is_integer() and float(p.high).is_integer()):
            fail(name, "is an int parameter; low and high must be whole numbers")
        candidates = [p.low, p.high] if p.type == "float" else [int(p.low), int(p.high)]
    for value in candidates:
        try:
            load_config(config_files(spec), [*spec.base.overrides, f"{key}={_as_override(value)}"])
        except ConfigError as e:
            fail(name, f"allows {value!r}, which the config rejects: {e}")


def _as_override(value: Any) -> str:
    return "null" if value is None else str(value)


def config_files(spec: SweepSpec) -> list[str]:
    """base.configs: relative paths are taken from the working directory, else the project's."""
    return [name if Path(name).is_file() else str(resolve_path(name)) for name in spec.base.configs]


def base_config(spec: SweepSpec, extra: tuple[str, ...] = ()) -> DictConfig:
    return load_config(config_files(spec), [*spec.base.overrides, f"train.epochs={spec.epochs}", *extra])


def experiment_of(spec: SweepSpec) -> str:
    return spec.experiment or spec.study_name


def trial_config(spec: SweepSpec, params: dict[str, Any], extra: tuple[str, ...] = ()) -> DictConfig:
    """The training config of a trial with these sampled params (also what --export-best writes)."""
    return base_config(spec, (*[f"{k}={_as_override(v)}" for k, v in params.items()], *extra))


def fmt_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
