"""Batched rollout engine: the maths of `LeWM.rollout` + `LeWM.cost` for B environments x S candidates.

Per solve: context and goal frames are encoded once (`encode`). Per iteration (`costs`): the action
embedder runs once on all candidates; rows (B*S) are processed in chunks that bound memory; each
chunk's steps go through a predictor backend (backends.py), which keeps keys/values while the
window grows and recomputes the window once it slides (spec C.1). pred_proj runs only on the row
each step appends (the last token), which is all `LeWM.rollout` keeps of `predict(window)`.

Everything here is tensor ops with shapes fixed by (B, S, T, H): no host syncs, so a whole solve
can be captured in a CUDA graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .backends import make_predictor_backend
from .precision import check_precision, matmul_dtype


class RolloutEngine:
    def __init__(self, model, precision: str = "fp32", predictor_backend: str = "eager",
                 chunk_rows: int | None = None, compile: bool = False):
        self.model = model
        self.cfg = model.cfg
        self.precision = check_precision(precision)
        self.predictor = make_predictor_backend(predictor_backend, model, precision, compile=compile)
        self.chunk_rows = chunk_rows
        md = matmul_dtype(precision)
        bn = model.pred_proj.net[1]
        l1, l2 = model.pred_proj.net[0], model.pred_proj.net[3]
        # pred_proj: Linear -> BatchNorm1d (eval: running statistics) -> GELU -> Linear
        self._proj = dict(w1=l1.weight.detach().to(md), b1=l1.bias.detach().to(md),
                          bn=(bn.running_mean.detach().float(), bn.running_var.detach().float(),
                              bn.weight.detach().float(), bn.bias.detach().float(), bn.eps),
                          w2=l2.weight.detach().to(md), b2=l2.bias.detach().to(md), md=md)

    # ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(..., 3, h, w) uint8 or normalised float -> (..., D) fp32 embeddings (eager model encoder)."""
        return self.model.encode(pixels).float()

    def pred_proj(self, x: torch.Tensor) -> torch.Tensor:
        p = self._proj
        h = F.linear(x.to(p["md"]), p["w1"], p["b1"]).float()
        rm, rv, g, b, eps = p["bn"]
        h = F.gelu(F.batch_norm(h, rm, rv, g, b, False, 0.0, eps)).to(p["md"])
        return F.linear(h, p["w2"], p["b2"]).float()

    def _chunks(self, n: int):
        step = self.chunk_rows or n
        return [(i, min(i + step, n)) for i in range(0, n, step)]

    def _rollout_rows(self, ctx: torch.Tensor, act_emb: torch.Tensor, keep_all: bool):
        """ctx (n, H, D), act_emb (n, H-1+T, D) -> list of T predictions (n, D) (only the last if not keep_all)."""
        H = ctx.shape[1]
        T = act_emb.shape[1] - H + 1
        W = self.cfg.num_frames
        be = self.predictor
        be.begin(act_emb)
        frames = list(ctx.unbind(1))
        preds = []
        cache = None
        for t in range(T):
            lo, hi = max(0, H + t - W), H + t
            if cache is not None and lo == 0:
                pos0 = hi - 1            # growing window: earlier tokens' keys/values are still valid
            else:
                pos0, cache = 0, None    # first step, or the window slid: every position changed
            x = torch.stack(frames[lo + pos0:hi], dim=1)
            keep = be.supports_kv_cache and t + 1 < T and H + t + 1 - W <= 0
            last, cache = be.window(x, lo, pos0, cache, keep)
            pred = self.pred_proj(last)
            frames.append(pred)
            if keep_all or t == T - 1:
                preds.append(pred)
        return preds

    def _prepare(self, ctx_emb, candidates, action_history):
        B, S, T, A = candidates.shape
        H = ctx_emb.shape[1]
        if action_history is not None and H > 1:
            hist = action_history
            if hist.ndim == 3:
                hist = hist.unsqueeze(1).expand(B, S, H - 1, A)
            acts = torch.cat([hist.to(candidates.dtype), candidates], dim=2)
        else:
            acts = candidates
        act_emb = self.model.action_encoder(acts.reshape(B * S, H - 1 + T, A)).float()
        ctx = ctx_emb.float().unsqueeze(1).expand(B, S, H, ctx_emb.shape[-1]).reshape(B * S, H, -1)
        return ctx, act_emb

    @torch.inference_mode()
    def rollout(self, ctx_emb, candidates, action_history=None) -> torch.Tensor:
        """Same output as LeWM.rollout(candidates, emb=ctx_emb, action_history=...): (B, S, H+T, D)."""
        B, S, T, _ = candidates.shape
        ctx, act_emb = self._prepare(ctx_emb, candidates, action_history)
        out = []
        for a, b in self._chunks(B * S):
            preds = self._rollout_rows(ctx[a:b], act_emb[a:b], keep_all=True)
            out.append(torch.cat([ctx[a:b], torch.stack(preds, 1)], dim=1))
        return torch.cat(out, 0).view(B, S, ctx.shape[1] + T, -1)

    @torch.inference_mode()
    def costs(self, ctx_emb, goal_emb, candidates, action_history=None) -> torch.Tensor:
        """Spec C.2 cost of each candidate: (B, S) = sum_d (last prediction - goal)^2."""
        B, S = candidates.shape[:2]
        ctx, act_emb = self._prepare(ctx_emb, candidates, action_history)
        goal = goal_emb.float().unsqueeze(1).expand(B, S, -1).reshape(B * S, -1)
        out = []
        for a, b in self._chunks(B * S):
            last = self._rollout_rows(ctx[a:b], act_emb[a:b], keep_all=False)[-1]
            out.append((last - goal[a:b]).pow(2).sum(-1))
        return torch.cat(out, 0).view(B, S)
