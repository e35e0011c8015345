"""How torch runs on this machine: the device, its threads, and the precision of the training
step (bf16 autocast where the hardware makes it fast, fp32 elsewhere)."""
from __future__ import annotations

import contextlib
import os
from typing import ContextManager

import torch

from .config import ConfigError
from .cpuinfo import BF16_FLAGS, cpu_flags


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available (use auto or cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads or os.cpu_count() or 1)


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
    what = "this GPU" if device.type == "cuda" else "this CPU (no AMX or AVX512-BF16)"
    return f"auto: {what} would emulate bf16, slower than fp32"
