"""Sampling solvers over normalised action blocks (spec C.3): CEM, iCEM, MPPI, batched over B envs.

A solver is a small object with `init(mean0) -> state` and `step(state, cost_fn, generator) -> state`
(one iteration) and `result(state) -> (plan (B, T, A), cost (B,))`. Everything is device tensor ops
with fixed shapes and no host syncs, so the iterations can be captured in one CUDA graph.

`generator` is a list of B per-environment generators (noise.py: row b is drawn from stream b
alone, so an environment's plan does not depend on B or on its row) or one torch.Generator for the
whole (B, ...) draw. Per environment the draws match the reference's solvers call for call (same
`torch.randn` sizes, order, dtype, device), so with one environment and the same seed the
candidates are identical.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .noise import randn


def _gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, S, T, A), idx (B, K) -> (B, K, T, A)."""
    B, K = idx.shape
    return torch.gather(x, 1, idx.view(B, K, 1, 1).expand(B, K, *x.shape[2:]))


@dataclass
class CEM:
    """Cross-entropy method: Gaussian per block and dim; elites' mean and (unbiased) std; returns the mean."""
    num_samples: int = 300
    iterations: int = 30
    topk: int = 30
    var_scale: float = 1.0
    refits_std = True          # class constant (no annotation: not a dataclass field)

    def __post_init__(self):
        low = 2 if self.refits_std else 1     # the unbiased std of a single elite is NaN
        if not low <= self.topk <= self.num_samples:
            raise ValueError(f"topk must be in [{low}, num_samples={self.num_samples}], got {self.topk}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")

    def init(self, mean0: torch.Tensor) -> dict:
        return {"mean": mean0.clone(), "std": torch.full_like(mean0, float(self.var_scale)),
                "cost": mean0.new_zeros(mean0.shape[0])}

    def sample(self, state, generator):
        mean, std = state["mean"], state["std"]
        B, T, A = mean.shape
        noise = randn(generator, (B, self.num_samples, T, A), mean.device, mean.dtype)
        cand = noise * std.unsqueeze(1) + mean.unsqueeze(1)
        cand[:, 0] = mean          # the current mean is always evaluated
        return cand

    def _elites(self, state, cost_fn, generator):
        """One draw of candidates -> (the topk lowest costs (B, K), their candidates (B, K, T, A)), best first."""
        cand = self.sample(state, generator)
        vals, idx = torch.topk(cost_fn(cand), self.topk, dim=1, largest=False)
        return vals, _gather_rows(cand, idx)

    def step(self, state, cost_fn, generator):
        vals, elites = self._elites(state, cost_fn, generator)
        return {"mean": elites.mean(1), "std": elites.std(1), "cost": vals.mean(1)}

    def result(self, state):
        return state["mean"], state["cost"]


@dataclass
class ICEM(CEM):
    """iCEM (Pinneri et al. 2020) as the reference: coloured noise (power-law exponent noise_beta over the
    horizon), the first n_elite_keep elites of the previous iteration re-injected, momentum alpha on
    mean and std, optional clamp to [action_low, action_high] (normalised units, per action dim)."""
    noise_beta: float = 2.0
    alpha: float = 0.1
    n_elite_keep: int = 5
    return_mean: bool = True
    action_low: torch.Tensor | None = None
    action_high: torch.Tensor | None = None

    def init(self, mean0):
        state = super().init(mean0)
        state["elites"] = None
        state["best"] = mean0.clone()
        return state

    def _noise(self, B, T, A, generator, device, dtype):
        white = randn(generator, (B, self.num_samples, A, T), device, dtype)
        if T <= 1:
            return white.transpose(-1, -2)
        freqs = torch.fft.rfftfreq(T, device=device).to(dtype)
        freqs[0] = 1.0
        scale = freqs.pow(-self.noise_beta / 2)
        scale[0] = scale[1]
        coloured = torch.fft.irfft(torch.fft.rfft(white, dim=-1) * scale, n=T, dim=-1)
        coloured = coloured / coloured.std(dim=-1, keepdim=True).clamp(min=1e-8)
        return coloured.transpose(-1, -2)

    def sample(self, state, generator):
        mean, std = state["mean"], state["std"]
        B, T, A = mean.shape
        cand = self._noise(B, T, A, generator, mean.device, mean.dtype) * std.unsqueeze(1) + mean.unsqueeze(1)
        cand[:, 0] = mean
        if state["elites"] is not None:
            n = min(self.n_elite_keep, state["elites"].shape[1], self.num_samples - 1)
            cand[:, 1:1 + n] = state["elites"][:, :n]
        if self.action_low is not None or self.action_high is not None:
            low = None if self.action_low is None else torch.as_tensor(self.action_low).to(cand)
            high = None if self.action_high is None else torch.as_tensor(self.action_high).to(cand)
            cand = cand.clamp(low, high)
        return cand

    def step(self, state, cost_fn, generator):
        vals, elites = self._elites(state, cost_fn, generator)
        a = self.alpha
        return {"mean": a * state["mean"] + (1 - a) * elites.mean(1),
                "std": a * state["std"] + (1 - a) * elites.std(1),
                "cost": vals.mean(1), "elites": elites, "best": elites[:, 0]}

    def result(self, state):
        return (state["mean"] if self.return_mean else state["best"]), state["cost"]


@dataclass
class MPPI(CEM):
    """MPPI as the reference: fixed std; new mean = softmax(-(cost - min) / temperature)-weighted sum
    of the topk lowest-cost candidates (all candidates when topk == num_samples)."""
    temperature: float = 0.5
    refits_std = False

    def step(self, state, cost_fn, generator):
        cand = self.sample(state, generator)   # CEM's Gaussian draw, the current mean first
        costs = cost_fn(cand)
        if self.topk < self.num_samples:
            costs, idx = torch.topk(costs, self.topk, dim=1, largest=False)
            cand = _gather_rows(cand, idx)
        w = torch.softmax(-(costs - costs.min(1, keepdim=True).values) / self.temperature, dim=1)
        return {"mean": (w[:, :, None, None] * cand).sum(1), "std": state["std"], "cost": costs.mean(1)}


SOLVERS = {"cem": CEM, "icem": ICEM, "mppi": MPPI}


def run_solve(engine, solver, ctx_emb, goal_emb, action_history, mean0, generator):
    """All iterations of one batched solve; returns (plan (B, T, A), cost (B,)). No host syncs: the
    same function runs eagerly and inside a captured CUDA graph (graph.py)."""
    def cost_fn(cand):
        return engine.costs(ctx_emb, goal_emb, cand, action_history)

    state = solver.init(mean0)
    for _ in range(solver.iterations):
        state = solver.step(state, cost_fn, generator)
    return solver.result(state)


def make_solver(name: str, **kwargs):
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name](**kwargs)
