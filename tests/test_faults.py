"""Fault injection: a smoke run SIGKILLed at chosen points (reached deterministically through
pipeline.faults, not by timing), then the plain command again. Every case must end with one
FINISHED run whose curves equal an uninterrupted run's, one point per step, nothing RUNNING,
no temporary checkpoint file left."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

import cli_process
from conftest import SMOKE, free_port, own_store, subprocess_env
from pipeline import faults, tracking

# (kill point, what it interrupts); smoke: 2 epochs of 8 steps, a point logged every 2 steps.
CASES = [
    ("step_logged:1", "mid-epoch, before the first checkpoint"),
    ("evaluated:2", "during the last epoch's evaluation"),
    ("step_logged:6", "mid-epoch, after a checkpoint"),
    ("checkpoint_written:2", "inside the last checkpoint's write"),
    ("trained", "between the last checkpoint and the close"),
    ("generator_logged", "inside model logging"),
    ("checkpoint_logged", "after the final checkpoint was logged, before the close"),
]


def train_args(mnist_cache) -> list[str]:
    return ["train", "-c", str(SMOKE), f"data.cache_dir={mnist_cache}", "tracking.log_model=true"]


def killed_train(home, mnist_cache, kill_at: str) -> subprocess.CompletedProcess:
    """The training command in a process of its own, which kills itself at ``kill_at``."""
    env = subprocess_env(home)
    env[faults.ENV] = kill_at
    return cli_process.run(train_args(mnist_cache), env)


def train(mnist_cache, capsys) -> tuple[int, str, str]:
    """The same command, run to its end in this process (its exit code, stdout and stderr): it
    needs no process of its own, and this one has torch and MLflow imported already."""
    from pipeline.cli import main

    capsys.readouterr()
    code = main(train_args(mnist_cache))
    out, err = capsys.readouterr()
    return code, out, err


def grid_steps(run_id: str) -> list[int]:
    """The step of every sample grid logged (MLflow names each image file
    samples+step+<step>+timestamp+<ms>+<uuid>.<ext>; one grid may have several files)."""
    names = [a.path.rsplit("/", 1)[-1] for a in MlflowClient().list_artifacts(run_id, "images")]
    return sorted(int(step) for step, _ in {tuple(n.split("+")[2:5:2]) for n in names if n.startswith("samples+step+")})


def curves(run_id: str) -> dict:
    client = MlflowClient()
    keys = client.get_run(run_id).data.metrics
    return {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
            for key in keys if not key.startswith("perf/") and not key.startswith("system/")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_cache, store_template):
    from pipeline.cli import main

    with own_store(tmp_path_factory.mktemp("reference"), store_template) as home:
        assert main(train_args(mnist_cache)) == 0
        client = MlflowClient()
        (run,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
        return curves(run.info.run_id), grid_steps(run.info.run_id)


@pytest.mark.parametrize("kill_at, what", CASES, ids=[c[0] for c in CASES])
def test_killed_run_is_finished_by_the_plain_rerun(home, mnist_cache, uninterrupted, capsys, kill_at, what):
    killed = killed_train(home, mnist_cache, kill_at)
    assert killed.returncode == -signal.SIGKILL, (what, killed.stderr[-2000:])
    code, out, err = train(mnist_cache, capsys)
    assert code == 0, (what, err[-2000:])

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"], what
    (finished,) = [r for r in runs if r.info.status == "FINISHED"]
    others = [r for r in runs if r.info.status != "FINISHED"]
    if kill_at == "step_logged:1":  # nothing to resume: ended FAILED, the user told, a new run trained
        assert len(others) == 1 and others[0].data.tags["infogan.stop_reason"].startswith("killed before")
        assert "now marked FAILED" in out
    else:
        assert not others and "resuming" in out, out
    if kill_at in ("trained", "generator_logged", "checkpoint_logged"):
        assert "completing it" in out

    reference_curves, reference_grids = uninterrupted
    got = curves(finished.info.run_id)
    assert got == reference_curves, what  # every metric: same steps, one point each, same values
    assert grid_steps(finished.info.run_id) == reference_grids, what  # one grid per epoch
    assert "samples/final.png" in {a.path for a in client.list_artifacts(finished.info.run_id, "samples")}
    tracker = tracking.MlflowTracker(finished.info.run_id)
    assert tracker.has_model("generator") and tracker.has_model("discriminator")
    models = client.search_logged_models([finished.info.experiment_id],
                                         filter_string=f"source_run_id = '{finished.info.run_id}'")
    assert sorted(m.name for m in models if str(m.status).endswith("READY")) == [
        "discriminator", "generator", "generator_pyfunc"]
    assert not list((home / "checkpoints").rglob("*.tmp")), what
    # One copy kept: the logged final checkpoint; the working copy is gone.
    assert "checkpoints/last.pt" in {a.path for a in client.list_artifacts(finished.info.run_id, "checkpoints")}
    assert not (home / "checkpoints" / finished.info.run_id).exists(), what


def _start_server(home, port: int) -> subprocess.Popen:
    import time
    import urllib.request

    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{home / 'server.db'}",
               "--artifacts-destination", str(home / "server-artifacts"), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    env = subprocess_env(home)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    # MLflow's server also starts job-runner processes (for its GenAI jobs): half a minute of CPU
    # that the other tests' worker would wait for, and no part of the tracking API.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return server
        except OSError:
            time.sleep(0.5)
    _stop(server)
    pytest.fail("the MLflow server did not start")


def _stop(server: subprocess.Popen) -> None:
    import os

    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)  # the server and its workers, as a crash would
    server.wait(timeout=30)


def _wait_for(path: Path, training: cli_process.Command) -> None:
    import time

    deadline = time.monotonic() + 300
    while not path.exists():
        assert training.poll() is None and time.monotonic() < deadline, training.output()[0][-3000:]
        time.sleep(0.1)


def _wait_until_stored(client: MlflowClient, step: int, training: cli_process.Command) -> None:
    """Until the server holds the smoke run's ``loss/d`` at ``step`` (the sender is then idle)."""
    import time

    deadline = time.monotonic() + 120
    while True:
        experiment = client.get_experiment_by_name("smoke")
        found = client.search_runs([experiment.experiment_id]) if experiment else []
        if found and step in {m.step for m in client.get_metric_history(found[0].info.run_id, "loss/d")}:
            return
        assert training.poll() is None and time.monotonic() < deadline, training.output()[0][-3000:]
        time.sleep(0.2)


class _Line:
    """A loopback port that forwards to the MLflow server and can go dead: cut, it refuses new
    connections and resets the open ones, which is all a client sees of a server that died; joined
    again, it answers at once, where a new server takes seconds to start."""

    def __init__(self, target: int):
        self.target, self.port = target, free_port()
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self.join()

    def join(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        self._listener.close()
        with self._lock:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while listener is self._listener:
            try:
                near, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            near.settimeout(None)
            far = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._open += [near, far]
            for source, sink in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def test_a_tracking_server_down_for_20_s_mid_run_loses_no_metric_point(home, mnist_cache):
    """The server goes down after the first logged point; training logs two more into the outage
    and is held there (pipeline.faults) until the server has been down for 20 s and is back."""
    import time

    port = free_port()
    server = _start_server(home, port)
    line = _Line(port)
    uri = f"http://127.0.0.1:{line.port}"
    held = home / "held"
    env = subprocess_env(home)
    env.update({"MLFLOW_TRACKING_URI": uri, faults.HOLD_ENV: "step_logged:1,step_logged:3",
                faults.HOLD_FILE_ENV: str(held),
                # MLflow's client retries a request 7 times, 2 s, 4 s ... 64 s apart, so the first
                # try after the outage came up to 44 s after the server was back. Four tries, 2, 4
                # and 8 s apart, still outlast 10 s (the "10 s" line is said); the sender then tries
                # again every few seconds.
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"})
    # No evaluation: the reference classifier would be trained afresh on this server's empty store.
    args = ["train", "-c", str(SMOKE), f"data.cache_dir={mnist_cache}", "tracking.system_metrics=false",
            "eval.every_epochs=0"]
    training = cli_process.start(args, env)
    try:
        _wait_for(held, training)  # step 2 logged
        _wait_until_stored(MlflowClient(uri), 2, training)  # no request in flight when the server dies
        line.cut()
        down_since = time.monotonic()
        held.unlink()
        _wait_for(held, training)  # steps 4 and 6 logged while the server is down
        time.sleep(max(0.0, 20 - (time.monotonic() - down_since)))
        assert training.poll() is None, "training stopped while the server was down"
        line.join()
        held.unlink()
        training.wait(timeout=600)
        out, _ = training.output()
        assert training.returncode == 0, out[-3000:]
        assert "has not answered for 10 s" in out and "answers again" in out, out[-3000:]
        client = MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
        assert run.info.status == "FINISHED"
        steps_stored = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss/d"))
        assert steps_stored == list(range(2, 17, 2)), out[-3000:]  # every point, once
    finally:
        if training.poll() is None:
            training.kill()
        line.cut()
        _stop(server)
