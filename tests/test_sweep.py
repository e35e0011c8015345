"""Sweeps: the sweep file's checks, the smoke sweep's runs, pruning, crash-resume, several workers
and a PostgreSQL storage."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

import cli_process
from conftest import REPO, free_port, subprocess_env
from pipeline import faults

SMOKE_SWEEP = REPO / "sweeps" / "smoke.yaml"


def sweep_file(tmp_path: Path, mnist_cache: Path, name: str = "sweep.yaml", **changes) -> Path:
    """The smoke sweep with absolute paths, the session's MNIST cache, and ``changes`` on top."""
    spec = yaml.safe_load(SMOKE_SWEEP.read_text())
    spec["base"]["configs"] = [str(REPO / c) for c in spec["base"]["configs"]]
    spec["base"]["overrides"] = [f"data.cache_dir={mnist_cache}", *changes.pop("overrides", [])]
    spec.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def load_study(home: Path, name: str = "smoke", url: str | None = None):
    import optuna

    return optuna.load_study(study_name=name, storage=url or f"sqlite:///{home / 'optuna.db'}")


def runs_of(experiment: str):
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=100)


def children(experiment: str, parent: str):
    return [r for r in runs_of(experiment) if r.data.tags.get("mlflow.parentRunId") == parent]


# --- the sweep file ----------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"n_trails": 3}, "unknown field 'n_trails'"),
    ({"pruner": {"type": "median", "warmup": 1}}, "unknown field 'pruner.warmup'"),
    ({"space": {"train.lr_g": {"type": "float", "low": 1e-3, "high": 1e-4, "log": True}}},
     "field 'space.train.lr_g' has low=0.001 >= high=0.0001"),
    ({"space": {"train.lr_g": {"type": "float", "low": 0.0, "high": 1e-3, "log": True}}},
     "field 'space.train.lr_g.low' is 0.0; a log-scale range must be positive"),
    ({"space": {"train.code_weight": {"type": "float", "low": -1.0, "high": 1.0}}},
     "field 'space.train.code_weight' allows -1.0, which the config rejects"),
    ({"space": {"train.lr_gen": {"type": "float", "low": 1e-4, "high": 1e-3}}},
     "field 'space.train.lr_gen' is not a config key"),
    ({"space": {"train.epochs": {"type": "int", "low": 1, "high": 3}}}, "field 'space.train.epochs' cannot be searched"),
    ({"space": {"model.arch": {"type": "categorical", "choices": ["paper", "resnet"]}}},
     "field 'space.model.arch' allows 'resnet', which the config rejects"),
    ({"space": {"model.arch": {"type": "categorical"}}}, "field 'space.model.arch.choices' must list"),
    ({"pruner": {"type": "asha"}}, "field 'pruner.type' is 'asha'; expected one of: median, hyperband"),
    ({"objective": {"metric": "eval/accuracy"}}, "field 'objective.metric' is 'eval/accuracy'"),
    ({"n_trials": None}, "field 'n_trials' and timeout_s are both empty"),
    ({"epochs": "two"}, "wrong type for field 'epochs'"),
])
def test_a_malformed_sweep_file_names_the_field(tmp_path, mnist_cache, change, message):
    from pipeline.config import ConfigError
    from pipeline.sweep import load_spec

    with pytest.raises(ConfigError) as e:
        load_spec(sweep_file(tmp_path, mnist_cache, **change))
    assert message in str(e.value)


def test_missing_study_name_and_cli_error(tmp_path, capsys):
    from pipeline.cli import main

    path = tmp_path / "s.yaml"
    path.write_text("space: {train.lr_g: {low: 1.0e-4, high: 1.0e-3}}\n")
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "infogan sweep: config error:" in err and "field 'study_name' is required" in err
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "sweep file not found" in capsys.readouterr().err


@pytest.mark.parametrize("storage, says", [
    ("notaurl", "is not a database URL"),
    ("sqlite:///{file}/inside/optuna.db", "cannot make the folder of the SQLite storage"),
    ("postgresql+psycopg2://u:secret@127.0.0.1:{port}/optuna", "cannot connect to the Optuna storage"),
])
def test_a_storage_that_cannot_work_is_named_in_one_line_before_any_work(home, capsys, storage, says):
    from pipeline.cli import main

    (home / "a_file").write_text("")
    port = free_port()
    url = storage.format(file=home / "a_file", port=port)
    assert main(["sweep", str(SMOKE_SWEEP), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err
    assert "secret" not in err
    assert not (home / "data").exists()  # stopped before preparing the data


def test_shipped_sweep_files_are_valid():
    from pipeline.sweep import load_spec

    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        spec = load_spec(path)
        assert spec.space and spec.n_trials, path


def test_best_trial_breaks_ties_by_lower_fld():
    import optuna

    from pipeline.sweep import ObjectiveSpec, best_trial

    study = optuna.create_study(direction="maximize")
    for value, fld in ((0.950, 30.0), (0.953, 40.0), (0.951, 20.0), (0.90, 1.0)):
        study.add_trial(optuna.create_trial(value=value, user_attrs={"eval/fld": fld},
                                            params={"x": fld}, distributions={"x": optuna.distributions.FloatDistribution(0, 100)}))
    assert best_trial(study, ObjectiveSpec(tie_tolerance=0.005)).number == 2  # 0.951 with FLD 20
    assert best_trial(study, ObjectiveSpec(tie_tolerance=0.0)).number == 1  # strictly the best value
    assert best_trial(study, ObjectiveSpec(tie_breaker=None)).number == 1


# --- sweeps that train -------------------------------------------------------------------------

@pytest.mark.slow
def test_smoke_sweep_nests_three_comparable_trials_and_exports_the_best(home, mnist_cache):
    from optuna.trial import TrialState

    from pipeline import sweep
    from pipeline.config import load_config

    best_yaml = home / "best.yaml"
    best = sweep.stage(sweep_file(home, mnist_cache), export_best=best_yaml, log=lambda m: None)

    study = load_study(home)
    assert len(study.trials) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    parents = [r for r in runs_of("sweep-smoke") if r.data.tags.get("infogan.stage") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    kids = children("sweep-smoke", parent)
    assert len(kids) == 3
    assert {r.data.tags["optuna.trial"] for r in kids} == {"0", "1", "2"}
    assert {r.data.tags["optuna.study"] for r in kids} == {"smoke"}
    assert parents[0].info.run_name == "sweep smoke"
    assert {r.info.run_name for r in kids} == {"trial 0", "trial 1", "trial 2"}
    for run in kids:
        trial = study.trials[int(run.data.tags["optuna.trial"])]
        assert run.data.tags["optuna.state"] == trial.state.name
        assert run.info.status == ("FINISHED" if trial.state == TrialState.COMPLETE else "KILLED")
        for key, value in trial.params.items():  # the trial's params under the ordinary dotted keys
            assert run.data.params[key] == str(value)
    assert len({frozenset(r.data.metrics) for r in kids}) == 1
    assert len({frozenset(r.data.params) for r in kids}) == 1
    assert "eval/gen_accuracy" in kids[0].data.metrics

    from mlflow import MlflowClient

    artifacts = {a.path for a in MlflowClient().list_artifacts(parent)}
    assert {"trials.csv", "best_params.json", "optuna", "sweep.yaml"} <= artifacts
    figures = {a.path for a in MlflowClient().list_artifacts(parent, "optuna")}
    assert {"optuna/history.png", "optuna/slice.png", "optuna/parallel_coordinates.png"} <= figures

    exported = load_config([str(best_yaml)])
    for key, value in best.params.items():
        assert exported[key.split(".")[0]][key.split(".")[1]] == value

    # keep_checkpoints: best (the default): only the best trial's checkpoint is left, as its artifact.
    best_run = best.user_attrs["mlflow_run_id"]
    for run in kids:
        logged = [a.path for a in MlflowClient().list_artifacts(run.info.run_id, "checkpoints")]
        assert logged == (["checkpoints/last.pt"] if run.info.run_id == best_run else []), run.info.run_name
        assert not (home / "checkpoints" / run.info.run_id).exists()


@pytest.mark.slow
def test_a_pruned_trial_ends_killed(home, mnist_cache):
    from optuna.trial import TrialState

    from pipeline import sweep

    # No generator reaches an accuracy above 1: the threshold pruner stops the trial after epoch 1.
    path = sweep_file(home, mnist_cache, n_trials=1, pruner={"type": "threshold", "lower": 1.01})
    sweep.stage(path, log=lambda m: None)
    trial = load_study(home).trials[0]
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
    (run,) = [r for r in runs_of("sweep-smoke") if "optuna.trial" in r.data.tags]
    assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "PRUNED"


def _metric_steps(run_id: str, key: str) -> list[int]:
    from mlflow import MlflowClient

    return [m.step for m in MlflowClient().get_metric_history(run_id, key)]


def _sweep_stopped_after_first_epoch(home: Path, path: Path, signal_name: str) -> subprocess.CompletedProcess:
    """The sweep command, sent ``signal_name`` by itself as trial 0's first epoch ends (its
    checkpoint written and the epoch reported to Optuna): a deterministic point, not a race."""
    env = subprocess_env(home)
    env[faults.ENV], env[faults.SIGNAL_ENV] = "epoch_done:1", signal_name
    return cli_process.run(["sweep", str(path)], env, cwd=home, merge=True)


@pytest.mark.slow
def test_killed_sweep_resumes_the_trial_from_its_checkpoint(home, mnist_cache):
    from optuna.trial import TrialState

    from pipeline import sweep

    path = sweep_file(home, mnist_cache, n_trials=2, epochs=3, pruner={"type": "none"})
    killed = _sweep_stopped_after_first_epoch(home, path, "SIGKILL")  # a crash: no handler runs
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:]
    (caught,) = load_study(home).trials
    assert caught.state == TrialState.RUNNING and list(caught.intermediate_values) == [1]
    killed_run = caught.user_attrs["mlflow_run_id"]

    sweep.stage(path, log=lambda m: None)  # the same command again

    trials = load_study(home).trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 2 and states.count(TrialState.FAIL) == 1 and len(trials) == 3
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["mlflow_run_id"] == killed_run
    assert retry.params == trials[0].params
    steps = _metric_steps(killed_run, "loss/d")  # resumed, not restarted: each step once
    assert steps == list(range(2, 3 * 8 + 1, 2))
    assert _metric_steps(killed_run, "eval/gen_accuracy") == [8, 16, 24]
    kids = [r for r in runs_of("sweep-smoke") if "optuna.trial" in r.data.tags]
    assert len(kids) == 2 and all(r.info.status == "FINISHED" for r in kids)


def test_sigterm_stops_the_sweep_with_a_resume_hint_and_no_traceback(home, mnist_cache):
    from optuna.trial import TrialState

    from pipeline import sweep

    path = sweep_file(home, mnist_cache, n_trials=1, epochs=3, pruner={"type": "none"})
    stopped_proc = _sweep_stopped_after_first_epoch(home, path, "SIGTERM")
    out = stopped_proc.stdout
    assert stopped_proc.returncode == 143, out
    assert "Traceback" not in out and "failed with value None" not in out, out
    assert "trial 0 interrupted (terminated by SIGTERM); run " in out, out
    assert "Run the same command again to go on" in out, out
    (stopped,) = load_study(home).trials
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["interrupted"]

    sweep.stage(path, log=lambda m: None)  # the same command again: the trial goes on and completes

    trials = load_study(home).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["mlflow_run_id"] == stopped.user_attrs["mlflow_run_id"]
    assert _metric_steps(stopped.user_attrs["mlflow_run_id"], "eval/gen_accuracy") == [8, 16, 24]


def test_a_trial_stopped_again_and_again_is_queued_again_each_time():
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from pipeline import sweep

    sweep.quiet_experimental()
    study = optuna.create_study()
    trial = study.ask({"train.lr_g": FloatDistribution(1e-4, 1e-2, log=True)})
    params = trial.params
    for _ in range(4):  # more stops than heartbeat.max_retry (2) allows crashes
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
        sweep.requeue_interrupted(study)
        sweep.requeue_interrupted(study)  # a second look queues nothing more
        (waiting,) = study.get_trials(states=(TrialState.WAITING,))
        assert waiting.params == params
        trial = study.ask()
    assert sweep.describe(study) == "4 interrupted, 1 running"


@pytest.mark.slow
def test_two_workers_share_one_study_and_run_exactly_n_trials(home, mnist_cache):
    from optuna.trial import TrialState

    from pipeline import sweep

    sweep.stage(sweep_file(home, mnist_cache, pruner={"type": "none"}), workers=2, log=lambda m: None)
    trials = load_study(home).trials
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    kids = [r for r in runs_of("sweep-smoke") if "optuna.trial" in r.data.tags]
    assert sorted(r.data.tags["optuna.trial"] for r in kids) == ["0", "1", "2"]
    assert all(r.info.status == "FINISHED" for r in kids)


# --- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on 127.0.0.1 (Debian's postgresql package, which `make test`
    installs when it can), with its data in a temporary folder; stopped afterwards."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or [shutil.which("pg_ctl")]
    if not found[-1]:
        pytest.skip("PostgreSQL server binaries (pg_ctl) not found: install Debian's `postgresql`")
    bindir = Path(found[-1]).parent
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed")
    data = Path(tempfile.mkdtemp(prefix="infogan-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "infogan")
    pg(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "server.log"), "-w",
       "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start")
    try:
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "infogan", "optuna")
        yield f"postgresql+psycopg2://infogan@127.0.0.1:{port}/optuna"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_a_postgresql_storage(home, mnist_cache, postgres_url):
    from optuna.trial import TrialState

    from pipeline import sweep

    path = sweep_file(home, mnist_cache, n_trials=2, pruner={"type": "none"})
    sweep.stage(path, storage=postgres_url, workers=2, log=lambda m: None)
    trials = load_study(home, url=postgres_url).trials
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials)
    parent = load_study(home, url=postgres_url).user_attrs["mlflow_parent_run_id"]
    assert len(children("sweep-smoke", parent)) == 2
