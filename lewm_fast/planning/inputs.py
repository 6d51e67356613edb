"""Validation and layout of what users hand the planner: frames, goals, action histories."""
from __future__ import annotations

import numpy as np
import torch


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    return x


def frames_to_bhchw(x, name: str, image_size: int, frames: int | None) -> torch.Tensor:
    """uint8 or float frames, HWC or CHW, with or without a time axis -> (B, F, 3, h, w).

    uint8 frames are raw pixels (normalised by the model); float frames are taken as already
    ImageNet-normalised (the model's convention). frames=None accepts any number of frames.
    """
    x = _as_tensor(x, name)
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise TypeError(f"{name} must be uint8 pixels or float (ImageNet-normalised) pixels, got {x.dtype}")
    if x.ndim not in (4, 5):
        raise ValueError(f"{name} must be (B, h, w, 3) / (B, 3, h, w) or with a frame axis (B, F, ...), "
                         f"got shape {tuple(x.shape)}")
    if x.shape[-1] == 3 and x.shape[-3] != 3:
        x = x.movedim(-1, -3)        # HWC -> CHW
    elif x.shape[-3] != 3:
        raise ValueError(f"{name} must have 3 colour channels (last or third-to-last axis), got shape "
                         f"{tuple(x.shape)}")
    if x.ndim == 4:
        x = x.unsqueeze(1)
    h, w = x.shape[-2:]
    if (h, w) != (image_size, image_size):
        raise ValueError(f"{name} frames are {h}x{w}; the model takes {image_size}x{image_size} "
                         "(resize before planning)")
    if frames is not None and x.shape[1] != frames:
        raise ValueError(f"{name} has {x.shape[1]} frames per environment; the planner uses history "
                         f"length H={frames} (pass (B, {frames}, h, w, 3) frames)")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def actions_to_blocks(x, name: str, batch: int, blocks: int, frameskip: int, env_action_dim: int,
                      normalise) -> torch.Tensor:
    """Raw env actions (B, blocks*frameskip, env_action_dim) -> normalised blocks (B, blocks, frameskip*dim)."""
    x = _as_tensor(x, name).float()
    want = (batch, blocks * frameskip, env_action_dim)
    if tuple(x.shape) != want:
        raise ValueError(f"{name} must be raw env actions of shape (B, (H-1)*frameskip, env_action_dim) = "
                         f"{want}, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return normalise(x).reshape(batch, blocks, frameskip * env_action_dim)
