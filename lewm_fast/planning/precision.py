"""Planner precisions: what each name means for matmuls, and the global flags it needs during a solve.

- fp32: IEEE fp32 matmuls everywhere (TF32 explicitly off on CUDA) - the parity precision.
- tf32: fp32 storage, TF32 tensor-core matmuls on CUDA (on CPU identical to fp32).
- bf16: bf16 weights and matmul inputs with fp32 accumulation (done inside the GEMM); the residual
  stream, LayerNorms, softmax statistics and the cost stay fp32.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bf16 GEMMs in hardware (AVX512-BF16 or AMX); None where unknown (not Linux).
    Without it PyTorch emulates bf16 and is several times slower than fp32 (measured on an AVX2-only EPYC:
    training 2.3 vs 16.6 clips/s)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return None
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def warn_if_slow_bf16(precision: str, device) -> None:
    """A warning when bf16 is asked for on a CPU that has to emulate it."""
    if precision == "bf16" and torch.device(device).type == "cpu" and cpu_has_native_bf16() is False:
        warnings.warn("bf16 on this CPU is emulated (no AVX512-BF16 / AMX) and several times slower than fp32; "
                      "use fp32 here", RuntimeWarning, stacklevel=3)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def matmul_dtype(precision: str) -> torch.dtype:
    return torch.bfloat16 if check_precision(precision) == "bf16" else torch.float32


@contextlib.contextmanager
def precision_flags(precision: str, device: torch.device):
    """Set (and afterwards restore) the CUDA TF32 switches the precision asks for. No-op on CPU."""
    if torch.device(device).type != "cuda":
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
