"""Fused AdaLN-modulated MLP half of a predictor block:

    out = x + gate * (GELU(LN_affine(LN_plain(x) * (1 + scale) + shift) @ W1^T + b1) @ W2^T + b2)

192 -> 2048 -> 192 with exact-erf GELU. One program owns BLOCK_M tokens: it normalises them in registers
(the same double-norm helper as kernels/norm_modulate.py), then walks the hidden dimension in BLOCK_H
tiles: h_tile = GELU(xn @ W1_tile^T + b1_tile) is consumed at once by acc += h_tile @ W2_tile^T, so the
2048-wide activation never leaves the chip (registers), and x is read once and written once.
D = 192 is padded to a 256-wide block (masked); the padded lanes cost ~25% extra dot work but keep
the block shapes powers of two as Triton requires.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import (as_rows, block_size, check_compute_dtype, check_modulation, check_param, check_precision,
                      dot_class, dot_dtype, tuning_configs)
from .norm_modulate import _double_norm_rows

import triton
import triton.language as tl

# Launch configs per dot class (_common.dot_class), autotuned on the GPU per (M, D, HIDDEN, dtypes).
# Every one is compiled for sm_90 by compile_check.py, which fails above its spill bound; figures at the
# paper's shapes (spill bytes/thread, shared memory). 64 rows per program is one wgmma M tile per
# warpgroup (wgmma.mma_async in the bf16/tf32 PTX; 32 rows lower to mma.sync) and reads each weight
# tile once per 64 rows instead of 32. 128-row tiles spill 0.86 KB in bf16 (the (128, 256) fp32
# accumulator) and 64-row tiles 0.57 KB in tf32 with 2 stages and 7.6 KB in fp32 with 64-wide hidden
# tiles, so they are not listed.
GPU_CONFIGS = {
    "bf16": [dict(BLOCK_M=64, BLOCK_H=32, num_warps=8, num_stages=2),     # 0 B spill, 96 KB
             dict(BLOCK_M=64, BLOCK_H=32, num_warps=8, num_stages=3),     # 0 B, 128 KB
             dict(BLOCK_M=64, BLOCK_H=64, num_warps=8, num_stages=2),     # <= 72 B, 160 KB
             dict(BLOCK_M=32, BLOCK_H=32, num_warps=8, num_stages=2)],    # <= 8 B, 50 KB (mma.sync)
    "tf32": [dict(BLOCK_M=64, BLOCK_H=32, num_warps=8, num_stages=1),     # 288 B, 96 KB
             dict(BLOCK_M=64, BLOCK_H=16, num_warps=8, num_stages=1),     # 232 B, 80 KB
             dict(BLOCK_M=32, BLOCK_H=32, num_warps=8, num_stages=2)],    # 0 B, 100 KB
    "ieee": [dict(BLOCK_M=64, BLOCK_H=32, num_warps=8, num_stages=2),     # 1.2 KB (FMA dots), 136 KB
             dict(BLOCK_M=32, BLOCK_H=32, num_warps=8, num_stages=2)],    # 0 B, 100 KB
}
INTERPRETER_CONFIG = dict(BLOCK_M=32, BLOCK_H=32, num_warps=8, num_stages=2)


def mlp_ref(x, shift, scale, gate, ln_weight, ln_bias, w1, b1, w2, b2, eps_plain: float = 1e-6,
            eps_affine: float = 1e-5):
    """Definition in plain torch (ConditionalBlock's second half, eval mode)."""
    D = x.shape[-1]
    h = F.layer_norm(x, (D,), eps=eps_plain) * (1 + scale) + shift
    h = F.layer_norm(h, (D,), ln_weight, ln_bias, eps=eps_affine)
    return x + gate * F.linear(F.gelu(F.linear(h, w1, b1)), w2, b2)


@triton.jit
def _mlp_kernel(x_ptr, shift_ptr, scale_ptr, gate_ptr, lnw_ptr, lnb_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, out_ptr,
                M, D, HIDDEN, stride_x, stride_shift, stride_scale, stride_gate, stride_out, eps_plain, eps_affine,
                BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
                DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D
    mask = (rows < M)[:, None] & col_mask[None, :]
    r64 = rows.to(tl.int64)[:, None]
    x = tl.load(x_ptr + r64 * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    shift = tl.load(shift_ptr + r64 * stride_shift + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + r64 * stride_scale + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    lnw = tl.load(lnw_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    lnb = tl.load(lnb_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    xn = _double_norm_rows(x, shift, scale, lnw, lnb, col_mask, D, eps_plain, eps_affine, True).to(DOT_DTYPE)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for h0 in range(0, HIDDEN, BLOCK_H):
        hs = h0 + tl.arange(0, BLOCK_H)
        h_mask = hs < HIDDEN
        w_mask = col_mask[:, None] & h_mask[None, :]
        # W1 is (HIDDEN, D): its (BLOCK_D, BLOCK_H) tile of W1^T; W2 is (D, HIDDEN): tile of W2^T is (BLOCK_H, BLOCK_D)
        w1 = tl.load(w1_ptr + hs[None, :].to(tl.int64) * D + cols[:, None], mask=w_mask, other=0.0)
        hid = tl.dot(xn, w1.to(DOT_DTYPE), input_precision=PRECISION)
        hid += tl.load(b1_ptr + hs, mask=h_mask, other=0.0).to(tl.float32)[None, :]
        hid = 0.5 * hid * (1.0 + tl.math.erf(hid * 0.7071067811865476))     # exact GELU, fp32
        w2 = tl.load(w2_ptr + cols[None, :].to(tl.int64) * HIDDEN + hs[:, None],
                     mask=h_mask[:, None] & col_mask[None, :], other=0.0)
        acc = tl.dot(hid.to(DOT_DTYPE), w2.to(DOT_DTYPE), acc, input_precision=PRECISION)
    b2 = tl.load(b2_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    # re-read x (an L1/L2 hit) rather than keep a third (BLOCK_M, BLOCK_D) fp32 tile live across the loop
    x = tl.load(x_ptr + r64 * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    gate = tl.load(gate_ptr + r64 * stride_gate + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    out = x + gate * (acc + b2[None, :])
    tl.store(out_ptr + r64 * stride_out + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


# one tuner per dot class over the same kernel (_mlp_kernel itself stays the plain JIT function that
# compile_check lowers and explicit launch configs call)
_TUNED = {cls: triton.autotune(tuning_configs(configs, INTERPRETER_CONFIG), key=["M", "D", "HIDDEN"])(_mlp_kernel)
          for cls, configs in GPU_CONFIGS.items()}


def mlp(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, gate: torch.Tensor, ln_weight: torch.Tensor,
        ln_bias: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
        precision: str = "ieee", eps_plain: float = 1e-6, eps_affine: float = 1e-5,
        block_m: int | None = None, block_h: int | None = None, num_warps: int = 8,
        num_stages: int = 2) -> torch.Tensor:
    """x, shift, scale, gate: (..., D) in one dtype (shift/scale/gate may be strided chunks of the
    modulation vector); ln_weight, ln_bias, b2: (D,); w1: (hidden, D); b1: (hidden,); w2: (D, hidden).
    Parameters may be narrower than x (bf16 w1/w2: bf16 tensor-core dots; everything else stays fp32).
    Returns x + gate * FF(modulate(LN(x))) as a new tensor shaped like x.

    Launch config: autotuned over GPU_CONFIGS[dot class] (one fixed config under the interpreter);
    block_m and block_h (with num_warps, num_stages) launch that config instead (sweeps, benchmarks)."""
    check_compute_dtype("x", x)
    dot_precision = check_precision(precision)
    D = x.shape[-1]
    for name, t in (("shift", shift), ("scale", scale), ("gate", gate)):
        check_modulation(name, t, tuple(x.shape), x.device)
    hidden = w1.shape[0]
    for name, t, shape in (("ln_weight", ln_weight, (D,)), ("ln_bias", ln_bias, (D,)), ("w1", w1, (hidden, D)),
                           ("b1", b1, (hidden,)), ("w2", w2, (D, hidden)), ("b2", b2, (D,))):
        check_param(name, t, shape, x.device)
    if w1.dtype != w2.dtype:
        raise TypeError(f"w1 ({w1.dtype}) and w2 ({w2.dtype}) must share a dtype (the dots' operand type)")
    xr, sh, sc, gt = (as_rows(t, D) for t in (x, shift, scale, gate))
    M = xr.shape[0]
    out = torch.empty((M, D), dtype=x.dtype, device=x.device)
    if (block_m is None) != (block_h is None):
        raise ValueError("pass both block_m and block_h (an explicit launch config), or neither (autotuned)")
    if M == 0:
        return out.view(x.shape)
    args = (xr, sh, sc, gt, ln_weight, ln_bias, w1, b1, w2, b2, out, M, D, hidden,
            xr.stride(0), sh.stride(0), sc.stride(0), gt.stride(0), out.stride(0), eps_plain, eps_affine)
    consts = dict(BLOCK_D=block_size(D), DOT_DTYPE=dot_dtype(w1.dtype), PRECISION=dot_precision)
    if block_m is None:
        _TUNED[dot_class(w1.dtype, precision)][lambda meta: (triton.cdiv(M, meta["BLOCK_M"]),)](*args, **consts)
    else:
        _mlp_kernel[(triton.cdiv(M, block_m),)](*args, BLOCK_M=block_m, BLOCK_H=block_h, num_warps=num_warps,
                                                 num_stages=num_stages, **consts)
    return out.view(x.shape)
