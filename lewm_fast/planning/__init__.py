"""Batched latent planning: rollout engine, predictor backends, solvers (CEM / iCEM / MPPI), CUDA graph runner.

`lewm_fast.Planner` (lewm_fast/planner.py) is the user-facing entry point; these are its parts.
"""
from .engine import RolloutEngine
from .graph import GraphSolveRunner, run_solve
from .precision import PRECISIONS
from .solvers import CEM, ICEM, MPPI, SOLVERS, make_solver

__all__ = ["RolloutEngine", "GraphSolveRunner", "run_solve", "PRECISIONS", "CEM", "ICEM", "MPPI", "SOLVERS",
           "make_solver"]
