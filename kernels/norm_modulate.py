"""Fused "double norm" before the predictor's attention: y = LN_affine(LN_plain(x) * (1 + scale) + shift).

LN_plain is the block's LayerNorm without affine (eps 1e-6); the attention then applies its own affine
LayerNorm (eps 1e-5) first. Both are per-token over D, so one program normalises BLOCK_M whole rows in
registers (D = 192 is padded to a 256-wide block and masked) and writes y once, in the input dtype.
With `shift=scale=None` it is a plain affine LayerNorm (the predictor's final norm).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import as_rows, block_size, check_compute_dtype, check_modulation, check_param

import triton
import triton.language as tl


def norm_modulate_ref(x, shift, scale, weight, bias, eps_plain: float = 1e-6, eps_affine: float = 1e-5):
    """Definition in plain torch (same op order as lewm_fast.model.ConditionalBlock + Attention.norm)."""
    D = x.shape[-1]
    if shift is not None:
        x = F.layer_norm(x, (D,), eps=eps_plain) * (1 + scale) + shift
    return F.layer_norm(x, (D,), weight, bias, eps=eps_affine)


@triton.jit
def _layer_norm_rows(x, col_mask, D, eps):
    """LayerNorm (no affine) of each row of a fp32 (BLOCK_M, BLOCK_D) tile whose padded columns are 0.
    Padded columns come out 0 too, so the tile can be normalised again or fed to tl.dot as is."""
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(col_mask[None, :], x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / D            # biased variance, as torch
    rstd = 1.0 / tl.sqrt(var + eps)
    return xc * rstd[:, None]


@triton.jit
def _double_norm_rows(x, shift, scale, w, b, col_mask, D, eps_plain, eps_affine, MODULATE: tl.constexpr):
    """fp32 rows -> LN_affine(LN_plain(x) * (1 + scale) + shift); shared with the fused MLP kernel."""
    if MODULATE:
        # shift/scale are 0 in padded columns, so those stay 0 for the second norm's statistics
        x = _layer_norm_rows(x, col_mask, D, eps_plain) * (1.0 + scale) + shift
    return _layer_norm_rows(x, col_mask, D, eps_affine) * w[None, :] + b[None, :]


@triton.jit
def _norm_modulate_kernel(x_ptr, shift_ptr, scale_ptr, w_ptr, b_ptr, y_ptr,
                          M, D, stride_x, stride_shift, stride_scale, stride_y, eps_plain, eps_affine,
                          MODULATE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D
    mask = (rows < M)[:, None] & col_mask[None, :]
    r64 = rows.to(tl.int64)[:, None]            # 64-bit offsets: M * stride can pass 2**31 for big batches
    # upcast right after the load: all arithmetic in fp32 (and the interpreter's bf16 maths is broken)
    x = tl.load(x_ptr + r64 * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    if MODULATE:
        shift = tl.load(shift_ptr + r64 * stride_shift + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        scale = tl.load(scale_ptr + r64 * stride_scale + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    else:
        shift = x
        scale = x
    y = _double_norm_rows(x, shift, scale, w, b, col_mask, D, eps_plain, eps_affine, MODULATE)
    tl.store(y_ptr + r64 * stride_y + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


def norm_modulate(x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None,
                  weight: torch.Tensor, bias: torch.Tensor, eps_plain: float = 1e-6, eps_affine: float = 1e-5,
                  block_m: int = 16, num_warps: int = 4) -> torch.Tensor:
    """x, shift, scale: (..., D) in one dtype (shift/scale may be strided chunks of the modulation
    vector); weight, bias: (D,), any float dtype. Returns a new contiguous tensor shaped like x, in x's dtype."""
    check_compute_dtype("x", x)
    D = x.shape[-1]
    if (shift is None) != (scale is None):
        raise ValueError("pass both shift and scale, or neither (plain affine LayerNorm)")
    for name, t in (("shift", shift), ("scale", scale)):
        if t is not None:
            check_modulation(name, t, tuple(x.shape), x.device)
    check_param("weight", weight, (D,), x.device)
    check_param("bias", bias, (D,), x.device)
    xr = as_rows(x, D)
    M = xr.shape[0]
    y = torch.empty((M, D), dtype=x.dtype, device=x.device)
    if M == 0:
        return y.view(x.shape)
    modulate = shift is not None
    sh = as_rows(shift, D) if modulate else xr     # dummies are never read when MODULATE is False
    sc = as_rows(scale, D) if modulate else xr
    grid = (triton.cdiv(M, block_m),)
    _norm_modulate_kernel[grid](xr, sh, sc, weight, bias, y, M, D, xr.stride(0), sh.stride(0), sc.stride(0),
                                y.stride(0), eps_plain, eps_affine, MODULATE=modulate, BLOCK_M=block_m,
                                BLOCK_D=block_size(D), num_warps=num_warps)
    return y.view(x.shape)
