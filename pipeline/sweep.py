"""Optuna sweeps: a sweep file (``sweeps/*.yaml``) defines the study; every trial is a training
run nested under one parent MLflow run, reported to the pruner after each in-training evaluation.

One study may be worked on by several processes, on one machine (``--workers N``) or many
(``--storage postgresql+psycopg2://...``). Workers take turns at a lock while they count the
study's trials and start one, so the study gets exactly ``n_trials`` finished trials whatever the
number of workers. A worker that dies leaves a RUNNING trial whose heartbeat stops; any worker
later marks it failed and Optuna's retry callback queues it again, and the retry resumes the
dead trial's MLflow run from its last checkpoint.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from .config import ConfigError, UsageError, flatten, load_config, project_dir, resolve_path, to_yaml

# What a trial is measured by: the eval/ metrics the training loop logs at every evaluation.
EVAL_METRICS = ("eval/gen_accuracy", "eval/q_accuracy", "eval/demo_score_mean", "eval/demo_score_min",
                "eval/demo_perfect_frac", "eval/min_code_purity", "eval/fld")
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
    metric: str = "eval/gen_accuracy"
    direction: str = "maximize"
    # Among trials within tie_tolerance of the best value, the best is the one with the best
    # tie_breaker (lowest FLD by default). Optuna itself optimises `metric` alone.
    tie_breaker: Optional[str] = "eval/fld"
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
    def fail(name: str, why: str) -> None:
        raise ConfigError(f"{source}: field '{name}' {why}")

    def one_of(name: str, value: Any, allowed: tuple) -> None:
        if value not in allowed:
            fail(name, f"is '{value}'; expected one of: {', '.join(allowed)}")

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

    try:
        base = base_config(spec)
    except ConfigError as e:
        raise ConfigError(f"{source}: the base config is unusable: {e}") from None
    known = flatten(base)
    for key, p in spec.space.items():
        name = f"space.{key}"
        if key not in known:
            fail(name, f"is not a config key (known keys look like train.lr_g, train.code_weight, model.arch)")
        if key in RESERVED or key.startswith("tracking."):
            fail(name, "cannot be searched: the budget (epochs), evaluation cadence and tracking belong to the sweep")
        one_of(f"{name}.type", p.type, PARAM_TYPES)
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
                fail(name, f"is an int parameter; low and high must be whole numbers")
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


# --- storage, sampler, pruner, lock ------------------------------------------------------------

def default_storage() -> str:
    return f"sqlite:///{project_dir() / 'optuna.db'}"


def shown_url(url: str) -> str:
    """The storage URL without its password (for logs and tags)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def check_storage(url: str) -> None:
    """A storage URL that cannot work is named in one line before any work: not a database URL,
    a SQLite file whose folder cannot be made, a server that does not answer within 10 s."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"--storage {url!r} is not a database URL; e.g. sqlite:///optuna.db or "
                         "postgresql+psycopg2://USER:PASS@HOST/DB") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UsageError(f"cannot make the folder of the SQLite storage {parsed.database}: "
                                 f"{e.strerror or e}") from None
        return
    connect_args = {"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {}
    try:
        engine = create_engine(parsed, connect_args=connect_args)
        with engine.connect():
            pass
        engine.dispose()
    except ImportError as e:
        raise UsageError(f"storage {shown_url(url)} needs a database driver that is not installed: {e}") from None
    except SQLAlchemyError as e:
        first = (str(getattr(e, "orig", None) or e).strip().splitlines() or ["no answer"])[0]
        raise UsageError(f"cannot connect to the Optuna storage {shown_url(url)}: {first}") from None


def make_storage(url: str, spec: SweepSpec):
    """Optuna's storage at ``url``, which :func:`check_storage` has passed (``run`` checks it
    before any work; its workers get the same URL)."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=spec.heartbeat.interval_s,
                          grace_period=spec.heartbeat.grace_s,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                              max_retry=spec.heartbeat.max_retry, inherit_intermediate_values=True))
    except optuna.exceptions.StorageInternalError as e:
        raise ConfigError(f"cannot open the Optuna storage {shown_url(url)}: {e}") from None


def make_sampler(spec: SweepSpec):
    import optuna

    s = spec.sampler
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.n_startup_trials)


def make_pruner(spec: SweepSpec):
    import optuna

    p = spec.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource, max_resource=spec.epochs,
                                              reduction_factor=p.reduction_factor)
    if p.type == "threshold":
        return optuna.pruners.ThresholdPruner(lower=p.lower, upper=p.upper)
    return optuna.pruners.NopPruner()


class StudyLock:
    """Held while a worker counts the trials and starts one, so two workers never both start the
    last trial. A file lock beside a SQLite storage; a PostgreSQL advisory lock on a server."""

    def __init__(self, url: str, study_name: str):
        self.url, self._file, self._conn = url, None, None
        self.key = zlib.crc32(study_name.encode())
        if url.startswith("sqlite:///"):
            self.path = Path(url[len("sqlite:///"):] + f".{study_name}.lock")
        elif url.startswith("postgresql"):
            from sqlalchemy import create_engine

            self.engine = create_engine(url, pool_pre_ping=True)
        else:
            raise ConfigError(f"storage {shown_url(url)}: only sqlite:/// and postgresql URLs are supported")

    def acquire(self) -> None:
        if self.url.startswith("sqlite:///"):
            self._file = open(self.path, "w")
            fcntl.flock(self._file, fcntl.LOCK_EX)
        else:
            from sqlalchemy import text

            self._conn = self.engine.connect()
            self._conn.execute(text("select pg_advisory_lock(:k)"), {"k": self.key})

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            from sqlalchemy import text

            self._conn.execute(text("select pg_advisory_unlock(:k)"), {"k": self.key})
            self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def held(self):
        self.acquire()
        try:
            yield
        finally:
            self.release()


# --- the study ---------------------------------------------------------------------------------

class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a trial stopped by Ctrl-C or SIGTERM as a failure with its traceback, then
    again as "failed with value None"; the sweep says itself that the trial was interrupted and
    how to go on. Other failures keep their traceback (the second line only repeats it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and issubclass(record.exc_info[0], (KeyboardInterrupt, InterruptedError)):
            return False
        return not record.getMessage().endswith("failed with value None.")


def _quiet_experimental():
    """Heartbeats and the retry callback are 'experimental' in Optuna; its per-trial INFO lines
    repeat what the sweep prints itself, and so do its tracebacks of interrupted trials."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _NoInterruptTraceback) for f in handler.filters):
            handler.addFilter(_NoInterruptTraceback())


def open_study(spec: SweepSpec, url: str):
    import optuna

    _quiet_experimental()
    return optuna.create_study(study_name=spec.study_name, storage=make_storage(url, spec),
                               sampler=make_sampler(spec), pruner=make_pruner(spec),
                               direction=spec.objective.direction, load_if_exists=True)


def prepare_study(spec: SweepSpec, url: str, log: Callable[[str], None] = print):
    """Create the study (and its storage schema) and the parent MLflow run once, before any
    worker starts; on a re-run, reopen both. Returns (study, parent run id)."""
    import optuna
    from mlflow import MlflowClient

    from . import tracking

    tracking.configure()
    lock = StudyLock(url, spec.study_name)
    with lock.held():
        study = open_study(spec, url)
        if study.direction.name.lower() != spec.objective.direction:
            raise ConfigError(f"study '{spec.study_name}' in {shown_url(url)} was created to "
                              f"{study.direction.name.lower()}; the sweep file says "
                              f"objective.direction={spec.objective.direction}. Use a new study_name.")
        parent = study.user_attrs.get(PARENT_ATTR)
        if parent is None or tracking.get_run(parent) is None:
            parent = tracking.new_run(experiment_of(spec), f"sweep {spec.study_name}", {
                "infogan.stage": "sweep", "optuna.study": spec.study_name, "optuna.storage": shown_url(url),
                "optuna.direction": spec.objective.direction, "optuna.metric": spec.objective.metric})
            tracker = tracking.MlflowTracker(parent)
            tracker.log_text(yaml.safe_dump(OmegaConf.to_container(OmegaConf.structured(spec)),
                                            sort_keys=False), "sweep.yaml")
            study.set_user_attr(PARENT_ATTR, parent)
            log(f"created study '{spec.study_name}' in {shown_url(url)}; parent run {parent}")
        else:
            MlflowClient().update_run(parent, status="RUNNING")
            log(f"resuming study '{spec.study_name}' ({_summary(study)}); parent run {parent}")
        _requeue_interrupted(study)
    return study, parent


def _interrupted(trial) -> bool:
    """Stopped by Ctrl-C/SIGTERM (not a crash or an error): the trial failed with the mark set."""
    from optuna.trial import TrialState

    return trial.state == TrialState.FAIL and bool(trial.user_attrs.get("interrupted"))


def _summary(study) -> str:
    from collections import Counter

    counts = Counter("interrupted" if _interrupted(t) else t.state.name.lower()
                     for t in study.get_trials(deepcopy=False))
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials yet"


def _requeue_interrupted(study) -> None:
    """Trials stopped by Ctrl-C/SIGTERM end FAIL (their runs KILLED, checkpoint saved); queue each
    once more, as the heartbeat callback does for a crashed worker's trial. A stop asked for is
    not a failure, so heartbeat.max_retry does not limit how often a trial may be stopped."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in Retry.retry_history(t)}
    for t in trials:
        if _interrupted(t) and t.number not in retried:
            Retry(max_retry=None, inherit_intermediate_values=True)(study, t)


def best_trial(study, objective: ObjectiveSpec):
    """The best complete trial: the best objective value, ties (within tie_tolerance) broken by
    the tie-breaker metric, then by the earlier trial."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return None
    sign = 1.0 if objective.direction == "maximize" else -1.0
    top = max(sign * t.value for t in done)
    close = [t for t in done if sign * t.value >= top - objective.tie_tolerance]

    def tie_key(t) -> float:
        if objective.tie_breaker is None:
            return 0.0
        value = t.user_attrs.get(objective.tie_breaker)
        if value is None or not math.isfinite(value):
            return math.inf
        return value if objective.tie_breaker_direction == "minimize" else -value

    return min(close, key=lambda t: (tie_key(t), -sign * t.value, t.number))


# --- a worker ----------------------------------------------------------------------------------

def work(spec: SweepSpec, url: str, threads: Optional[int] = None, worker: str = "worker",
         log: Callable[[str], None] = print) -> int:
    """Run trials until the study holds ``n_trials`` finished ones (waiting for other workers'
    running trials, and retrying those whose worker died) or ``timeout_s`` has passed. Returns
    the number of trials this worker ran."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from . import tracking
    from .train import NonFiniteLoss

    tracking.configure()
    _quiet_experimental()
    study = optuna.load_study(study_name=spec.study_name, storage=make_storage(url, spec),
                              sampler=make_sampler(spec), pruner=make_pruner(spec))
    parent = study.user_attrs[PARENT_ATTR]
    lock = StudyLock(url, spec.study_name)
    deadline = None if spec.timeout_s is None else time.monotonic() + spec.timeout_s
    finished_states = (TrialState.COMPLETE, TrialState.PRUNED)
    callbacks = [MaxTrialsCallback(spec.n_trials, states=finished_states)] if spec.n_trials else []
    ran, failures = 0, 0
    while deadline is None or time.monotonic() < deadline:
        lock.acquire()
        try:
            optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            count = {state: sum(t.state == state for t in trials) for state in TrialState}
            finished = count[TrialState.COMPLETE] + count[TrialState.PRUNED]
            if spec.n_trials is not None and finished >= spec.n_trials:
                break
            start = (count[TrialState.WAITING] > 0 or spec.n_trials is None
                     or finished + count[TrialState.RUNNING] < spec.n_trials)
            if start:
                objective = _Objective(spec, parent, threads, lock, worker, log)
                study.optimize(objective, n_trials=1, catch=(NonFiniteLoss,), callbacks=callbacks)
                ran += 1
                failures = failures + 1 if objective.failed else 0
                if failures >= 3:
                    raise RuntimeError(f"{worker}: three trials in a row failed (see their runs' "
                                       f"logs); stopping rather than retrying forever")
                continue
        finally:
            lock.release()
        # Every remaining trial is running in another worker: wait, and take over any that dies.
        time.sleep(min(spec.heartbeat.interval_s, 5))
    return ran


class _Objective:
    """One trial: build its config, train it as a child run, report each evaluation, return the
    objective metric of the last one."""

    def __init__(self, spec: SweepSpec, parent: str, threads: Optional[int], lock: StudyLock,
                 worker: str, log: Callable[[str], None]):
        self.spec, self.parent, self.threads, self.lock, self.worker, self.log = spec, parent, threads, lock, worker, log
        self.failed = False

    def __call__(self, trial) -> float:
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

        from . import tracking, train

        self.lock.release()  # the trial exists (RUNNING): other workers may count it now
        if trial.user_attrs.get("interrupted"):  # inherited from the interrupted trial it retries
            trial.set_user_attr("interrupted", False)
        spec = self.spec
        params = {key: _suggest(trial, key, p) for key, p in spec.space.items()}
        extra = [f"tracking.experiment={experiment_of(spec)}",
                 shlex.quote(f"tracking.run_name=trial {trial.number}"), "eval.every_epochs=1"]
        if self.threads:
            extra.append(f"train.threads={self.threads}")
        cfg = trial_config(spec, params, tuple(extra))
        frozen = trial.study.get_trials(deepcopy=False)[trial.number]  # a live Trial has no system_attrs
        retried_from = Retry.retried_trial_number(frozen)
        resume = self._resumable(cfg, trial.user_attrs.get(RUN_ID_ATTR)) if retried_from is not None else None
        tags = {"optuna.study": spec.study_name, "optuna.trial": trial.number, "optuna.state": "RUNNING"}
        if retried_from is not None:
            tags["optuna.retried_from"] = retried_from
        self.log(f"[{self.worker}] trial {trial.number}: "
                 + ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
                 + (f" (retry of trial {retried_from}" + (f", resuming run {resume})" if resume else ")")
                    if retried_from is not None else ""))
        last: dict[str, float] = {}

        def on_eval(epoch: int, step: int, measured: dict) -> None:
            last.update(measured)
            self.log(f"[{self.worker}] trial {trial.number} epoch {epoch}/{cfg.train.epochs}: "
                     f"{spec.objective.metric}={measured[spec.objective.metric]:.4f}")
            trial.report(measured[spec.objective.metric], epoch)
            if trial.should_prune():
                raise Pruned(f"pruned after epoch {epoch}: {spec.objective.metric}="
                             f"{measured[spec.objective.metric]:.4f}")

        run_id = None

        def on_start(started: str) -> None:
            nonlocal run_id
            run_id = started
            trial.set_user_attr(RUN_ID_ATTR, started)

        def end(state: str) -> None:
            if run_id is not None:
                tracking.MlflowTracker(run_id).set_tags({"optuna.state": state})

        try:
            train.run(cfg, resume=resume, auto_resume=False, parent_run_id=self.parent, tags=tags,
                      on_eval=on_eval, on_start=on_start, log=lambda m: None)
        except Pruned as e:
            end("PRUNED")
            self.log(f"[{self.worker}] trial {trial.number} {e}")
            import optuna

            raise optuna.TrialPruned(str(e)) from None
        except (KeyboardInterrupt, InterruptedError) as e:
            trial.set_user_attr("interrupted", True)
            end("FAIL")
            self.log(f"[{self.worker}] trial {trial.number} interrupted ({str(e) or 'Ctrl-C'})"
                     + (f"; run {run_id} keeps its checkpoint" if run_id is not None else ""))
            raise
        except BaseException:
            self.failed = True
            end("FAIL")
            raise
        for key, value in last.items():
            trial.set_user_attr(key, value)
        end("COMPLETE")
        value = last[spec.objective.metric]
        self.log(f"[{self.worker}] trial {trial.number} finished: {spec.objective.metric}={value:.4f}"
                 + (f", FLD {last['eval/fld']:.2f}" if "eval/fld" in last else ""))
        return value

    def _resumable(self, cfg: DictConfig, run_id: Optional[str]) -> Optional[str]:
        """The dead trial's run, if it left a checkpoint short of the last epoch; else that run
        is ended FAILED (never left RUNNING) and the retry starts a new one."""
        from . import tracking, train

        if run_id is None or tracking.get_run(run_id) is None:
            return None
        state = train.load_checkpoint(cfg, run_id)
        if state is not None and state["epoch"] < cfg.train.epochs:
            return run_id
        if tracking.get_run(run_id).info.status == "RUNNING":
            tracking.end_run(run_id, "FAILED")
        return None


def _suggest(trial, key: str, p: ParamSpec):
    if p.type == "categorical":
        return trial.suggest_categorical(key, list(p.choices))
    if p.type == "int":
        return trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# --- the command -------------------------------------------------------------------------------

def run(path: str | Path, storage: Optional[str] = None, workers: int = 1,
        export_best: Optional[Path] = None, log: Callable[[str], None] = print) -> Optional[Any]:
    """``infogan sweep``: prepare the study, run ``workers`` local workers on it, then log the
    trials table, best params and Optuna's figures to the parent run. Returns the best trial."""
    spec = load_spec(path)
    if workers < 1:
        raise ConfigError(f"--workers is {workers}; it must be >= 1")
    from . import data, tracking
    from .evaluate import get_classifier
    from .hardware import pick_device

    url = storage or spec.storage or default_storage()
    check_storage(url)
    base = base_config(spec)
    # Data and the reference classifier once, here, so that workers do not race to build them.
    arrays, info = data.prepare(base.data, log=log)
    get_classifier(base, data.as_tensors(arrays, pick_device(base.train.device)), info.sha256, log)
    study, parent = prepare_study(spec, url, log)
    # Under `mlflow run -e sweep` the launcher's run only points at the sweep's parent run (which
    # outlives it when the sweep is resumed by a later command).
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)
    if launcher:
        tracking.MlflowTracker(launcher).set_tags({"infogan.stage": "sweep-launcher",
                                                   "infogan.sweep_parent_run_id": parent,
                                                   "optuna.study": spec.study_name})
    status = "FAILED"
    try:
        if workers == 1:
            work(spec, url, log=log)
        else:
            _spawn_workers(path, url, workers, log)
        status = "FINISHED"
    except (KeyboardInterrupt, InterruptedError):
        status = "KILLED"
        raise
    finally:
        best = summarise(study, spec, parent, log)
        tracking.end_run(parent, status)
        if status == "KILLED":
            log(f"sweep '{spec.study_name}' interrupted. Run the same command again to go on: "
                f"interrupted trials are retried from their checkpoints")
    if status == "FINISHED" and spec.keep_checkpoints == "best":
        drop_checkpoints(study, spec, best, log)
    if export_best is not None:
        write_best(spec, best, export_best, log)
    return best


def drop_checkpoints(study, spec: SweepSpec, best, log: Callable[[str], None] = print) -> None:
    """Remove every trial's checkpoint but the best one's: the logged copy and any working copy
    left (a pruned trial keeps its working copy)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from . import checkpoint, tracking, train

    checkpoints = resolve_path(base_config(spec, ()).tracking.checkpoint_dir)
    dropped = False
    for trial in study.get_trials(deepcopy=False):
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id is None or (best is not None and trial.number == best.number):
            continue
        folder = checkpoints / run_id
        if folder.is_dir() and not checkpoint.RunLock(folder).is_held_elsewhere():
            shutil.rmtree(folder, ignore_errors=True)
            dropped = True
        run = tracking.get_run(run_id)
        if run is not None and train.checkpoint_logged(run_id):
            get_artifact_repository(run.info.artifact_uri).delete_artifacts("checkpoints")
            dropped = True
    if dropped:
        log("kept only the best trial's checkpoint (keep_checkpoints: best); removed the others'")


def _spawn_workers(path, url: str, workers: int, log: Callable[[str], None]) -> None:
    threads = max(1, (os.cpu_count() or 1) // workers)
    cmd = [sys.executable, "-m", "pipeline", "sweep", str(path), "--storage", url, "--worker",
           "--threads", str(threads)]
    procs = [subprocess.Popen([*cmd, "--worker-name", f"worker-{i}"]) for i in range(workers)]
    log(f"started {workers} worker processes ({threads} torch threads each)")
    try:
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    bad = [f"worker-{i} exited {c}" for i, c in enumerate(codes) if c != 0]
    if bad:
        raise RuntimeError("; ".join(bad))


def summarise(study, spec: SweepSpec, parent: str, log: Callable[[str], None] = print):
    """Log the trials table, best params and Optuna's figures to the parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as oplt

    from . import tracking

    tracker = tracking.MlflowTracker(parent)
    trials = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs",
                                           "datetime_start", "datetime_complete", "duration"))
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "trials.csv"
        trials.to_csv(csv, index=False)
        tracker.log_artifact(csv)
    best = best_trial(study, spec.objective)
    if best is not None:
        summary = {"trial": best.number, "value": best.value, "metric": spec.objective.metric,
                   "params": best.params, "mlflow_run_id": best.user_attrs.get(RUN_ID_ATTR),
                   "metrics": {k: v for k, v in best.user_attrs.items() if k.startswith("eval/")}}
        tracker.log_text(json.dumps(summary, indent=2), "best_params.json")
        tracker.set_tags({"optuna.best_trial": best.number, "optuna.best_run_id": summary["mlflow_run_id"]})
        tracker.log_metrics({f"best/{spec.objective.metric}": best.value,
                             "trials/complete": len(study.get_trials(states=(TrialState.COMPLETE,))),
                             "trials/pruned": len(study.get_trials(states=(TrialState.PRUNED,)))}, step=0)
        tracker.flush()
        log(f"best: trial {best.number}, {spec.objective.metric}={best.value:.4f}, "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()))
    figures = {"history": oplt.plot_optimization_history, "importances": oplt.plot_param_importances,
               "parallel_coordinates": oplt.plot_parallel_coordinate, "slice": oplt.plot_slice}
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        figures = {}  # each would only warn that there is nothing to plot
        log("no complete trial yet, so no Optuna figures")
    for name, plot in figures.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                axes = plot(study)
            except Exception as e:  # noqa: BLE001  (too few trials for this plot, say)
                log(f"optuna figure '{name}' skipped: {e}")
                continue
        figure = np.atleast_1d(axes).flat[0].figure
        tracker.log_figure(figure, f"optuna/{name}.png", save_kwargs={"bbox_inches": "tight", "dpi": 110})
        plt.close(figure)
    logged = "trials table, best params and figures" if best is not None else "trials table"
    log(f"sweep '{spec.study_name}': {_summary(study)}; {logged} logged to parent run {parent}")
    return best


def write_best(spec: SweepSpec, best, out: Path, log: Callable[[str], None] = print) -> None:
    if best is None:
        raise ConfigError(f"study '{spec.study_name}' has no complete trial yet; nothing to export")
    cfg = trial_config(spec, best.params)
    header = (f"# Best trial {best.number} of sweep '{spec.study_name}': {spec.objective.metric}="
              f"{best.value:.4f} after {spec.epochs} epochs.\n"
              f"# Train it with:  infogan train -c {out}   (add train.epochs=N for a longer run)\n")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(header + to_yaml(cfg))
    os.replace(tmp, out)
    log(f"wrote the best trial's config to {out}")
    run_id = best.user_attrs.get(RUN_ID_ATTR)
    if run_id:
        from . import evaluate, tracking

        name = cfg.tracking.registered_model
        if name and tracking.registered_version(name, run_id) is not None:
            evaluate.promote(run_id, log=log)
        else:
            log(f"the best trial's run is {run_id}; to demo with its generator: "
                f"infogan evaluate --run-id {run_id} && infogan promote {run_id}")
