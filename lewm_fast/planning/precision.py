"""Planner precisions: what each name means for matmuls, and the global flags it needs during a solve.

- fp32: IEEE fp32 matmuls everywhere (TF32 explicitly off on CUDA) - the parity precision.
- tf32: fp32 storage, TF32 tensor-core matmuls on CUDA (on CPU identical to fp32).
- bf16: bf16 weights and matmul inputs with fp32 accumulation (done inside the GEMM); the residual
  stream, LayerNorms, softmax statistics and the cost stay fp32.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


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
