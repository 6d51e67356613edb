"""The paper's four environments as gymnasium envs (ids `lewm_fast/<Name>-v0`).

Every env here follows one contract, which collection (`lewm_fast.collect`), evaluation
(`lewm_fast.eval`) and the science tools rely on:

- `render_mode="rgb_array"`; `render()` returns a (224, 224, 3) uint8 frame.
- observations are dicts with at least `state` (float64, the full simulator state used by
  `set_state`) and `proprio` (float64); `info["success"]` (bool) is set by `reset` and `step`.
- `set_state(state)`, `get_state()`, `set_goal_state(goal_state)`; `is_success()` tests the current
  state against the goal (spec C.4).
- `action_space` is a Box in [-1, 1]^env_action_dim.

`make(name, **kwargs)` accepts the short names pusht, tworoom, reacher, cube.
"""
from __future__ import annotations

import gymnasium as gym

ENV_IDS = {
    "pusht": "lewm_fast/PushT-v0",
    "tworoom": "lewm_fast/TwoRoom-v0",
    "reacher": "lewm_fast/Reacher-v0",
    "cube": "lewm_fast/Cube-v0",
}
_ENTRY_POINTS = {
    "pusht": "lewm_fast.envs.pusht:PushTEnv",
    "tworoom": "lewm_fast.envs.tworoom:TwoRoomEnv",
    "reacher": "lewm_fast.envs.reacher:ReacherEnv",
    "cube": "lewm_fast.envs.cube:CubeEnv",
}

for _name, _id in ENV_IDS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_ENTRY_POINTS[_name])


# Envs that make small frames themselves (MuJoCo: render at twice the size and resize, see
# mujoco_render.render_size_for, 3-5x cheaper than a 224 px render resized afterwards). Collection with
# --resolution and evaluation of a model that takes small frames both ask these envs for them, so stored and
# live frames are made the same way; the other envs render 224 px and are resized by collect.fit_frames.
RENDERS_AT_RESOLUTION = ("reacher", "cube")


def resolution_kwargs(name: str, resolution: int | None) -> dict:
    """make() kwargs that give frames of `resolution` px straight from the env, where it can (else {})."""
    if resolution is None or name.lower() not in RENDERS_AT_RESOLUTION:
        return {}
    return {"resolution": int(resolution)}


def make(name: str, **kwargs) -> gym.Env:
    """Create an env by short name (pusht, tworoom, reacher, cube) or full gymnasium id."""
    env_id = ENV_IDS.get(name.lower(), name)
    if env_id not in gym.registry:
        raise ValueError(f"unknown env {name!r}; choose one of {sorted(ENV_IDS)}")
    kwargs.setdefault("render_mode", "rgb_array")
    return gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped
