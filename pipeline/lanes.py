"""Runs side by side: commands of this package, each in a process of its own, ``workers`` at a time.

On a CPU with few cores, one torch process per core trains faster in all than one process using
every core (docs/results.md, "Two runs at once, one thread each"); a run-experiments set or a
seed check uses that. Each process's lines are echoed with a prefix naming its job; on Ctrl-C or
an error every running one gets SIGTERM, which makes a training run checkpoint, and is waited for.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from typing import Callable, Optional, Sequence


class JobsFailed(RuntimeError):
    """Some of the jobs run side by side did not finish; the message names them."""


def threads_each(workers: int) -> int:
    """Torch threads for each of ``workers`` processes sharing this machine's cores."""
    return max(1, (os.cpu_count() or 1) // workers)


def command(*args: str) -> list[str]:
    """``python -m pipeline ARGS...``, each ``key=value`` override quoted as the config loader
    reads it (it splits overrides at spaces, as MLproject passes them in one string)."""
    return [sys.executable, "-m", "pipeline", *(shlex.quote(a) if "=" in a and not a.startswith("-") else a
                                                for a in args)]


def run(jobs: Sequence[tuple[str, list[str]]], workers: int, log: Callable[[str], None] = print) -> list[str]:
    """Run each ``(label, argv)`` job, ``workers`` at a time, in the order given; returns the
    labels of the jobs that failed, each with its exit code. A job that fails stops none of the others."""
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    pending, running, failed = list(jobs), [], []
    try:
        while pending or running:
            while pending and len(running) < workers:
                label, argv = pending.pop(0)
                proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, bufsize=1)
                running.append((label, proc, _echo(proc, f"[{label}] ", log)))
            time.sleep(0.5)
            for item in [r for r in running if r[1].poll() is not None]:
                label, proc, echo = item
                echo.join()
                running.remove(item)
                if proc.returncode != 0:
                    failed.append(f"{label} (exit {proc.returncode})")
    except BaseException:
        for _, proc, _ in running:
            proc.terminate()
        for _, proc, echo in running:
            proc.wait()
            echo.join()
        raise
    return failed


def _echo(proc: subprocess.Popen, prefix: str, log: Callable[[str], None]) -> threading.Thread:
    def pump() -> None:
        for line in proc.stdout:
            log(prefix + line.rstrip("\n"))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def describe(workers: int, threads: Optional[int]) -> str:
    return f"{workers} at a time, {threads} torch thread(s) each" if workers > 1 else "one at a time"
