"""Matmul FLOPs of one planning solve, counted from the model config (2 FLOPs per multiply-add).

Only matrix products are counted (linear layers, convolutions, attention's two products), the same
convention as `torch.utils.flop_counter.FlopCounterMode`; norms, activations and the CEM refit are
negligible at these sizes. Two counts per LeWM solve:

- "floor": the arithmetic a solve cannot avoid (targets.md): keys/values of earlier tokens reused while
  the window grows, so horizon 5 with history 1 is 1+1+1+3+3 = 9 token passes per candidate and
  iteration through every predictor block (AdaLN linear included); causal attention pairs only;
  pred_proj on the appended token only; the action embedder; the context and goal frames encoded once.
- "reference": what stable-worldmodel 0.1.1 computes: the whole window recomputed every step
  (1+2+3+3+3 = 12 token passes), full-square attention products, pred_proj on every window token.

`tests/test_speed_report.py` checks the "reference" count against FlopCounterMode on the reference port.
"""
from __future__ import annotations


def _windows(history: int, horizon: int, num_frames: int) -> list[tuple[int, int]]:
    """(window length, tokens new to the window) per rollout step; new = all once the window slides."""
    out, cached = [], 0
    for t in range(horizon):
        lo, hi = max(0, history + t - num_frames), history + t
        n = hi - lo
        new = n - cached if lo == 0 and t > 0 else n
        out.append((n, new))
        cached = n
    return out


def vit_frame_flops(tokens: int, dim: int, depth: int, mlp: int, patch_in: int, patches: int) -> int:
    """One frame through a pre-norm ViT (fused qkv): patch conv + depth x (qkv, attn, out, mlp)."""
    per_block = tokens * (2 * dim * 3 * dim + 2 * dim * dim + 2 * 2 * dim * mlp) + 2 * 2 * tokens * tokens * dim
    return 2 * patch_in * dim * patches + depth * per_block


def lewm_encode_flops(cfg) -> int:
    """One frame: ViT encoder + projector (Linear D->P, Linear P->D)."""
    D, P = cfg.embed_dim, cfg.proj_hidden_dim
    vit = vit_frame_flops(cfg.num_patches + 1, D, cfg.enc_depth, cfg.enc_mlp_dim, 3 * cfg.patch_size ** 2,
                          cfg.num_patches)
    return vit + 2 * 2 * D * P


def lewm_solve_flops(cfg, *, num_samples: int = 300, iterations: int = 30, horizon: int = 5,
                     history: int = 1, mode: str = "floor") -> dict:
    """Matmul FLOPs of one single-environment CEM solve, broken down; multiply by B for B environments."""
    if mode not in ("floor", "reference"):
        raise ValueError(f"mode must be 'floor' or 'reference', got {mode!r}")
    D, inner, M, P = cfg.embed_dim, cfg.pred_heads * cfg.pred_dim_head, cfg.pred_mlp_dim, cfg.proj_hidden_dim
    per_token_block = 2 * D * 6 * D + 2 * D * 3 * inner + 2 * inner * D + 2 * 2 * D * M
    token_passes = attn_pairs = proj_tokens = 0
    for n, new in _windows(history, horizon, cfg.num_frames):
        if mode == "reference":
            token_passes += n
            attn_pairs += n * n                      # SDPA multiplies the full square, then masks
            proj_tokens += n
        else:
            token_passes += new
            attn_pairs += sum(range(n - new + 1, n + 1))   # query i sees keys 0..i
            proj_tokens += 1
    A, sm = cfg.action_dim, cfg.act_smoothed_dim
    act_per_token = 2 * A * sm + 2 * sm * cfg.act_mlp_scale * D + 2 * cfg.act_mlp_scale * D * D
    per_sample = {
        "predictor_linear": cfg.pred_depth * token_passes * per_token_block,
        "predictor_attention": cfg.pred_depth * attn_pairs * 2 * 2 * inner,
        "pred_proj": proj_tokens * 2 * 2 * D * P,
        "action_embedder": (history - 1 + horizon) * act_per_token,
    }
    out = {k: v * num_samples * iterations for k, v in per_sample.items()}
    out["encoder"] = (history + 1) * lewm_encode_flops(cfg)      # context frames + goal, once per solve
    out["total"] = sum(out.values())
    out["token_passes_per_candidate"] = token_passes
    return out


def dinowm_solve_flops(dcfg, *, num_samples: int = 300, iterations: int = 30, horizon: int = 5) -> dict:
    """Matmul FLOPs of one DINO-WM-scale solve planned the reference way (bench/dinowm.py): the observation
    re-encoded for every candidate every iteration, the whole frame-causal window recomputed each step."""
    N, W = dcfg.patches, dcfg.pred_width
    inner, M = dcfg.pred_heads * dcfg.pred_dim_head, dcfg.pred_mlp_dim
    per_token_block = 2 * W * 3 * inner + 2 * inner * W + 2 * 2 * W * M
    token_passes = attn_sq = 0
    for n, _ in _windows(1, horizon, dcfg.history):
        token_passes += n * N
        attn_sq += (n * N) ** 2
    enc = vit_frame_flops(N + 1, dcfg.enc_dim, dcfg.enc_depth, dcfg.enc_mlp_dim, 3 * dcfg.patch_size ** 2, N)
    out = {
        "encoder": enc * num_samples * iterations + enc,          # obs per candidate per iteration, goal once
        "predictor_linear": dcfg.pred_depth * token_passes * per_token_block * num_samples * iterations,
        "predictor_attention": dcfg.pred_depth * attn_sq * 2 * 2 * inner * num_samples * iterations,
        # actions: every candidate block; proprio: the observation's once per iteration, the goal's once
        "proprio_action_embed": 2 * dcfg.action_dim * dcfg.action_emb * horizon * num_samples * iterations
        + 2 * dcfg.proprio_dim * dcfg.proprio_emb * (iterations + 1),
    }
    out["total"] = sum(out.values())
    return out
