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

from ._common import as_rows, check_compute_dtype, check_param, check_precision, dot_dtype, tuning_configs

import triton
import triton.language as tl

# Launch configs, autotuned on the GPU per (M, N, K, dtypes); each compiled for sm_90 by compile_check.py
# (spill bytes/thread at the paper's shapes: bf16 / tf32 / exact fp32). 64 and 128 rows per program
# give one or two wgmma M tiles per warpgroup (wgmma.mma_async in the bf16/tf32 PTX); 32 rows (the
# former default) lower to mma.sync and stay listed for the tuner to compare.
GPU_CONFIGS = [dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, num_warps=4, num_stages=3),    # 0 / 0 / 680 B
               dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3),   # 0 / 0 / 600 B
               dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, num_warps=4, num_stages=3),     # 0 / 0 / 0
               dict(BLOCK_M=32, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)]    # 0 / 0 / 0
INTERPRETER_CONFIG = dict(BLOCK_M=32, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)


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


_TUNED = triton.autotune(tuning_configs(GPU_CONFIGS, INTERPRETER_CONFIG), key=["M", "N", "K"])(_adaln_modulation_kernel)


def adaln_modulation(c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, precision: str = "ieee",
                     out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """c: (..., K); weight: (N, K) contiguous; bias: (N,). Returns (..., N) in out_dtype (default c's
    dtype), rounded once from the fp32 accumulator.
    The dot runs in weight's dtype (bf16 weights with fp32 c: bf16 tensor-core products, fp32 output).
    Launch config: autotuned over GPU_CONFIGS (one fixed config under the interpreter)."""
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
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"]))  # noqa: E731
        _TUNED[grid](cr, weight, bias, out, M, N, K, cr.stride(0), weight.stride(0), out.stride(0),
                     DOT_DTYPE=dot_dtype(weight.dtype), PRECISION=dot_precision)
    return out.view(*c.shape[:-1], N)
