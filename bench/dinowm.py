"""A DINO-WM-scale world model and its planner, for timing the paper's "48x faster" comparison (spec F).

Random weights: only the sizes matter for timing. Default sizes are DINO-WM's:
- encoder: DINOv2 ViT-S/14 shape (12 layers, width 384, 6 heads, MLP 1536) on 196x196 frames ->
  196 patch tokens x 384;
- proprio and action embeddings of 10 each, concatenated to every patch token (width 404);
- predictor: 6 pre-norm ViT blocks, 16 heads x 64, MLP 2048, frame-causal attention over up to
  history (3) x 196 = 588 tokens (~19.8 M parameters).

Planning the reference way (`DinoWMReferenceCEM`): CEM 300 x 30, top 30, horizon 5, one environment at
a time; every iteration re-encodes the observation for all candidates; every rollout step recomputes the
whole window; cost = MSE over the last predicted frame's patches + proprio MSE.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lewm_fast.model import ViTBlock


def derivation(cfg: "DinoWMConfig") -> dict:
    """Where the DINO-WM-scale sizes come from (stated in every bench.cem report), computed from cfg."""
    side = cfg.image_size // cfg.patch_size
    return {
        "frames": f"dino_wm resizes 224 px frames to {cfg.image_size} px before the ViT-S/{cfg.patch_size} "
                  f"encoder: ({cfg.image_size} / {cfg.patch_size})^2 = {side}^2 = {cfg.patches} patch tokens "
                  f"of {cfg.enc_dim} dims",
        "width": f"{cfg.action_emb}-d action and {cfg.proprio_emb}-d proprio embeddings concatenated to every "
                 f"patch token: {cfg.enc_dim} + {cfg.action_emb} + {cfg.proprio_emb} = {cfg.pred_width}",
        "tokens": f"history {cfg.history} frames x {cfg.patches} = {cfg.history * cfg.patches} predictor tokens",
        "kernels": f"lewm_fast's Triton kernels take windows of <= 3 tokens of width 192 (LeWM's one "
                   f"latent per frame); {cfg.history * cfg.patches}-token windows of width {cfg.pred_width} "
                   "do not fit them, so the DINO-WM side runs in PyTorch (the reference way) under every "
                   "variant, and each lewm_fast variant (eager / triton / graph) is compared with it on "
                   "its own kernels; the 1000x target is read against the best one (best_lewm_fast)",
    }


@dataclass
class DinoWMConfig:
    image_size: int = 196
    patch_size: int = 14
    enc_dim: int = 384
    enc_depth: int = 12
    enc_heads: int = 6
    enc_mlp_dim: int = 1536
    proprio_dim: int = 4
    proprio_emb: int = 10
    action_dim: int = 10          # env action dim x frameskip (PushT: 2 x 5)
    action_emb: int = 10
    history: int = 3
    pred_depth: int = 6
    pred_heads: int = 16
    pred_dim_head: int = 64
    pred_mlp_dim: int = 2048

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def pred_width(self) -> int:
        return self.enc_dim + self.proprio_emb + self.action_emb

    @classmethod
    def small(cls, **kw) -> "DinoWMConfig":
        """For tests: a few-thousand-parameter model with the same structure."""
        base = dict(image_size=32, patch_size=8, enc_dim=32, enc_depth=2, enc_heads=2, enc_mlp_dim=64,
                    pred_depth=2, pred_heads=2, pred_dim_head=8, pred_mlp_dim=64)
        base.update(kw)
        return cls(**base)


class PredictorBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, mlp: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.out = nn.Linear(heads * dim_head, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, N, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(a.transpose(1, 2).reshape(B, N, -1))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class DinoWMScale(nn.Module):
    def __init__(self, cfg: DinoWMConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DinoWMConfig()
        E, N = cfg.enc_dim, cfg.patches
        self.patch_embed = nn.Conv2d(3, E, cfg.patch_size, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, E) * 0.02)
        self.enc_pos = nn.Parameter(torch.randn(1, N + 1, E) * 0.02)
        self.enc_blocks = nn.ModuleList(ViTBlock(E, cfg.enc_heads, cfg.enc_mlp_dim, 1e-6) for _ in range(cfg.enc_depth))
        self.enc_norm = nn.LayerNorm(E, eps=1e-6)
        self.proprio_encoder = nn.Linear(cfg.proprio_dim, cfg.proprio_emb)
        self.action_encoder = nn.Linear(cfg.action_dim, cfg.action_emb)
        W = cfg.pred_width
        self.pred_pos = nn.Parameter(torch.randn(1, cfg.history * N, W) * 0.02)
        self.pred_blocks = nn.ModuleList(PredictorBlock(W, cfg.pred_heads, cfg.pred_dim_head, cfg.pred_mlp_dim)
                                         for _ in range(cfg.pred_depth))
        self.pred_norm = nn.LayerNorm(W)
        # frame-causal: a token sees every patch of its own and earlier frames
        frame = torch.arange(cfg.history * N) // N
        self.register_buffer("frame_mask", frame[:, None] >= frame[None, :], persistent=False)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) -> (n, patches, enc_dim) patch tokens (the CLS token is dropped, as DINO-WM)."""
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.enc_pos
        for blk in self.enc_blocks:
            x = blk(x)
        return self.enc_norm(x)[:, 1:]

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """z (n, f, patches, width) for f <= history frames -> (n, f, patches, width) next-frame predictions."""
        n, f, N, W = z.shape
        x = z.reshape(n, f * N, W) + self.pred_pos[:, :f * N]
        mask = self.frame_mask[:f * N, :f * N]
        for blk in self.pred_blocks:
            x = blk(x, mask)
        return self.pred_norm(x).view(n, f, N, W)


def random_dinowm(cfg: DinoWMConfig | None = None, seed: int = 0, device=None) -> DinoWMScale:
    torch.manual_seed(seed)
    return DinoWMScale(cfg).to(device or "cpu").eval()


class DinoWMReferenceCEM:
    """DINO-WM's planning loop at its published settings (one environment at a time, fp32).

    `solve(pixels, proprio, goal_pixels, goal_proprio)` for one environment: pixels (1, 3, h, w)
    normalised floats, proprio (1, proprio_dim). `candidates_per_pass` bounds the candidates evaluated
    in one forward pass (memory); the reference evaluates all at once."""

    def __init__(self, model: DinoWMScale, *, num_samples: int = 300, iterations: int = 30, topk: int = 30,
                 horizon: int = 5, var_scale: float = 1.0, seed: int = 42, candidates_per_pass: int | None = None):
        self.model = model
        self.num_samples, self.iterations, self.topk, self.horizon = num_samples, iterations, topk, horizon
        self.var_scale = var_scale
        self.per_pass = candidates_per_pass or num_samples
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def _cost(self, pixels, proprio, goal_vis, goal_prop, cand):
        m, cfg = self.model, self.model.cfg
        S, T, _ = cand.shape
        # the reference re-encodes the current observation once per candidate, every iteration
        vis = m.encode_pixels(pixels.expand(S, -1, -1, -1))                    # (S, N, E)
        N = vis.shape[1]
        prop = m.proprio_encoder(proprio).expand(S, -1)
        act = m.action_encoder(cand)                                           # (S, T, action_emb)

        def token(v, p, a):    # concatenate proprio and action embeddings to every patch
            return torch.cat([v, p[:, None].expand(-1, N, -1), a[:, None].expand(-1, N, -1)], -1)

        z = [token(vis, prop, act[:, 0])]
        E, P = cfg.enc_dim, cfg.proprio_emb
        for t in range(T):
            window = torch.stack(z[-cfg.history:], 1)
            new = m.predict(window)[:, -1]                                     # whole window recomputed
            if t + 1 < T:
                new = torch.cat([new[..., :E + P], act[:, t + 1, None].expand(-1, N, -1)], -1)
            z.append(new)
        last = z[-1]
        vis_err = (last[..., :E] - goal_vis).pow(2).mean((1, 2))
        prop_err = (last[:, 0, E:E + P] - goal_prop).pow(2).mean(-1)
        return vis_err + prop_err

    @torch.inference_mode()
    def solve(self, pixels, proprio, goal_pixels, goal_proprio, iterations: int | None = None) -> dict:
        m = self.model
        A, T, S = m.cfg.action_dim, self.horizon, self.num_samples
        goal_vis = m.encode_pixels(goal_pixels)                                # goal: once per solve
        goal_prop = m.proprio_encoder(goal_proprio)
        mean = torch.zeros(T, A, device=self.device)
        std = torch.full((T, A), float(self.var_scale), device=self.device)
        cost_hist = []
        for _ in range(iterations or self.iterations):
            cand = torch.randn(S, T, A, generator=self.generator, device=self.device) * std + mean
            cand[0] = mean
            cost = torch.cat([self._cost(pixels, proprio, goal_vis, goal_prop, cand[i:i + self.per_pass])
                              for i in range(0, S, self.per_pass)])
            vals, idx = torch.topk(cost, min(self.topk, S), largest=False)
            elites = cand[idx]
            mean, std = elites.mean(0), elites.std(0)
            cost_hist.append(vals.mean().item())                               # host sync per iteration
        return {"actions": mean.cpu(), "costs": cost_hist}
