"""Whole-solve CUDA graphs: every iteration (sampling, rollout, cost, top-k, refit) captured once per shape.

A replay is one launch from the host: no Python per kernel and zero host syncs inside a solve. The
solve function captured is the same `run_solve` the eager backend executes, so the two compute the
same thing; only the launch mechanism differs.

Randomness: the solver draws from per-environment CUDA generators (noise.py). Each is registered
with the graph (`CUDAGraph.register_generator_state`, torch >= 2.5), so each replay reads every
generator's current philox seed/offset and then advances it by what the solve consumed, exactly like
an eager solve would: replays draw fresh, reproducible noise. Warm-up draws are undone by restoring
the generators' states afterwards. A graph is cached per (shapes, generators): the same environment
ids replay, other ids capture their own.
"""
from __future__ import annotations

import torch

from .solvers import run_solve


class GraphSolveRunner:
    """Caches one captured CUDA graph per (B, H, T, A, history?) shape and replays it."""

    def __init__(self, engine, solver, warmup: int = 1):
        if not torch.cuda.is_available():
            raise RuntimeError("backend='graph' needs a CUDA GPU (CUDA graphs); use backend='eager' on CPU")
        if not hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
            raise RuntimeError("backend='graph' needs torch >= 2.5 (CUDAGraph.register_generator_state) "
                               "to draw from a user generator inside a graph")
        self.engine, self.solver, self.warmup = engine, solver, warmup
        self._graphs: dict[tuple, tuple] = {}

    def _capture(self, ctx_emb, goal_emb, action_history, mean0, generators):
        static_in = [t.clone() if t is not None else None for t in (ctx_emb, goal_emb, action_history, mean0)]

        def run():
            return run_solve(self.engine, self.solver, *static_in, generators)

        rng = [g.get_state() for g in generators]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):   # warm-up off the default stream: cuBLAS/cuFFT workspaces, allocator
            for _ in range(self.warmup):
                run()
        torch.cuda.current_stream().wait_stream(side)
        for g, state in zip(generators, rng):
            g.set_state(state)          # the warm-up's draws must not shift the environments' streams
        graph = torch.cuda.CUDAGraph()
        for g in generators:
            graph.register_generator_state(g)
        with torch.cuda.graph(graph):
            static_out = run()
        return graph, static_in, static_out

    def solve(self, ctx_emb, goal_emb, action_history, mean0, generators):
        bad = [g.device for g in generators if g.device.type != "cuda"]
        if bad:
            raise RuntimeError(f"backend='graph' needs CUDA generators, got one on {bad[0]}")
        key = (tuple(ctx_emb.shape), tuple(mean0.shape),
               None if action_history is None else tuple(action_history.shape), tuple(map(id, generators)))
        if key not in self._graphs:
            self._graphs[key] = self._capture(ctx_emb, goal_emb, action_history, mean0, generators)
        graph, static_in, static_out = self._graphs[key]
        for dst, src in zip(static_in, (ctx_emb, goal_emb, action_history, mean0)):
            if dst is not None:
                dst.copy_(src)
        graph.replay()
        return tuple(t.clone() for t in static_out)
