"""After the trials: the trials table, best params and Optuna's figures on the parent run, the
best trial's config, and dropping the other trials' checkpoints."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable

from .. import names
from ..config import ConfigError, resolve_path, to_yaml
from .spec import RUN_ID_ATTR, ObjectiveSpec, SweepSpec, base_config, fmt_value, trial_config
from .study import describe


def drop_checkpoints(study, spec: SweepSpec, best, log: Callable[[str], None] = print) -> None:
    """Remove every trial's checkpoint but the best one's: the logged copy and any working copy
    left (a pruned trial keeps its working copy)."""
    from .. import checkpoint, runs, tracking

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
        if run is not None and runs.checkpoint_logged(run_id):
            tracking.delete_artifacts(run_id, names.CHECKPOINTS_DIR)
            dropped = True
    if dropped:
        log("kept only the best trial's checkpoint (keep_checkpoints: best); removed the others'")


def summarise(study, spec: SweepSpec, parent: str, log: Callable[[str], None] = print):
    """Log the trials table, best params and Optuna's figures to the parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as oplt

    from .. import tracking

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
                   "metrics": {k: v for k, v in best.user_attrs.items() if k.startswith(names.EVAL_PREFIX)}}
        tracker.log_text(json.dumps(summary, indent=2), "best_params.json")
        tracker.set_tags({names.OPTUNA_BEST_TRIAL: best.number, names.OPTUNA_BEST_RUN_ID: summary["mlflow_run_id"]})
        tracker.log_metrics({f"best/{spec.objective.metric}": best.value,
                             "trials/complete": len(study.get_trials(states=(TrialState.COMPLETE,))),
                             "trials/pruned": len(study.get_trials(states=(TrialState.PRUNED,)))}, step=0)
        tracker.flush()
        log(f"best: trial {best.number}, {spec.objective.metric}={best.value:.4f}, "
            + ", ".join(f"{k}={fmt_value(v)}" for k, v in best.params.items()))
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
    log(f"sweep '{spec.study_name}': {describe(study)}; {logged} logged to parent run {parent}")
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
        from .. import evaluate, tracking

        name = cfg.tracking.registered_model
        if name and tracking.registered_version(name, run_id) is not None:
            evaluate.promote(run_id, log=log)
        else:
            log(f"the best trial's run is {run_id}; to demo with its generator: "
                f"infogan evaluate --run-id {run_id} && infogan promote {run_id}")


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
