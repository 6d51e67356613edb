"""Batched latent planning: rollout engine, predictor backends, solvers (CEM / iCEM / MPPI), CUDA graph runner.

`lewm_fast.Planner` (lewm_fast/planner.py) is the user-facing entry point; these are its parts.
"""
from .engine import RolloutEngine
from .graph import GraphSolveRunner
from .noise import EnvStreams, env_seed
from .precision import PRECISIONS
from .solvers import CEM, ICEM, MPPI, SOLVERS, make_solver, run_solve

__all__ = ["RolloutEngine", "GraphSolveRunner", "run_solve", "PRECISIONS", "CEM", "ICEM", "MPPI", "SOLVERS",
           "make_solver", "EnvStreams", "env_seed"]
