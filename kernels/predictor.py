"""The whole LeWM predictor forward (spec A.4) through the fused kernels, for the CEM planner.

Per forward: one adaln_modulation launch for all blocks (the conditioning is the same for every
block, so the blocks' (6D, D) weights are stacked into one (depth * 6D, D) matrix), then per block
norm_modulate -> attention (qkv + causal attention + to_out + gated residual) -> mlp (double norm +
MLP + gated residual), then the final affine LayerNorm (norm_modulate without modulation): 3 launches
per block, 2 + 3 * depth in all (20 for the paper's model; eager PyTorch launches about 20 per block).
The position-embedding add stays a torch op (one tiny element-wise kernel).

Precisions (the planner's names are accepted): "ieee" / "fp32" exact fp32 products; "tf32" TF32
tensor-core products for fp32 operands; "bf16" bf16 matmul weights and operands with fp32 accumulation,
while the residual stream, norms, softmax and output stay in the activation dtype (fp32 for an fp32
model). fp16/bf16 models always use their own dtype's tensor-core dots.

`pack_predictor` gathers the weights (contiguous, stacked, converted); passing a module packs on first
use and caches the pack on the module (re-packed when a parameter changes), so repeated calls in a
solve do not copy weights. Inference only: no dropout, no autograd.
"""
from __future__ import annotations

import weakref

import torch

# one pack definition for every predictor path (the eager planner step too): it lives with the model
from lewm_fast.model import (PACK_PRECISIONS as PRECISIONS, PackedBlock, PackedPredictor,  # noqa: F401
                             check_pack_precision as check_predictor_precision, pack_predictor)

from ._common import check_compute_dtype
from .adaln_modulation import adaln_modulation, adaln_modulation_ref
from .attention import MAX_TOKENS, attention, attention_ref
from .mlp import mlp, mlp_ref
from .norm_modulate import norm_modulate, norm_modulate_ref


# module -> {(precision class, dtype): (parameter fingerprint, pack)}; weak, so packs die with their module
_PACK_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _cached_pack(predictor, precision: str) -> PackedPredictor:
    fingerprint = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in predictor.parameters())
    slot = ("bf16" if precision == "bf16" else "native", predictor.pos_embedding.dtype)
    per_module = _PACK_CACHE.setdefault(predictor, {})
    hit = per_module.get(slot)
    if hit is not None and hit[0] == fingerprint:
        return hit[1]
    packed = pack_predictor(predictor, precision)
    per_module[slot] = (fingerprint, packed)
    return packed


def _prepare(predictor, emb, act_emb, precision):
    check_predictor_precision(precision)
    if isinstance(predictor, PackedPredictor):
        packed = predictor
        want = torch.bfloat16 if precision == "bf16" else packed.dtype
        if packed.weight_dtype != want:
            raise ValueError(f"this pack has {packed.weight_dtype} matmul weights for {packed.dtype} activations; "
                             f"precision {precision!r} needs pack_predictor(module, precision={precision!r})")
    else:
        packed = _cached_pack(predictor, precision)
    if emb.ndim != 3 or act_emb.shape != emb.shape:
        raise ValueError(f"emb and act_emb must both be (B, T, D); got {tuple(emb.shape)} and {tuple(act_emb.shape)}")
    B, T, D = emb.shape
    if D != packed.dim:
        raise ValueError(f"embeddings are {D} wide; the predictor expects {packed.dim}")
    if not 1 <= T <= min(packed.pos.shape[0], MAX_TOKENS):
        raise ValueError(f"predictor window has {T} frames; supported 1..{min(packed.pos.shape[0], MAX_TOKENS)}")
    check_compute_dtype("emb", emb)
    check_compute_dtype("act_emb", act_emb)
    x = (emb.to(packed.dtype) + packed.pos[:T]).contiguous()
    return packed, x, act_emb.to(packed.dtype)


def _chunks(mod: torch.Tensor, i: int, D: int):
    """The 6 modulation chunks of block i as strided views (no copies): shift/scale/gate msa, then mlp."""
    base = i * 6 * D
    return [mod[..., base + j * D: base + (j + 1) * D] for j in range(6)]


def predictor_forward_triton(predictor, emb: torch.Tensor, act_emb: torch.Tensor,
                             precision: str = "ieee", last_only: bool = False) -> torch.Tensor:
    """Predictor.forward (eval mode) through the Triton kernels.

    predictor: a lewm_fast.model.Predictor (packed on first use, cached) or a PackedPredictor.
    emb, act_emb: (B, T, D), T <= 3, cast to the activation dtype. precision: "ieee" (= "fp32"),
    "tf32" or "bf16" (see the module doc). Returns (B, T, D) in the activation dtype; with last_only=True
    just the last token's output, (B, 1, D) (all the planner reads): the last block then skips the
    earlier tokens' queries, attention outputs, output projections and MLPs, and the final norm.
    """
    packed, x, act = _prepare(predictor, emb, act_emb, precision)
    kp = precision              # one vocabulary: the launchers take the planner's names
    D = packed.dim
    mod = adaln_modulation(act, packed.mod_w, packed.mod_b, precision=kp)
    depth = len(packed.blocks)
    for i, blk in enumerate(packed.blocks):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = _chunks(mod, i, D)
        xn = norm_modulate(x, shift_msa, scale_msa, blk.attn_ln_w, blk.attn_ln_b, blk.eps_plain1, blk.eps_attn)
        last = last_only and i == depth - 1
        x = attention(xn, blk.w_qkv, blk.w_out, blk.b_out, x, gate_msa, packed.heads, precision=kp, last_only=last)
        if last:     # rows are per token from here on: keep the last token's modulation (strided views)
            shift_mlp, scale_mlp, gate_mlp = shift_mlp[:, -1:], scale_mlp[:, -1:], gate_mlp[:, -1:]
        x = mlp(x, shift_mlp, scale_mlp, gate_mlp, blk.mlp_ln_w, blk.mlp_ln_b, blk.w1, blk.b1, blk.w2, blk.b2,
                precision=kp, eps_plain=blk.eps_plain2, eps_affine=blk.eps_mlp)
    return norm_modulate(x, None, None, packed.final_w, packed.final_b, eps_affine=packed.final_eps)


def predictor_forward_ref(predictor, emb: torch.Tensor, act_emb: torch.Tensor, precision: str = "ieee",
                          last_only: bool = False) -> torch.Tensor:
    """The same composition through the kernels' *_ref functions (plain torch): the definition the
    Triton path is tested against, and itself tested against lewm_fast.model.Predictor. With bf16
    matmul weights the reference uses those rounded weights in the activation dtype."""
    packed, x, act = _prepare(predictor, emb, act_emb, precision)
    w = lambda t: t.to(packed.dtype)  # noqa: E731  (no-op unless the pack is mixed-precision)
    D = packed.dim
    mod = adaln_modulation_ref(act, w(packed.mod_w), packed.mod_b)
    depth = len(packed.blocks)
    for i, blk in enumerate(packed.blocks):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = _chunks(mod, i, D)
        xn = norm_modulate_ref(x, shift_msa, scale_msa, blk.attn_ln_w, blk.attn_ln_b, blk.eps_plain1, blk.eps_attn)
        last = last_only and i == depth - 1
        x = attention_ref(xn, w(blk.w_qkv), w(blk.w_out), blk.b_out, x, gate_msa, packed.heads, last_only=last)
        if last:
            shift_mlp, scale_mlp, gate_mlp = shift_mlp[:, -1:], scale_mlp[:, -1:], gate_mlp[:, -1:]
        x = mlp_ref(x, shift_mlp, scale_mlp, gate_mlp, blk.mlp_ln_w, blk.mlp_ln_b, w(blk.w1), blk.b1, w(blk.w2),
                    blk.b2, blk.eps_plain2, blk.eps_mlp)
    return norm_modulate_ref(x, None, None, packed.final_w, packed.final_b, eps_affine=packed.final_eps)
