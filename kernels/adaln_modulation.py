"""AdaLN modulation vector: SiLU(c) @ W^T + b (192 -> 6 x 192 per predictor block).

The SiLU is applied to the A tile as it is loaded (prologue fusion), so SiLU(c) never goes to memory.
In the planner the conditioning c (the action embeddings) is the same for all 6 blocks, so
`lewm_fast.model.pack_predictor` stacks the 6 blocks' weights into one (6 x 1152, 192) matrix and the
planner's TritonPredictor calls this kernel once per CEM iteration: one launch and one pass over c
instead of six per window.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import as_rows, check_compute_dtype, check_param, check_precision, dot_dtype

import triton
import triton.language as tl


def adaln_modulation_ref(c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Definition: nn.Sequential(nn.SiLU(), nn.Linear(D, 6D)) applied to c."""
    return F.linear(F.silu(c), weight, bias)


@triton.jit
def _adaln_modulation_kernel(c_ptr, w_ptr, b_ptr, out_ptr, M, N, K, stride_c, stride_w, stride_out,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                             DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < M
    col_mask = cols < N
    r64 = rows.to(tl.int64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        c = tl.load(c_ptr + r64[:, None] * stride_c + ks[None, :], mask=row_mask[:, None] & k_mask[None, :],
                    other=0.0).to(tl.float32)
        a = c * tl.sigmoid(c)                      # SiLU in fp32; SiLU(0) = 0 keeps the padding inert
        # W is (N, K) row-major: read the (BLOCK_K, BLOCK_N) tile of W^T by swapping the index roles
        w = tl.load(w_ptr + cols[None, :].to(tl.int64) * stride_w + ks[:, None],
                    mask=k_mask[:, None] & col_mask[None, :], other=0.0)
        acc = tl.dot(a.to(DOT_DTYPE), w.to(DOT_DTYPE), acc, input_precision=PRECISION)
    acc += tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + r64[:, None] * stride_out + cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=row_mask[:, None] & col_mask[None, :])


def adaln_modulation(c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, precision: str = "ieee",
                     block_m: int = 32, block_n: int = 128, block_k: int = 64, num_warps: int = 8,
                     num_stages: int = 3, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """c: (..., K); weight: (N, K) contiguous; bias: (N,). Returns (..., N) in out_dtype (default c's
    dtype), rounded once from the fp32 accumulator.
    The dot runs in weight's dtype (bf16 weights with fp32 c: bf16 tensor-core products, fp32 output).

    Defaults: compiled offline for sm_90, 32 x 128 tiles with 8 warps and 3 stages do not spill in
    tf32/bf16 (24 bytes of stack in exact fp32) and use <= 88 KB of shared memory."""
    check_compute_dtype("c", c)
    dot_precision = check_precision(precision)
    K = c.shape[-1]
    check_param("weight", weight, (None, K), c.device)
    N = weight.shape[0]
    check_param("bias", bias, (N,), c.device)
    cr = as_rows(c, K)
    M = cr.shape[0]
    if out_dtype is not None and out_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"out_dtype must be float32, float16 or bfloat16, got {out_dtype}")
    out = torch.empty((M, N), dtype=out_dtype or c.dtype, device=c.device)
    if M:
        grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
        _adaln_modulation_kernel[grid](cr, weight, bias, out, M, N, K, cr.stride(0), weight.stride(0),
                                       out.stride(0), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                                       DOT_DTYPE=dot_dtype(weight.dtype), PRECISION=dot_precision, num_warps=num_warps,
                                       num_stages=num_stages)
    return out.view(*c.shape[:-1], N)
