"""Named points where the fault-injection tests stop the process, reached deterministically.

``INFOGAN_KILL_AT=NAME`` (or ``NAME:N``) makes the process SIGKILL itself the first (N-th) time
it reaches :func:`point` ``NAME``: no handler, no cleanup, as an out-of-memory kill or a power
cut would. ``INFOGAN_KILL_SIGNAL=SIGTERM`` sends that signal instead, as ``kill`` or a batch
scheduler would at that moment.

``INFOGAN_HOLD_AT=NAME:N[,NAME:M...]`` with ``INFOGAN_HOLD_FILE=PATH`` makes the process wait
instead, at each of those points: it creates PATH and goes on once PATH is removed, so a test can
do something (stop a server, for one) at a known point of the run and let it continue after.
Unset, a point costs two environment lookups.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ENV = "INFOGAN_KILL_AT"
SIGNAL_ENV = "INFOGAN_KILL_SIGNAL"
HOLD_ENV = "INFOGAN_HOLD_AT"
HOLD_FILE_ENV = "INFOGAN_HOLD_FILE"
_reached: dict[str, int] = {}


def _targets(value: str) -> set[tuple[str, int]]:
    return {(name, int(nth or 1)) for name, _, nth in (t.partition(":") for t in value.split(",") if t)}


def point(name: str) -> None:
    kill, hold = os.environ.get(ENV), os.environ.get(HOLD_ENV)
    if not kill and not hold:
        return
    _reached[name] = _reached.get(name, 0) + 1
    here = (name, _reached[name])
    if kill and here in _targets(kill):
        os.kill(os.getpid(), signal.Signals[os.environ.get(SIGNAL_ENV, "SIGKILL")])
    if hold and here in _targets(hold):
        flag = Path(os.environ[HOLD_FILE_ENV])
        flag.touch()
        while flag.exists():
            time.sleep(0.05)
