"""What the MuJoCo envs (Cube, Reacher) share: render settings, an offscreen renderer made on first use,
and the reset/step plumbing of the env contract around them (lewm_fast/envs/__init__.py).
"""
from __future__ import annotations

from lewm_fast.envs.mujoco_gl import select_gl_backend

select_gl_backend()  # must run before mujoco is imported

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402


def check_render_mode(render_mode: str | None) -> None:
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")


def set_render_quality(model: mujoco.MjModel, shadow_size: int, antialias: bool) -> None:
    """Shadow-map size and multisampling: the two settings that dominate render time on llvmpipe."""
    model.vis.quality.shadowsize = int(shadow_size)
    model.vis.quality.offsamples = 4 if antialias else 0


class OffscreenRenderer:
    """A square mujoco.Renderer on one camera, made on the first frame (so that an env used for physics
    only never opens a GL context) and closed by the env's close()."""

    def __init__(self, size: int, camera: str | int):
        self.size, self.camera = int(size), camera
        self._renderer: mujoco.Renderer | None = None

    def render(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(model, self.size, self.size)
        self._renderer.update_scene(data, camera=self.camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def apply_reset_options(env: gym.Env, options: dict | None) -> None:
    """reset()'s optional `state` and `goal_state`, applied after the random draw."""
    options = options or {}
    if options.get("state") is not None:
        env.set_state(options["state"])
    if options.get("goal_state") is not None:
        env.set_goal_state(options["goal_state"])


def flat_action(action, size: int, env_name: str) -> np.ndarray:
    """The action as a float64 vector of `size` entries (not yet clipped); a clear error otherwise."""
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape != (size,):
        raise ValueError(f"{env_name} action must have {size} entries, got shape {action.shape}")
    return action
