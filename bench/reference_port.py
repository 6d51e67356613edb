"""A stand-in for the reference planner (stable-worldmodel 0.1.1 `CEMSolver` + its `LeWM`) where the
package cannot be imported (e.g. GPU machines without its dependencies).

It re-implements the reference's *behaviour*, not its code, on a lewm_fast `LeWM` (same maths):
- environments are solved one at a time (the reference's default `batch_size=1`);
- per environment the observation and goal are encoded once (the reference caches both embeddings in
  its info dict after the first iteration);
- a Python loop per iteration with a host sync each time (the reference copies the elite cost to the
  host every iteration);
- every rollout step recomputes the whole (<= num_frames) window through the predictor and applies
  pred_proj to every token of the window (no key/value reuse, no last-token shortcut);
- fp32 (the model's dtype), one `torch.Generator` seeded once at construction and consumed as the
  reference does: one `randn(1, S, T, A)` per iteration, environment after environment, solve after solve.

`tests/test_reference_port.py` proves it returns the package's plans and costs for the same seed.
"""
from __future__ import annotations

import torch


class ReferencePortCEM:
    """CEM as the reference runs it. `solve(pixels, goal)` -> {"actions": (N, T, A) CPU, "costs": [N floats]}.

    pixels, goal: (N, 1, 3, h, w) ImageNet-normalised float frames (the reference's input convention).
    """

    def __init__(self, model, *, horizon: int = 5, num_samples: int = 300, n_steps: int = 30, topk: int = 30,
                 var_scale: float = 1.0, device=None, seed: int = 1234):
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.horizon, self.num_samples, self.n_steps, self.topk = horizon, num_samples, n_steps, topk
        self.var_scale = var_scale
        self.action_dim = model.cfg.action_dim
        self.dtype = next(model.parameters()).dtype
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    # -- the reference LeWM's cost, written out step by step ----------------------------------------
    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(1, 3, h, w) normalised pixels -> (1, D): CLS token of the encoder, then the projector."""
        m = self.model
        return m.projector(m.encoder(frames.to(self.dtype)))

    def _rollout_last(self, emb0: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """emb0 (1, D) context, candidates (1, S, T, A) -> (S, D): embedding predicted after the last block."""
        m = self.model
        S, T = candidates.shape[1], candidates.shape[2]
        act_emb = m.action_encoder(candidates.reshape(S, T, -1))            # (S, T, D)
        frames = [emb0.expand(S, -1)]
        W = m.cfg.num_frames
        H = 1
        for t in range(T):
            lo = max(0, H + t - W)
            window = torch.stack(frames[lo:], dim=1)                          # whole window, every step
            pred = m.pred_proj(m.predictor(window, act_emb[:, lo:H + t]))    # pred_proj on every token
            frames.append(pred[:, -1])
        return frames[-1]

    @torch.inference_mode()
    def solve(self, pixels: torch.Tensor, goal: torch.Tensor) -> dict:
        n_envs = pixels.shape[0]
        T, A, S = self.horizon, self.action_dim, self.num_samples
        mean = torch.zeros(n_envs, T, A, dtype=self.dtype, device=self.device)
        std = torch.full((n_envs, T, A), float(self.var_scale), dtype=self.dtype, device=self.device)
        costs_out = []
        for e in range(n_envs):                       # one environment at a time
            emb0 = self._encode(pixels[e, -1:].to(self.device))
            goal_emb = self._encode(goal[e, -1:].to(self.device))
            m, s = mean[e:e + 1], std[e:e + 1]
            elite_cost = None
            for _ in range(self.n_steps):             # Python loop, host sync per iteration
                cand = torch.randn(1, S, T, A, generator=self.generator, device=self.device, dtype=self.dtype)
                cand = cand * s.unsqueeze(1) + m.unsqueeze(1)
                cand[:, 0] = m
                last = self._rollout_last(emb0, cand)
                cost = (last - goal_emb).pow(2).sum(-1).view(1, S)
                vals, idx = torch.topk(cost, self.topk, dim=1, largest=False)
                elites = cand[0, idx[0]].unsqueeze(0)
                m, s = elites.mean(1), elites.std(1)
                elite_cost = vals.mean(1).cpu().tolist()
            mean[e:e + 1], std[e:e + 1] = m, s
            costs_out.extend(elite_cost)
        return {"actions": mean.cpu(), "costs": costs_out}
