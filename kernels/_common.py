"""Shared launcher helpers for the predictor kernels: input checks, dtype and precision choices.

Kept out of the kernel files so each of those holds only its reference, its kernel and its launcher.
"""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("lewm_fast.kernels needs Triton (pip install triton); "
                      "on a machine without a GPU set TRITON_INTERPRET=1 before importing") from exc

COMPUTE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The planner's precision names, accepted everywhere (one vocabulary): "fp32" exact fp32 products
# (tl.dot input_precision "ieee", also accepted under that name); "tf32" tensor-core fp32 (10-bit
# mantissa inputs, ~1e-3 relative error, several times faster); "bf16": the dots run in the weights'
# dtype (bf16 weights: bf16 tensor-core products), exact for whatever fp32 operands remain.
from lewm_fast.model import PACK_PRECISIONS as PRECISIONS  # noqa: E402 - ("ieee", "fp32", "tf32", "bf16")


# @triton.jit reads TRITON_INTERPRET when a kernel is defined, i.e. when its module is imported; every
# kernel module imports this one first, so this snapshot agrees with how the kernels were built.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


def interpreting() -> bool:
    """True when the kernels were defined for Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return _INTERPRETED


def tuning_configs(gpu_configs: list[dict], interpreter_config: dict, interpreted: bool | None = None) -> list:
    """triton.autotune configs from plain dicts (constexpr block sizes + num_warps, num_stages): on a GPU
    every listed one (the fastest per key is measured on first launch); under the interpreter only
    `interpreter_config` (one config: no benchmarking, and small tiles keep CPU tests fast)."""
    def config(c):
        c = dict(c)
        return triton.Config(c, num_warps=c.pop("num_warps"), num_stages=c.pop("num_stages"))

    interpreted = _INTERPRETED if interpreted is None else interpreted
    return [config(c) for c in ([interpreter_config] if interpreted else gpu_configs)]


def dot_class(weight_dtype: torch.dtype, precision: str) -> str:
    """Which tuned config list a launch uses: "bf16" (16-bit weights: bf16/fp16 tensor-core dots), "tf32"
    (fp32 weights, TF32 tensor cores) or "ieee" (fp32 FMA dots). Register and shared-memory needs differ
    enough between them (fp32 operand tiles are twice the bytes) that one list cannot serve all three."""
    if weight_dtype in (torch.bfloat16, torch.float16):
        return "bf16"
    return "tf32" if check_precision(precision) == "tf32" else "ieee"


def check_precision(precision: str) -> str:
    """The tl.dot input_precision for a precision name."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return "tf32" if precision == "tf32" else "ieee"


def dot_dtype(dtype: torch.dtype):
    """Operand type for tl.dot: the matmul weights' storage dtype, so fp16/bf16 weights give tensor-core
    dots with fp32 accumulation (activation tiles are cast to it after their fp32 maths).

    The 3.7.1 interpreter computes bf16 dots wrongly, so there bf16 operands are upcast to fp32
    (same maths as the GPU up to the bf16 rounding of the operands, which the loads already did).
    """
    if dtype == torch.float32:
        return tl.float32
    if dtype == torch.float16:
        return tl.float16
    return tl.float32 if interpreting() else tl.bfloat16


def block_size(n: int, minimum: int = 16) -> int:
    """Power-of-two block covering n (Triton block shapes must be powers of two; tl.dot needs >= 16)."""
    return max(minimum, triton.next_power_of_2(int(n)))


def check_tensor(name: str, t: torch.Tensor, shape: tuple, dtype: torch.dtype, device: torch.device) -> None:
    """Shape (None = any size), dtype and device check with an error that names the argument."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype}; expected {dtype}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}; expected {device}")
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {want}")


def check_param(name: str, t: torch.Tensor, shape: tuple, device: torch.device) -> None:
    """A weight: any supported float dtype (it may differ from the activations': fp32 activations with
    bf16 matmul weights is the planner's "bf16" mode), the given shape and device, contiguous."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in COMPUTE_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; supported: float32, float16, bfloat16")
    check_tensor(name, t, shape, t.dtype, device)
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (got strides {t.stride()} for shape {tuple(t.shape)})")


def check_modulation(name: str, t: torch.Tensor, shape: tuple, device: torch.device) -> None:
    """A modulation chunk (shift / scale / gate): any supported float dtype, independent of the
    activations' (the planner stores it in its matmul dtype: half the bytes in bf16); kernels upcast
    it to fp32 right after loading."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in COMPUTE_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; supported: float32, float16, bfloat16")
    check_tensor(name, t, shape, t.dtype, device)


def check_compute_dtype(name: str, t: torch.Tensor) -> None:
    """The main input's dtype, and a device the kernels can run on (CUDA, or CPU under the interpreter)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in COMPUTE_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; supported: float32, float16, bfloat16")
    if t.device.type == "cpu" and not _INTERPRETED:
        raise RuntimeError(f"{name} is on the CPU: the Triton kernels need a GPU, or TRITON_INTERPRET=1 set "
                           "before lewm_fast.kernels is imported (CPU interpreter; slow, for tests)")


def as_rows(t: torch.Tensor, width: int) -> torch.Tensor:
    """View (..., width) as (rows, width) with unit column stride; strided row slices (e.g. one chunk of
    the AdaLN modulation vector) stay views, so the kernels read them in place via their row stride."""
    rows = t.reshape(-1, width)
    return rows if rows.stride(1) == 1 or rows.shape[0] == 0 else rows.contiguous()


def require_contiguous(name: str, t: torch.Tensor) -> None:
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (got strides {t.stride()} for shape {tuple(t.shape)})")
