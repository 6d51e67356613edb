"""Per-environment random streams: environment i's CEM noise depends only on (seed, i).

One torch.Generator per environment index. Env 0's generator is seeded with `seed` itself, so a
single-environment solve draws exactly what the reference's solver (one generator seeded with
`seed`) draws; env i > 0 gets `env_seed(seed, i)`, a SplitMix64 mix of the pair (distinct streams
for distinct i, no arithmetic relation between neighbouring seeds). Each stream advances only
when its environment is planned, so

    plan(frames[0:50])[i] == plan(frames[i:i+1], env_ids=[i])     (fresh planners, same seed)

whatever B and whichever row: an environment's plan no longer depends on its neighbours (two
identical frames under different ids still get different, independent draws). Draws go straight into slices of one tensor
(`randn(out=)`), one kernel per environment: on CUDA every generator is registered with the
captured graph (graph.py), so replays draw fresh noise from each stream exactly as eager solves do.
"""
from __future__ import annotations

import torch

_MASK = (1 << 64) - 1


def env_seed(seed: int, env: int) -> int:
    """The seed of environment `env`'s stream: `seed` for env 0 (reference parity), else a SplitMix64
    hash of (seed, env) folded into torch's seed range [0, 2**63)."""
    if env == 0:
        return int(seed)
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(env) * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) >> 1


class EnvStreams:
    """Lazily created per-environment generators on one device."""

    def __init__(self, seed: int, device, first: torch.Generator | None = None):
        self.device = torch.device(device)
        self._first = first          # a user generator serving as env 0's stream (the old generator= API)
        self.manual_seed(seed)

    def manual_seed(self, seed: int) -> "EnvStreams":
        """Restart every environment's stream from `seed` (what reseeding one generator used to do).
        Existing generators are reseeded in place: a captured CUDA graph keeps reading the same objects."""
        self.seed = int(seed)
        if not hasattr(self, "_gens"):
            self._gens: dict[int, torch.Generator] = {} if self._first is None else {0: self._first}
        for i, g in self._gens.items():
            g.manual_seed(env_seed(self.seed, i))
        return self

    def generators(self, env_ids) -> list[torch.Generator]:
        out = []
        for i in env_ids:
            i = int(i)
            if i < 0:
                raise ValueError(f"environment ids must be >= 0, got {i}")
            if i not in self._gens:
                self._gens[i] = torch.Generator(device=self.device).manual_seed(env_seed(self.seed, i))
            out.append(self._gens[i])
        return out


def randn(generators, shape, device, dtype) -> torch.Tensor:
    """(len(generators), *shape) standard normals, row b drawn from generators[b] alone.

    A single generator (not a list) draws the whole tensor at once: the layout the reference uses,
    identical to the per-row draw when there is one row."""
    if isinstance(generators, torch.Generator):
        return torch.randn(shape, generator=generators, device=device, dtype=dtype)
    if len(generators) != shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {shape[0]}")
    out = torch.empty(tuple(shape), device=device, dtype=dtype)
    for row, g in zip(out, generators):
        torch.randn(tuple(shape[1:]), generator=g, device=device, dtype=dtype, out=row)
    return out
