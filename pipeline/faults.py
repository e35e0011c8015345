"""Named points where the fault-injection tests stop the process, reached deterministically.

``INFOGAN_KILL_AT=NAME`` (or ``NAME:N``) makes the process SIGKILL itself the first (N-th) time
it reaches :func:`point` ``NAME``: no handler, no cleanup, as an out-of-memory kill or a power
cut would. ``INFOGAN_KILL_SIGNAL=SIGTERM`` sends that signal instead, as ``kill`` or a batch
scheduler would at that moment. Unset, a point costs one environment lookup.
"""
from __future__ import annotations

import os
import signal

ENV = "INFOGAN_KILL_AT"
SIGNAL_ENV = "INFOGAN_KILL_SIGNAL"
_reached: dict[str, int] = {}


def point(name: str) -> None:
    target = os.environ.get(ENV)
    if not target:
        return
    wanted, _, nth = target.partition(":")
    if wanted != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.Signals[os.environ.get(SIGNAL_ENV, "SIGKILL")])
