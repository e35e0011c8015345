"""The CPU's feature flags as Linux lists them, read without importing torch: the package reads
them when it is imported, before torch loads OpenMP (``pipeline/__init__.py``)."""
from __future__ import annotations

from pathlib import Path

# The flags of a CPU that does bf16 matrix work in hardware: AMX or AVX512-BF16.
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())
