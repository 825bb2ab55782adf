"""What this CPU can do fast: the one place that probes it.

bf16 autocast beats fp32 only where the CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles, and
PyTorch's kernels are allowed to use AVX-512). Elsewhere (AVX2 laptops, AMD Zen 2/3, many cloud VMs)
PyTorch emulates it and bf16 is many times slower than fp32 (issue 10), so `native_bf16` gates
every bf16 choice, and `cpu_info` is what health, eval and benchmark records report.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

_NO_WIDE_VECTORS = ("DEFAULT", "NO AVX", "AVX", "AVX2", "ZVECTOR", "VSX")
"""ATen capabilities below AVX-512: with these, oneDNN/ATen will not run native bf16 kernels."""


def capability() -> str:
    """PyTorch's CPU kernel level ("AVX2", "AVX512", ...); honours ATEN_CPU_CAPABILITY."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # very old torch or an exotic build
        return "unknown"


def _probe(name: str) -> bool:
    fn = getattr(getattr(torch, "cpu", None), name, None)
    try:
        return bool(fn()) if fn is not None else False
    except Exception:
        return False


def native_bf16() -> bool:
    """True where bf16 matmuls/convolutions run natively (AVX512-BF16 or AMX), so bf16 is fast, not emulated.

    The hardware probes ignore ATEN_CPU_CAPABILITY/ONEDNN_MAX_CPU_ISA, so a run capped at AVX2 also
    counts as non-native: its kernels could not use the bf16 instructions anyway.
    """
    if capability().upper() in _NO_WIDE_VECTORS:
        return False
    return _probe("_is_avx512_bf16_supported") or _probe("_is_amx_tile_supported")


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """Marketing name of the CPU (Linux /proc/cpuinfo), else what `platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_info() -> dict[str, Any]:
    """CPU kind and thread setting, recorded next to every speed or accuracy figure."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "capability": capability(),
        "native_bf16": native_bf16(),
        "amx": _probe("_is_amx_tile_supported"),
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
    }


def runtime_info(embedder: object) -> dict[str, Any]:
    """How an embedder runs here: CPU info plus its runtime and precisions (any plugin; missing → null)."""
    own = getattr(embedder, "runtime_info", None)
    info: dict[str, Any] = dict(own()) if callable(own) else {}
    info.setdefault("runtime", getattr(embedder, "runtime", None))
    info.setdefault("precision", getattr(embedder, "precision", None))
    return {**cpu_info(), **info}
