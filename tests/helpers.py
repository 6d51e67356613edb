"""Small builders shared by tests: randomised tiny models and synthetic episode files."""
from __future__ import annotations

import numpy as np
import torch

from lewm_fast.data import HDF5Writer
from lewm_fast.model import LeWM, LeWMConfig


def random_model(cfg: LeWMConfig | None = None, seed: int = 0, scale: float = 0.1) -> LeWM:
    """A LeWM whose every parameter and BatchNorm statistic is random (AdaLN gates non-zero), eval mode."""
    torch.manual_seed(seed)
    m = LeWM(cfg or LeWMConfig.tiny())
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, scale)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def moving_square_episode(rng: np.random.Generator, length: int = 40, size: int = 32) -> dict:
    """An episode whose frames are a square moved by the actions: learnable, non-trivial dynamics."""
    pos = rng.uniform(8, size - 8, 2)
    px, acts, states = [], [], []
    for _ in range(length):
        img = np.zeros((size, size, 3), np.uint8)
        img[..., 2] = 40
        x, y = pos.astype(int)
        img[max(0, y - 3):y + 3, max(0, x - 3):x + 3] = (255, 200, 50)
        a = rng.uniform(-1, 1, 2)
        px.append(img)
        acts.append(a)
        states.append(pos.copy())
        pos = np.clip(pos + 1.5 * a, 4, size - 4)
    acts = np.asarray(acts, np.float32)
    acts[-1] = np.nan
    return {"pixels": np.stack(px), "action": acts, "state": np.asarray(states)}


def write_synthetic(path, n_episodes: int = 12, length: int = 40, size: int = 32, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    with HDF5Writer(path, metadata={"env": "synthetic"}) as w:
        for _ in range(n_episodes):
            w.write_episode(moving_square_episode(rng, length, size))
    return str(path)
