"""`python -m pipeline ARGS` (or `python SCRIPT ARGS`) in a process of its own, started in
milliseconds instead of seconds.

A new interpreter pays about 7 s here before its first training step (torch, MLflow, its SQL
store, `torch._dynamo`, which every optimiser imports); a test that kills a run, or starts a
sweep, seed check or server, needs the command in a process of its own, not that import. The
process is forked from a server that imported all of it once per test worker (the standard
library's forkserver). It is still a process of its own: its own environment, working folder and
output, SIGKILL ends it with no handler run, a signal's exit status or the command's exit code is
its return code, and at its end the interpreter's exit functions run as at a normal exit (MLflow
ends a run left active there).
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# What the command imports on its way to a first step; imported in the server, once.
PRELOAD = ["pipeline.cli", "pipeline.stages", "pipeline.sweep", "pipeline.seeds", "pipeline.demo",
           "torch._dynamo", "mlflow.pytorch", "mlflow.pyfunc", "mlflow.store.tracking.sqlalchemy_store",
           "cli_process"]


def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _command(args: list[str], env: dict, cwd: str | None, out: str, err: str | None) -> None:
    """The child: the command as `python -m pipeline ARGS` runs it (``args`` starting with a path
    ending in .py: as `python SCRIPT ARGS` runs that script), its output in the given files."""
    os.environ.clear()
    os.environ.update(env)
    if cwd:
        os.chdir(cwd)
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, path in ((1, out), (2, err or out)):
        target = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(target, fd)
        os.close(target)
    from pipeline.cli import main

    try:
        if args and args[0].endswith(".py"):
            sys.argv = list(args)
            runpy.run_path(args[0], run_name="__main__")
            code = 0
        else:
            code = main(args)
    except SystemExit as stop:
        code = stop.code
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        atexit._run_exitfuncs()  # multiprocessing's child leaves with os._exit, which skips them
    sys.exit(code)


class Command:
    """A started command, answering as `subprocess.Popen` does for what the tests use."""

    def __init__(self, args: list[str], env: dict, cwd=None, merge: bool = True):
        self.folder = tempfile.mkdtemp(prefix="cli-process-")
        self._out = os.path.join(self.folder, "stdout")
        self._err = None if merge else os.path.join(self.folder, "stderr")
        for path in filter(None, (self._out, self._err)):
            Path(path).touch()
        self._process = _context().Process(target=_command,
                                           args=(list(args), dict(env), cwd and str(cwd), self._out, self._err))
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(["pipeline"], timeout)
        return self._process.exitcode

    def kill(self) -> None:
        self._process.kill()

    def terminate(self) -> None:
        self._process.terminate()

    def output(self) -> tuple[str, str]:
        """What it wrote so far to stdout and to stderr (stderr is empty when merged)."""
        read = lambda path: Path(path).read_text(errors="replace") if path else ""  # noqa: E731
        return read(self._out), read(self._err)


def start(args: list[str], env: dict, cwd=None) -> Command:
    """The command started, stdout and stderr in one stream, as `Popen(..., stderr=STDOUT)`."""
    return Command(args, env, cwd)


def run(args: list[str], env: dict, cwd=None, timeout: float = 600, merge: bool = False) -> subprocess.CompletedProcess:
    """The command run to its end, as `subprocess.run(..., capture_output=True, text=True)`
    (``merge``: stderr in stdout, as `stderr=subprocess.STDOUT`)."""
    command = Command(args, env, cwd, merge)
    try:
        code = command.wait(timeout)
    except subprocess.TimeoutExpired:
        command.kill()
        command.wait(30)
        raise
    out, err = command.output()
    shutil.rmtree(command.folder, ignore_errors=True)
    return subprocess.CompletedProcess(["pipeline", *args], code, out, err if not merge else None)
