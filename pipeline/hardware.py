"""How torch runs on this machine: the device, its threads (a share of the cores that other busy
processes leave free), and the precision of the training step (bf16 autocast where the hardware
makes it fast, fp32 elsewhere)."""
from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, ContextManager, Optional

import torch

from .config import ConfigError
from .cpuinfo import BF16_FLAGS, cpu_flags


def mps_is_available() -> bool:
    """Apple's GPU (Metal), as PyTorch reports it."""
    return torch.backends.mps.is_available()


def pick_device(name: str) -> torch.device:
    """``train.device`` made concrete: ``auto`` is a CUDA GPU, else Apple's GPU (mps), else the CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available (use auto or cpu)")
    if name == "mps" and not mps_is_available():
        raise ConfigError("train.device is 'mps' but PyTorch finds no Apple GPU here (use auto or cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_is_available() else "cpu"
    return torch.device(name)


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads or os.cpu_count() or 1)


def busy_cpu_seconds() -> Optional[float]:
    """CPU seconds every process on this machine has run since boot (Linux's /proc/stat: user,
    nice, system, irq and softirq time of all cores); None where that file cannot be read."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 8:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class ThreadShare:
    """Keeps a CPU run's torch threads to the cores other busy processes leave free.

    Two runs that each keep one thread per core on the same cores thrash: their OpenMP threads
    wait on each other's time slices, and a bf16 run kept 2-20% of its speed beside a second one
    (docs/results.md). Every ``interval_s`` of wall time, :meth:`tick` reads how many cores the
    rest of the machine kept busy (all processes' CPU time less this one's, over the wall time)
    and moves the thread count to the cores left, at least 1; it moves only when that differs
    from the present count by more than ``SLACK`` of a core, so a neighbour near half a core does
    not make it flap. Two runs that both do this settle at one thread each on 2 cores, and a
    run alone goes back to every core once the other ends."""

    SLACK = 0.6
    INTERVAL_S = 2.0

    def __init__(self, cores: int, interval_s: Optional[float] = None,
                 busy: Optional[Callable[[], Optional[float]]] = None,
                 own: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.monotonic,
                 apply: Optional[Callable[[int], None]] = None):
        self.cores = cores
        self.interval_s = self.INTERVAL_S if interval_s is None else interval_s
        self._busy, self._own, self._clock = busy or busy_cpu_seconds, own, clock
        self._apply = apply or torch.set_num_threads
        self.threads = cores
        self.busy_elsewhere = 0.0  # cores the other processes kept busy, at the last reading
        self._last = self._reading()

    @classmethod
    def for_run(cls, threads: int, device: torch.device) -> Optional["ThreadShare"]:
        """The share a run on ``train.threads`` gets: one on a CPU with 0 (auto), else None."""
        return cls(torch.get_num_threads()) if device.type == "cpu" and not threads else None

    def line(self) -> str:
        """What a run prints when its thread count changes."""
        return (f"\nother processes keep {self.busy_elsewhere:.1f} of {self.cores} cores busy: "
                f"training goes on with {self.threads} thread(s)")

    def _reading(self) -> Optional[tuple[float, float, float]]:
        busy = self._busy()
        return None if busy is None else (self._clock(), busy, self._own())

    @staticmethod
    def _others(before: tuple[float, float, float], now: tuple[float, float, float]) -> float:
        """Cores the other processes kept busy between two readings (``now`` later than ``before``)."""
        wall = now[0] - before[0]
        return max(0.0, ((now[1] - before[1]) - (now[2] - before[2])) / wall)

    def tick(self) -> Optional[int]:
        """Called after every training step; returns the new thread count when it changed."""
        if self._last is None or self._clock() - self._last[0] < self.interval_s:
            return None
        now = self._reading()
        if now is None or now[0] <= self._last[0]:  # unreadable, or no wall time passed (interval 0)
            return None
        self.busy_elsewhere = self._others(self._last, now)
        free = self.cores - self.busy_elsewhere
        self._last = now
        if abs(free - self.threads) <= self.SLACK:
            return None
        threads = max(1, min(self.cores, int(free + 0.5)))
        if threads == self.threads:
            return None
        self.threads = threads
        self._apply(threads)
        return threads


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 matrix work runs in hardware here: a CUDA GPU with bf16 support, or a CPU
    with AMX or AVX512-BF16. Without them a CPU emulates bf16 (measured on an AVX-512 CPU
    without either: the step ran about 25x slower than in fp32; on one with AVX512-BF16, 1.5x
    faster; on one with AMX, 1.6-1.9x; docs/results.md)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(check is not None for check in checks):
        return any(check() for check in checks)
    return bool(BF16_FLAGS & cpu_flags())


def resolve_precision(name: str, device: torch.device) -> str:
    """``train.precision`` made concrete: ``auto`` is bf16 where :func:`bf16_is_fast`, else fp32."""
    if name == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision is 'bf16' but this GPU does not support bf16 (use auto or fp32)")
    return name


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The context the training step's forward passes run in: bf16 autocast, or nothing. Weights,
    optimiser state and the losses stay fp32 either way."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(device: torch.device, asked: str, used: str) -> str:
    """Why this precision, in a few words, for the line printed at the start of training."""
    if asked != "auto":
        return f"train.precision={asked}"
    if used == "bf16":
        return "auto: bf16 runs in hardware here"
    if device.type == "mps":
        return "auto: fp32 on Apple's GPU"
    what = "this GPU" if device.type == "cuda" else "this CPU (no AMX or AVX512-BF16)"
    return f"auto: {what} would emulate bf16, slower than fp32"
