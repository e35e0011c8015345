"""A worker: takes trials from the study until it holds ``n_trials`` finished ones; each trial
trains a child run and reports every in-training evaluation to the pruner."""
from __future__ import annotations

import shlex
import time
from typing import Callable, Optional

from omegaconf import DictConfig

from .. import names, runs, tracking, train
from ..loop import NonFiniteLoss
from .spec import PARENT_ATTR, RUN_ID_ATTR, ParamSpec, Pruned, SweepSpec, experiment_of, fmt_value, trial_config
from .study import StudyLock, make_pruner, make_sampler, make_storage, quiet_experimental


def work(spec: SweepSpec, url: str, threads: Optional[int] = None, worker: str = "worker",
         log: Callable[[str], None] = print) -> int:
    """Run trials until the study holds ``n_trials`` finished ones (waiting for other workers'
    running trials, and retrying those whose worker died) or ``timeout_s`` has passed. Returns
    the number of trials this worker ran."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    tracking.configure()
    quiet_experimental()
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
        self.run_id: Optional[str] = None

    def __call__(self, trial) -> float:
        import optuna

        self.lock.release()  # the trial exists (RUNNING): other workers may count it now
        if trial.user_attrs.get("interrupted"):  # inherited from the interrupted trial it retries
            trial.set_user_attr("interrupted", False)
        cfg, resume, tags = self._prepare(trial)
        last: dict[str, float] = {}
        try:
            child = train.Child(self.parent, tags, on_eval=self._reporter(trial, cfg, last),
                                on_start=lambda run_id: self._started(trial, run_id))
            train.stage(cfg, resume=resume, auto_resume=False, log=lambda m: None, child=child)
        except Pruned as e:
            self._end("PRUNED")
            self.log(f"[{self.worker}] trial {trial.number} {e}")
            raise optuna.TrialPruned(str(e)) from None
        except (KeyboardInterrupt, InterruptedError) as e:
            trial.set_user_attr("interrupted", True)
            self._end("FAIL")
            self.log(f"[{self.worker}] trial {trial.number} interrupted ({str(e) or 'Ctrl-C'})"
                     + (f"; run {self.run_id} keeps its checkpoint" if self.run_id is not None else ""))
            raise
        except BaseException:
            self.failed = True
            self._end("FAIL")
            raise
        for key, value in last.items():
            trial.set_user_attr(key, value)
        self._end("COMPLETE")
        value = last[self.spec.objective.metric]
        self.log(f"[{self.worker}] trial {trial.number} finished: {self.spec.objective.metric}={value:.4f}"
                 + (f", FLD {last[names.FLD]:.2f}" if names.FLD in last else ""))
        return value

    def _prepare(self, trial) -> tuple[DictConfig, Optional[str], dict]:
        """The trial's config, the run it resumes (a retry of a dead trial) and its run's tags."""
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

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
        tags = {names.OPTUNA_STUDY: spec.study_name, names.OPTUNA_TRIAL: trial.number, names.OPTUNA_STATE: "RUNNING"}
        if retried_from is not None:
            tags[names.OPTUNA_RETRIED_FROM] = retried_from
        self.log(f"[{self.worker}] trial {trial.number}: "
                 + ", ".join(f"{k}={fmt_value(v)}" for k, v in params.items())
                 + (f" (retry of trial {retried_from}" + (f", resuming run {resume})" if resume else ")")
                    if retried_from is not None else ""))
        return cfg, resume, tags

    def _reporter(self, trial, cfg: DictConfig, last: dict) -> Callable[[int, int, dict], None]:
        """The training run's ``on_eval``: report to the pruner, which may stop the trial."""
        metric = self.spec.objective.metric

        def on_eval(epoch: int, step: int, measured: dict) -> None:
            last.update(measured)
            self.log(f"[{self.worker}] trial {trial.number} epoch {epoch}/{cfg.train.epochs}: "
                     f"{metric}={measured[metric]:.4f}")
            trial.report(measured[metric], epoch)
            if trial.should_prune():
                raise Pruned(f"pruned after epoch {epoch}: {metric}={measured[metric]:.4f}")

        return on_eval

    def _started(self, trial, run_id: str) -> None:
        self.run_id = run_id
        trial.set_user_attr(RUN_ID_ATTR, run_id)

    def _end(self, state: str) -> None:
        if self.run_id is not None:
            tracking.MlflowTracker(self.run_id).set_tags({names.OPTUNA_STATE: state})

    def _resumable(self, cfg: DictConfig, run_id: Optional[str]) -> Optional[str]:
        """The dead trial's run, if it left a checkpoint short of the last epoch; else that run
        is ended FAILED (never left RUNNING) and the retry starts a new one."""
        if run_id is None or tracking.get_run(run_id) is None:
            return None
        state = runs.load_checkpoint(cfg, run_id)
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
