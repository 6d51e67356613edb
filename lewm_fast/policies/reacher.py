"""Reacher data policy (spec D.4): uniformly random torques, as in the reference's dataset."""
from __future__ import annotations

import numpy as np


class RandomPolicy:
    """i.i.d. uniform actions in the env's action box, from a seeded generator."""

    def __init__(self, action_space, seed: int | None = None):
        self.low = np.asarray(action_space.low, dtype=np.float32)
        self.high = np.asarray(action_space.high, dtype=np.float32)
        self.rng = np.random.default_rng(seed)

    def reset(self, obs=None, info=None) -> None:
        """Nothing to reset: actions are independent of the episode."""

    def act(self, obs=None, info=None) -> np.ndarray:
        return self.rng.uniform(self.low, self.high).astype(np.float32)

    __call__ = act


def make(env, seed: int | None = None) -> RandomPolicy:
    return RandomPolicy(env.action_space, seed)
