"""Fused short-window causal attention block for the predictor (T <= 3 tokens):

    out = residual + gate * (Attn(xn) @ W_out^T + b_out),   Attn = causal softmax(q k^T / sqrt(dh)) v,
    q | k | v = xn @ W_qkv^T  (16 heads outer, 64 wide, for the paper's model)

Design (why it looks unlike flash attention): the planner's windows hold at most 3 tokens, so the
attention itself is tiny: per head and sequence it is at most 3 dot products and a 3-way softmax,
done with element-wise ops on (BLOCK_N, dh) tiles (no tl.dot for q k^T; a 3x3 matmul would be wasted
on 16-row tensor-core tiles). The work is in the projections, so the parallel axis is the sequence:
each program owns BLOCK_N sequences x all T tokens and loops over heads, so
  - each head's W_q/W_k/W_v tiles are loaded once and reused for the T tokens,
  - q, k, v (3 x T tiles of BLOCK_N x dh) live only in registers,
  - the output projection is accumulated across heads in T fp32 tiles (BLOCK_N x D), so the
    1024-wide attention output never reaches memory, and bias + gate + residual are applied once.
The token count is a compile-time constant (one specialisation per T in {1, 2, 3}); tokens are written
out by hand because Triton has no lists of tensors. Softmax and the residual update are in fp32.
"""
from __future__ import annotations

import math

import torch

from ._common import (block_size, check_compute_dtype, check_modulation, check_param, check_precision, check_tensor,
                      dot_class, dot_dtype, tuning_configs)

import triton
import triton.language as tl

MAX_TOKENS = 3

# Launch configs per (dot class, output kind), autotuned on the GPU per (N, shapes, window constexprs).
# The kind is how many tokens' output rows a program accumulates across the head loop (output_kind):
# "one" (T = 1, the KV-cached steps, last_only) or "window" (2-3 tokens of an uncached window, one
# (BLOCK_N, 256) fp32 accumulator each: the register hog). Every config is compiled for sm_90 by
# compile_check.py, which fails above its spill bound; noted: the worst spill bytes/thread over the
# kind's window shapes (bf16: also fp32 activations with bf16 weights) and shared memory, at the
# paper's shapes. 64 sequences per program read each weight tile once per 64 sequences instead of 16
# and are one wgmma M tile per warpgroup (wgmma.mma_async in the bf16/tf32 PTX; 16 and 32 rows lower
# to mma.sync). Left out (spill over the bound): 64 rows with 4 warps (0.6-2.9 KB), 128 rows (0.4-1.8
# KB), 64 rows for the 3-token window (0.8-1 KB bf16, 1.5 KB tf32 with 8 warps; 0.6 / 0.9 KB with 16),
# and in exact fp32 (FMA dots: whole operand tiles in registers) 64 rows (4.6-5.6 KB) and 32 rows for
# the 3-token window (1.9 KB). The former fixed default (16 sequences, 32-wide K steps, 8 warps,
# default_stages) ends each list, for the tuner to compare. The planner can also avoid the window kind:
# TritonPredictor(split_window=True) launches an uncached window as one-token launches (kind "one", 64
# sequences) chained through the KV cache; bench/roofline.py predicts which is faster, a GPU decides.
GPU_CONFIGS = {
    ("bf16", "one"): [dict(BLOCK_N=64, BLOCK_K=32, num_warps=8, num_stages=2),     # <= 48 B, <= 64 KB
                      dict(BLOCK_N=64, BLOCK_K=32, num_warps=8, num_stages=1),     # <= 16 B, <= 64 KB
                      dict(BLOCK_N=16, BLOCK_K=32, num_warps=8, num_stages=2)],
    ("bf16", "window"): [dict(BLOCK_N=32, BLOCK_K=32, num_warps=8, num_stages=2),  # <= 8 B, 36 KB
                         dict(BLOCK_N=32, BLOCK_K=32, num_warps=8, num_stages=1),  # <= 24 B, 36 KB
                         dict(BLOCK_N=16, BLOCK_K=32, num_warps=8, num_stages=2)],
    ("tf32", "one"): [dict(BLOCK_N=64, BLOCK_K=32, num_warps=8, num_stages=1),     # <= 80 B, 80 KB
                      dict(BLOCK_N=64, BLOCK_K=32, num_warps=8, num_stages=2),     # <= 144 B, <= 96 KB
                      dict(BLOCK_N=16, BLOCK_K=32, num_warps=8, num_stages=2)],
    ("tf32", "window"): [dict(BLOCK_N=32, BLOCK_K=32, num_warps=8, num_stages=2),  # <= 24 B, 88 KB
                         dict(BLOCK_N=32, BLOCK_K=32, num_warps=8, num_stages=1),  # <= 32 B, 88 KB
                         dict(BLOCK_N=16, BLOCK_K=32, num_warps=8, num_stages=2)],
    ("ieee", "one"): [dict(BLOCK_N=32, BLOCK_K=32, num_warps=8, num_stages=1),     # <= 624 B, 72 KB
                      dict(BLOCK_N=16, BLOCK_K=32, num_warps=8, num_stages=1)],
    ("ieee", "window"): [dict(BLOCK_N=16, BLOCK_K=32, num_warps=8, num_stages=1)],  # <= 816 B, 76 KB
}
INTERPRETER_CONFIG = dict(BLOCK_N=16, BLOCK_K=32, num_warps=8, num_stages=2)


def attention_ref(xn, w_qkv, w_out, b_out, residual, gate, heads: int, last_only: bool = False):
    """Definition in plain torch: residual + gate * to_out(causal_attention(to_qkv(xn))); with
    last_only, just the last token's row (N, 1, D)."""
    N, T, D = xn.shape
    dim_head = w_qkv.shape[0] // (3 * heads)
    q, k, v = (xn @ w_qkv.t()).view(N, T, 3, heads, dim_head).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(dim_head)
    causal = torch.ones(T, T, dtype=torch.bool, device=xn.device).tril()
    probs = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1).to(v.dtype)
    o = (probs @ v).transpose(1, 2).reshape(N, T, heads * dim_head)
    out = residual + gate * (o @ w_out.t() + b_out)
    return out[:, -1:] if last_only else out


def attention_kv_ref(xn, w_qkv, w_out, b_out, residual, gate, heads: int, k_cached, v_cached,
                     last_only: bool = False):
    """Definition of the cached form in plain torch: the new tokens' rows (N, m, D) attend causally to
    the cached keys/values k_cached, v_cached (N, C, heads, dh) followed by their own. Returns
    (out (N, m or 1, D), k, v (N, C + m, heads, dh): every window token's keys/values)."""
    N, m, D = xn.shape
    dim_head = w_qkv.shape[0] // (3 * heads)
    q, k, v = (xn @ w_qkv.t()).view(N, m, 3, heads, dim_head).unbind(2)
    k, v = torch.cat([k_cached, k], 1), torch.cat([v_cached, v], 1)
    C = k_cached.shape[1]
    scores = torch.einsum("nqhd,nkhd->nhqk", q.float(), k.float()) / math.sqrt(dim_head)
    visible = torch.arange(C + m, device=xn.device)[None, :] <= (C + torch.arange(m, device=xn.device))[:, None]
    probs = scores.masked_fill(~visible, float("-inf")).softmax(-1).to(v.dtype)
    o = torch.einsum("nhqk,nkhd->nqhd", probs, v).reshape(N, m, heads * dim_head)
    out = residual + gate * (o @ w_out.t() + b_out)
    return (out[:, -1:] if last_only else out), k, v


@triton.jit
def _gated_store(acc, bias, res_ptr, gate_ptr, out_ptr, r64, mask, cols, t, t_out,
                 stride_res_n, stride_res_t, stride_gate_n, stride_gate_t, stride_out_n, stride_out_t):
    res = tl.load(res_ptr + r64 * stride_res_n + t * stride_res_t + cols[None, :], mask=mask, other=0.0)
    gate = tl.load(gate_ptr + r64 * stride_gate_n + t * stride_gate_t + cols[None, :], mask=mask, other=0.0)
    out = res.to(tl.float32) + gate.to(tl.float32) * (acc + bias[None, :])
    tl.store(out_ptr + r64 * stride_out_n + t_out * stride_out_t + cols[None, :], out.to(out_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _kv_load(kv_ptr, r64, t, stride_kv_n, stride_kv_t, inner, head_cols, mask):
    """Token t's keys and values of one head from the KV cache (N, W, 2, inner), as fp32."""
    base = kv_ptr + r64 * stride_kv_n + t * stride_kv_t + head_cols
    return tl.load(base, mask=mask, other=0.0).to(tl.float32), tl.load(base + inner, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _kv_store(kv_ptr, r64, t, stride_kv_n, stride_kv_t, inner, head_cols, mask, k, v):
    base = kv_ptr + r64 * stride_kv_n + t * stride_kv_t + head_cols
    tl.store(base, k.to(kv_ptr.dtype.element_ty), mask=mask)
    tl.store(base + inner, v.to(kv_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _attention_kernel(xn_ptr, wqkv_ptr, wout_ptr, bout_ptr, res_ptr, gate_ptr, out_ptr, kv_ptr,
                      N, D, HEADS, DH, sm_scale,
                      stride_xn_n, stride_xn_t, stride_res_n, stride_res_t, stride_gate_n, stride_gate_t,
                      stride_out_n, stride_out_t, stride_kv_n, stride_kv_t,
                      T: tl.constexpr, C: tl.constexpr, STORE_KV: tl.constexpr,
                      OUT0: tl.constexpr, OUT1: tl.constexpr, OUT_SHIFT: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DH: tl.constexpr,
                      BLOCK_K: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    # T window tokens; the first C of them are cached (their keys/values are read from kv, their rows
    # are not in xn / residual / gate: row i of those is token C + i). STORE_KV: write the computed
    # tokens' keys/values into kv. OUT0 / OUT1: whether tokens 0 / 1 are output (token T-1 always is);
    # token t is stored at row t - OUT_SHIFT of out (T - 1 when only the last token is wanted, else C)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    r64 = rows.to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D
    e = tl.arange(0, BLOCK_DH)
    e_mask = e < DH
    inner = HEADS * DH
    xn_rows = xn_ptr + r64 * stride_xn_n
    zero_head = tl.zeros((BLOCK_N, BLOCK_DH), dtype=tl.float32)
    acc0 = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for h in range(HEADS):
        # --- q/k/v of this head for every token; token 0 needs no query (it only attends to itself)
        k0 = zero_head
        v0 = zero_head
        q1 = zero_head
        k1 = zero_head
        v1 = zero_head
        q2 = zero_head
        k2 = zero_head
        v2 = zero_head
        q_row = (h * DH + e).to(tl.int64)[None, :]       # rows of W_qkv, laid out as (3, heads, dh)
        for kk in range(0, D, BLOCK_K):
            ks = kk + tl.arange(0, BLOCK_K)
            k_mask = ks < D
            w_mask = k_mask[:, None] & e_mask[None, :]
            x_mask = row_mask[:, None] & k_mask[None, :]
            w_tile = wqkv_ptr + q_row * D + ks[:, None]   # (BLOCK_K, BLOCK_DH) tile of W^T
            wk = tl.load(w_tile + inner * D, mask=w_mask, other=0.0).to(DOT_DTYPE)
            wv = tl.load(w_tile + 2 * inner * D, mask=w_mask, other=0.0).to(DOT_DTYPE)
            if C == 0:
                x0 = tl.load(xn_rows + ks[None, :], mask=x_mask, other=0.0).to(DOT_DTYPE)
                k0 = tl.dot(x0, wk, k0, input_precision=PRECISION)
                v0 = tl.dot(x0, wv, v0, input_precision=PRECISION)
            if T >= 2:
                wq = tl.load(w_tile, mask=w_mask, other=0.0).to(DOT_DTYPE)
                if C <= 1:
                    x1 = tl.load(xn_rows + (1 - C) * stride_xn_t + ks[None, :], mask=x_mask,
                                 other=0.0).to(DOT_DTYPE)
                    if OUT1:                             # token 1's query only matters for its output
                        q1 = tl.dot(x1, wq, q1, input_precision=PRECISION)
                    k1 = tl.dot(x1, wk, k1, input_precision=PRECISION)
                    v1 = tl.dot(x1, wv, v1, input_precision=PRECISION)
                if T >= 3:
                    x2 = tl.load(xn_rows + (2 - C) * stride_xn_t + ks[None, :], mask=x_mask,
                                 other=0.0).to(DOT_DTYPE)
                    q2 = tl.dot(x2, wq, q2, input_precision=PRECISION)
                    k2 = tl.dot(x2, wk, k2, input_precision=PRECISION)
                    v2 = tl.dot(x2, wv, v2, input_precision=PRECISION)
        # --- cached tokens' keys/values come from the cache; computed ones go into it when asked
        head_cols = (h * DH + e)[None, :]
        kv_mask = row_mask[:, None] & e_mask[None, :]
        if C >= 1:
            k0, v0 = _kv_load(kv_ptr, r64, 0, stride_kv_n, stride_kv_t, inner, head_cols, kv_mask)
        elif STORE_KV:
            _kv_store(kv_ptr, r64, 0, stride_kv_n, stride_kv_t, inner, head_cols, kv_mask, k0, v0)
        if T >= 2:
            if C >= 2:
                k1, v1 = _kv_load(kv_ptr, r64, 1, stride_kv_n, stride_kv_t, inner, head_cols, kv_mask)
            elif STORE_KV:
                _kv_store(kv_ptr, r64, 1, stride_kv_n, stride_kv_t, inner, head_cols, kv_mask, k1, v1)
        if T >= 3:
            if STORE_KV:
                _kv_store(kv_ptr, r64, 2, stride_kv_n, stride_kv_t, inner, head_cols, kv_mask, k2, v2)
        # --- causal softmax over <= 3 keys, in fp32, element-wise over the BLOCK_N sequences
        o0 = v0
        o1 = zero_head
        o2 = zero_head
        if OUT1:
            s0 = tl.sum(q1 * k0, axis=1) * sm_scale
            s1 = tl.sum(q1 * k1, axis=1) * sm_scale
            m = tl.maximum(s0, s1)
            p0 = tl.exp(s0 - m)
            p1 = tl.exp(s1 - m)
            inv = 1.0 / (p0 + p1)
            o1 = (p0 * inv)[:, None] * v0 + (p1 * inv)[:, None] * v1
        if T >= 3:
            s0 = tl.sum(q2 * k0, axis=1) * sm_scale
            s1 = tl.sum(q2 * k1, axis=1) * sm_scale
            s2 = tl.sum(q2 * k2, axis=1) * sm_scale
            m = tl.maximum(tl.maximum(s0, s1), s2)
            p0 = tl.exp(s0 - m)
            p1 = tl.exp(s1 - m)
            p2 = tl.exp(s2 - m)
            inv = 1.0 / (p0 + p1 + p2)
            o2 = (p0 * inv)[:, None] * v0 + (p1 * inv)[:, None] * v1 + (p2 * inv)[:, None] * v2
        # --- this head's slice of the output projection, accumulated over heads
        wo = tl.load(wout_ptr + cols[None, :].to(tl.int64) * inner + (h * DH + e)[:, None],
                     mask=e_mask[:, None] & col_mask[None, :], other=0.0).to(DOT_DTYPE)   # (BLOCK_DH, BLOCK_D)
        if OUT0:
            acc0 = tl.dot(o0.to(DOT_DTYPE), wo, acc0, input_precision=PRECISION)
        if OUT1:
            acc1 = tl.dot(o1.to(DOT_DTYPE), wo, acc1, input_precision=PRECISION)
        if T >= 3:
            acc2 = tl.dot(o2.to(DOT_DTYPE), wo, acc2, input_precision=PRECISION)
    bias = tl.load(bout_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    mask = row_mask[:, None] & col_mask[None, :]
    if OUT0:
        _gated_store(acc0, bias, res_ptr, gate_ptr, out_ptr, r64, mask, cols, 0 - C, 0 - OUT_SHIFT,
                     stride_res_n, stride_res_t, stride_gate_n, stride_gate_t, stride_out_n, stride_out_t)
    if OUT1:
        _gated_store(acc1, bias, res_ptr, gate_ptr, out_ptr, r64, mask, cols, 1 - C, 1 - OUT_SHIFT,
                     stride_res_n, stride_res_t, stride_gate_n, stride_gate_t, stride_out_n, stride_out_t)
    if T >= 3:
        _gated_store(acc2, bias, res_ptr, gate_ptr, out_ptr, r64, mask, cols, 2 - C, 2 - OUT_SHIFT,
                     stride_res_n, stride_res_t, stride_gate_n, stride_gate_t, stride_out_n, stride_out_t)


def window_flags(T: int, C: int, last_only: bool) -> dict:
    """The kernel's output constexprs for a T-token window whose first C tokens are cached: which of
    tokens 0 / 1 are output (token T-1 always is) and the out row of token 0 (OUT_SHIFT)."""
    return dict(OUT0=C == 0 and (T == 1 or not last_only),
                OUT1=C <= 1 and (T == 2 or (T == 3 and not last_only)),
                OUT_SHIFT=T - 1 if last_only else C)


def output_kind(T: int, OUT0: bool, OUT1: bool) -> str:
    """Which GPU_CONFIGS list a window uses: "one" output token (one fp32 accumulator across the head
    loop) or "window" (two or three)."""
    return "window" if OUT0 + OUT1 + (T >= 3) >= 2 else "one"


# one tuner per (dot class, output kind) over the same kernel (_attention_kernel stays the plain JIT
# function that compile_check lowers and explicit launch configs call). The window constexprs are in the
# key: each window shape is its own specialisation and gets its own timing. Benchmarking relaunches the
# kernel; that is safe without restore_value: out is written whole, and the only other write (STORE_KV:
# the computed tokens' keys/values into kv) stores values made from xn and the weights alone, at window
# positions the kernel never reads (it reads the cached positions < C and writes those >= C).
_KEY = ["N", "D", "HEADS", "DH", "T", "C", "STORE_KV", "OUT0", "OUT1", "OUT_SHIFT"]
_TUNED = {k: triton.autotune(tuning_configs(configs, INTERPRETER_CONFIG), key=_KEY)(_attention_kernel)
          for k, configs in GPU_CONFIGS.items()}


def default_stages(weight_dtype: torch.dtype, precision: str) -> int:
    """Pipeline stages: 1 for exact fp32 (FMA dots: a second stage's operand tiles only add register
    pressure; sm_90 offline compiles, T = 3: 5.4 KB/thread spill -> 0.8 KB under triton 3.6, 1.3 ->
    1.2 KB under 3.7.1, less in every window shape), else 2 (tensor-core dots overlap the loads)."""
    return 1 if weight_dtype == torch.float32 and precision == "ieee" else 2


def attention(xn: torch.Tensor, w_qkv: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor,
              residual: torch.Tensor, gate: torch.Tensor, heads: int, precision: str = "ieee",
              last_only: bool = False, kv_cache: torch.Tensor | None = None, cached: int = 0,
              store_kv: bool = False, block_n: int | None = None, block_k: int | None = None, num_warps: int = 8,
              num_stages: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """xn: (N, T, D) normalised input (unit stride along D); w_qkv: (3 * heads * dh, D); w_out: (D, heads * dh);
    b_out: (D,); residual: (N, T, D); gate: (N, T, D) with unit last stride (may be a strided chunk of
    the modulation vector). xn, residual and gate share a dtype, which the output has; the weights may be
    narrower (bf16 weights: bf16 tensor-core dots, fp32 accumulation, softmax and residual update in fp32).
    Returns residual + gate * to_out(attn(xn)) as a new (N, T, D) tensor, or with last_only=True only
    its last token, (N, 1, D): the earlier tokens then need keys and values but no query, attention
    output or output projection (what the predictor's last block needs when only the last row is read).

    Launch config: autotuned over GPU_CONFIGS[dot class, output_kind] (one fixed config under the
    interpreter): 64 sequences per program for one output token, 32 for a whole 2-3 token window (64
    spill there: three (64, 256) fp32 output accumulators live across the head loop), 16 in exact fp32
    (FMA dots hold whole operand tiles in registers: 1 stage, default_stages). block_n and block_k (with
    num_warps, and num_stages or default_stages) launch that config instead (sweeps, benchmarks). A
    variant that flattens (sequence, token) into rows and does the attention with 3-D broadcasts
    spilled far more (0.7-5 KB) and was dropped.

    KV cache (the planner's growing window): xn, residual and gate then hold only the window's last
    tokens, after `cached` earlier ones whose keys/values are read from kv_cache (N, W, 2, heads * dh)
    (W >= cached + new tokens; any float dtype, stored as given); store_kv=True writes the computed
    tokens' keys/values into kv_cache at their window positions. The output covers the new tokens
    (or with last_only the last one). attention_kv_ref is the definition.

    out: write the result there instead of a new tensor ((N, T or 1, D), xn's dtype, unit stride along
    D; e.g. one token's rows of a window's output, as split_window does)."""
    check_compute_dtype("xn", xn)
    dot_precision = check_precision(precision)
    if xn.ndim != 3:
        raise ValueError(f"xn must be (N, T, D), got shape {tuple(xn.shape)}")
    N, T, D = xn.shape
    if not 1 <= T <= MAX_TOKENS:
        raise ValueError(f"attention kernel handles 1..{MAX_TOKENS} tokens, got T={T}")
    if heads < 1 or w_qkv.shape[0] % (3 * heads):
        raise ValueError(f"w_qkv has {w_qkv.shape[0]} rows, not a multiple of 3 * heads = {3 * heads}")
    dim_head = w_qkv.shape[0] // (3 * heads)
    inner = heads * dim_head
    check_param("w_qkv", w_qkv, (3 * inner, D), xn.device)
    check_param("w_out", w_out, (D, inner), xn.device)
    check_param("b_out", b_out, (D,), xn.device)
    if w_out.dtype != w_qkv.dtype:
        raise TypeError(f"w_qkv ({w_qkv.dtype}) and w_out ({w_out.dtype}) must share a dtype (the dots' operand type)")
    check_tensor("residual", residual, (N, T, D), xn.dtype, xn.device)
    check_modulation("gate", gate, (N, T, D), xn.device)
    if xn.stride(-1) != 1 or residual.stride(-1) != 1 or gate.stride(-1) != 1:
        raise ValueError("xn, residual and gate need a unit stride along D")
    if out is None:
        out = torch.empty((N, 1 if last_only else T, D), dtype=xn.dtype, device=xn.device)
    else:
        check_tensor("out", out, (N, 1 if last_only else T, D), xn.dtype, xn.device)
        if out.stride(-1) != 1:
            raise ValueError("out needs a unit stride along D")
    if N == 0:
        return out
    C, W = int(cached), T + int(cached)           # T is the number of new tokens from here on
    if C < 0 or W > MAX_TOKENS:
        raise ValueError(f"cached={cached} + {T} new tokens must make a window of 1..{MAX_TOKENS}")
    if (C or store_kv) and kv_cache is None:
        raise ValueError("cached > 0 or store_kv needs kv_cache (N, W, 2, heads * dh)")
    if kv_cache is not None:
        if kv_cache.ndim != 4 or kv_cache.shape[0] != N or kv_cache.shape[1] < W or kv_cache.shape[2:] != (2, inner):
            raise ValueError(f"kv_cache must be (N={N}, >= {W}, 2, {inner}), got {tuple(kv_cache.shape)}")
        if kv_cache.device != xn.device or kv_cache.stride(3) != 1 or kv_cache.stride(2) != inner:
            raise ValueError("kv_cache must be on xn's device with contiguous (2, inner) rows")
    kv = kv_cache if kv_cache is not None else out        # a dummy pointer, never read or written
    if (block_n is None) != (block_k is None):
        raise ValueError("pass both block_n and block_k (an explicit launch config), or neither (autotuned)")
    flags = window_flags(W, C, last_only)
    args = (xn, w_qkv, w_out, b_out, residual, gate, out, kv, N, D, heads, dim_head, 1.0 / math.sqrt(dim_head),
            xn.stride(0), xn.stride(1), residual.stride(0), residual.stride(1), gate.stride(0), gate.stride(1),
            out.stride(0), out.stride(1), kv.stride(0), kv.stride(1))
    consts = dict(T=W, C=C, STORE_KV=bool(store_kv), **flags, BLOCK_D=block_size(D), BLOCK_DH=block_size(dim_head),
                  DOT_DTYPE=dot_dtype(w_qkv.dtype), PRECISION=dot_precision)
    if block_n is None:
        tuned = _TUNED[dot_class(w_qkv.dtype, precision), output_kind(W, flags["OUT0"], flags["OUT1"])]
        tuned[lambda meta: (triton.cdiv(N, meta["BLOCK_N"]),)](*args, **consts)
    else:
        num_stages = default_stages(w_qkv.dtype, dot_precision) if num_stages is None else num_stages
        _attention_kernel[(triton.cdiv(N, block_n),)](*args, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps,
                                                       num_stages=num_stages, **consts)
    return out


def attention_by_token(xn: torch.Tensor, w_qkv: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor,
                       residual: torch.Tensor, gate: torch.Tensor, heads: int, precision: str = "ieee",
                       kv_cache: torch.Tensor | None = None, store_kv: bool = False) -> torch.Tensor:
    """The uncached window (N, T, D) as T one-token launches chained through the KV cache: token t's
    launch reads tokens < t's keys/values from kv_cache (stored by the launches before it) and writes
    its own; every launch is the "one" output kind (64-sequence programs on the GPU) instead of one
    launch holding T output accumulators. Same result as attention(...) on the whole window.
    kv_cache: (N, >= T, 2, heads * dh), e.g. the planner's cache when it is kept (store_kv: the last
    token's keys/values too); None: a scratch window in xn's dtype."""
    N, T, _ = xn.shape
    if kv_cache is None:
        kv_cache = torch.empty(N, T, 2, w_out.shape[1], dtype=xn.dtype, device=xn.device)
    out = torch.empty(xn.shape, dtype=xn.dtype, device=xn.device)
    for t in range(T):
        attention(xn[:, t:t + 1], w_qkv, w_out, b_out, residual[:, t:t + 1], gate[:, t:t + 1], heads,
                  precision=precision, kv_cache=kv_cache, cached=t, store_kv=store_kv or t < T - 1,
                  out=out[:, t:t + 1])
    return out
