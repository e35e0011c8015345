"""The study: its storage (SQLite or PostgreSQL), sampler, pruner, the lock workers take turns
at, and the parent MLflow run every trial is a child of."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import warnings
import zlib
from pathlib import Path
from typing import Callable

import yaml
from omegaconf import OmegaConf

from .. import names
from ..config import ConfigError, UsageError, project_dir
from .spec import PARENT_ATTR, SweepSpec, experiment_of

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


def quiet_experimental():
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

    quiet_experimental()
    return optuna.create_study(study_name=spec.study_name, storage=make_storage(url, spec),
                               sampler=make_sampler(spec), pruner=make_pruner(spec),
                               direction=spec.objective.direction, load_if_exists=True)


def prepare_study(spec: SweepSpec, url: str, log: Callable[[str], None] = print):
    """Create the study (and its storage schema) and the parent MLflow run once, before any
    worker starts; on a re-run, reopen both. Returns (study, parent run id)."""
    from .. import tracking

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
                names.STAGE: "sweep", names.OPTUNA_STUDY: spec.study_name, names.OPTUNA_STORAGE: shown_url(url),
                names.OPTUNA_DIRECTION: spec.objective.direction, names.OPTUNA_METRIC: spec.objective.metric})
            tracker = tracking.MlflowTracker(parent)
            tracker.log_text(yaml.safe_dump(OmegaConf.to_container(OmegaConf.structured(spec)),
                                            sort_keys=False), "sweep.yaml")
            study.set_user_attr(PARENT_ATTR, parent)
            log(f"created study '{spec.study_name}' in {shown_url(url)}; parent run {parent}")
        else:
            tracking.mark_running(parent)
            log(f"resuming study '{spec.study_name}' ({describe(study)}); parent run {parent}")
        requeue_interrupted(study)
    return study, parent


def _interrupted(trial) -> bool:
    """Stopped by Ctrl-C/SIGTERM (not a crash or an error): the trial failed with the mark set."""
    from optuna.trial import TrialState

    return trial.state == TrialState.FAIL and bool(trial.user_attrs.get("interrupted"))


def describe(study) -> str:
    from collections import Counter

    counts = Counter("interrupted" if _interrupted(t) else t.state.name.lower()
                     for t in study.get_trials(deepcopy=False))
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials yet"


def requeue_interrupted(study) -> None:
    """Trials stopped by Ctrl-C/SIGTERM end FAIL (their runs KILLED, checkpoint saved); queue each
    once more, as the heartbeat callback does for a crashed worker's trial. A stop asked for is
    not a failure, so heartbeat.max_retry does not limit how often a trial may be stopped."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in Retry.retry_history(t)}
    for t in trials:
        if _interrupted(t) and t.number not in retried:
            Retry(max_retry=None, inherit_intermediate_values=True)(study, t)
