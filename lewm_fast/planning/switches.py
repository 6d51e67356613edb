"""The planner's two execution switches and the legacy backend names that alias them.

- kernels: "torch" (the predictor in plain PyTorch, any device) | "triton" (the fused kernels of
  `lewm_fast.kernels`: CUDA, or the CPU interpreter when TRITON_INTERPRET=1 was set before import);
- cuda_graph: True | False: capture the whole solve once per shape and replay it (CUDA only).

Old `backend=` names: "eager" = (torch, off), "triton" = (triton, off), "graph" = (triton, on);
"auto" = (triton if it can run on this device else torch, on if CUDA). Asking for what cannot run
raises with the reason (never a silent fallback); `describe` names what actually runs, for reports.
"""
from __future__ import annotations

import os
import sys

import torch

KERNELS = ("auto", "torch", "triton")
BACKENDS = ("auto", "eager", "triton", "graph")
_ALIASES = {"eager": ("torch", False), "triton": ("triton", False), "graph": ("triton", True)}


def kernels_status(device=None) -> tuple[bool, str]:
    """(can the Triton predictor run on `device`, why not / where from)."""
    from .backends import triton_kernels

    try:
        triton_kernels()
    except Exception as e:  # ImportError without Triton; RuntimeError when Triton cannot initialise
        return False, f"the kernels TritonPredictor calls cannot be imported: {type(e).__name__}: {e}"
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cpu":
        from lewm_fast.kernels._common import interpreting
        if not interpreting():
            return False, ("the Triton kernels need a CUDA GPU, or TRITON_INTERPRET=1 set before "
                           "lewm_fast.kernels is imported (CPU interpreter: slow, for tests)")
    elif dev is not None and dev.type != "cuda":
        return False, f"the Triton kernels run on CUDA (or the CPU interpreter), not on {dev}"
    return True, f"lewm_fast.kernels from {os.path.dirname(sys.modules['lewm_fast.kernels'].__file__)}"


def resolve(backend: str, kernels: str, cuda_graph, device: torch.device) -> tuple[str, bool]:
    """-> (kernels, cuda_graph) to run with; raises ValueError (bad names, conflicts) or RuntimeError
    (a request this machine cannot run, with the reason)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
    if cuda_graph not in ("auto", True, False, "on", "off"):
        raise ValueError(f"cuda_graph must be True / False ('on' / 'off') or 'auto', got {cuda_graph!r}")
    graph = {"on": True, "off": False}.get(cuda_graph, cuda_graph)
    if backend != "auto":
        k, g = _ALIASES[backend]
        if kernels not in ("auto", k) or graph not in ("auto", g):
            raise ValueError(f"backend={backend!r} means kernels={k!r}, cuda_graph={g}; it conflicts with "
                             f"kernels={kernels!r}, cuda_graph={graph!r} (pass one or the other)")
        kernels, graph = k, g
    cuda = device.type == "cuda"
    if kernels == "auto":
        # the interpreter can run the kernels on CPU but far slower than torch: auto picks triton on CUDA only
        kernels = "triton" if cuda and kernels_status(device)[0] else "torch"
    elif kernels == "triton":
        ok, why = kernels_status(device)
        if not ok:
            raise RuntimeError(f"kernels='triton' cannot run here: {why}; use kernels='torch' (backend='eager')")
    if graph == "auto":
        graph = cuda
    elif graph and not cuda:
        raise RuntimeError(f"cuda_graph=True (backend='graph') replays CUDA graphs and needs a CUDA device, got "
                           f"{device}; use backend='eager' (or 'auto') on CPU")
    return kernels, bool(graph)


def backend_name(kernels: str, cuda_graph: bool) -> str:
    """The legacy name of a (kernels, cuda_graph) pair; torch kernels in a graph have none: 'eager+graph'."""
    for name, pair in _ALIASES.items():
        if pair == (kernels, cuda_graph):
            return name
    return "eager+graph"
