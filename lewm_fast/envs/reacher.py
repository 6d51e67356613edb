"""Reacher (spec D.4): dm_control's two-link planar reacher, task `qpos_match`, on plain MuJoCo.

The MJCF below is the suite's `reacher.xml` with its `common/` includes written out, so this env
needs `mujoco` only (no dm_control, whose exact-version pins are fragile). Dynamics are those of the
suite: physics step 0.02 s, contacts off, motor gear 0.05. As in the reference wrapper one env step
repeats the action for 2 physics steps, and the target sphere is invisible (its colour has alpha 0):
the goal is a joint configuration, not a point.

state = proprio = [shoulder, wrist, shoulder velocity, wrist velocity] (float64).
Success (qpos_match): every joint within 0.05 rad of the goal qpos. Like the reference, the angle
difference is not wrapped: the shoulder is unlimited and a goal one full turn away does not count.
"""
from __future__ import annotations

from lewm_fast.envs.mujoco_gl import select_gl_backend

select_gl_backend()  # must run before mujoco is imported

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from lewm_fast.envs.mujoco_render import (OffscreenRenderer, apply_reset_options, check_render_mode,  # noqa: E402
                                          flat_action, set_render_quality)

QPOS_THRESHOLD = 0.05  # rad, per joint (reference `ReacherQPosMatchTask`)
ACTION_REPEAT = 2  # physics steps per env step (reference `DMControlWrapper.action_repeat`)
_TARGET_SIZE = 0.015  # qpos_match uses the "hard" target size

REACHER_XML = """
<mujoco model="two-link planar reacher">
  <visual>
    <headlight ambient=".4 .4 .4" diffuse=".8 .8 .8" specular="0.1 0.1 0.1"/>
    <map znear=".01"/>
    <quality shadowsize="2048"/>
  </visual>
  <asset>
    <texture name="skybox" type="skybox" builtin="gradient" rgb1=".4 .6 .8" rgb2="0 0 0"
             width="800" height="800" mark="random" markrgb="1 1 1"/>
    <texture name="grid" type="2d" builtin="checker" rgb1=".1 .2 .3" rgb2=".2 .3 .4"
             width="300" height="300" mark="edge" markrgb=".2 .3 .4"/>
    <material name="grid" texture="grid" texrepeat="1 1" texuniform="true" reflectance=".2"/>
    <material name="self" rgba=".7 .5 .3 1"/>
    <material name="effector" rgba=".7 .4 .2 1"/>
    <material name="decoration" rgba=".3 .5 .7 1"/>
    <material name="target" rgba=".6 .3 .3 0"/>
  </asset>
  <option timestep="0.02">
    <flag contact="disable"/>
  </option>
  <default>
    <joint type="hinge" axis="0 0 1" damping="0.01"/>
    <motor gear=".05" ctrlrange="-1 1" ctrllimited="true"/>
  </default>
  <worldbody>
    <light name="light" pos="0 0 1"/>
    <camera name="fixed" pos="0 0 .75" quat="1 0 0 0"/>
    <geom name="ground" type="plane" pos="0 0 0" size=".3 .3 10" material="grid"/>
    <geom name="wall_x" type="plane" pos="-.3 0 .02" zaxis="1 0 0"
          size=".02 .3 .02" material="decoration"/>
    <geom name="wall_y" type="plane" pos="0 -.3 .02" zaxis="0 1 0"
          size=".3 .02 .02" material="decoration"/>
    <geom name="wall_neg_x" type="plane" pos=".3 0 .02" zaxis="-1 0 0"
          size=".02 .3 .02" material="decoration"/>
    <geom name="wall_neg_y" type="plane" pos="0 .3 .02" zaxis="0 -1 0"
          size=".3 .02 .02" material="decoration"/>
    <geom name="root" type="cylinder" fromto="0 0 0 0 0 0.02" size=".011" material="decoration"/>
    <body name="arm" pos="0 0 .01">
      <geom name="arm" type="capsule" fromto="0 0 0 0.12 0 0" size=".01" material="self"/>
      <joint name="shoulder"/>
      <body name="hand" pos=".12 0 0">
        <geom name="hand" type="capsule" fromto="0 0 0 0.1 0 0" size=".01" material="self"/>
        <joint name="wrist" limited="true" range="-160 160"/>
        <body name="finger" pos=".12 0 0">
          <camera name="hand" pos="0 0 .2" mode="track"/>
          <geom name="finger" type="sphere" size=".01" material="effector"/>
        </body>
      </body>
    </body>
    <geom name="target" pos="0 0 .01" material="target" type="sphere" size="%(target_size)s"/>
  </worldbody>
  <actuator>
    <motor name="shoulder" joint="shoulder"/>
    <motor name="wrist" joint="wrist"/>
  </actuator>
</mujoco>
""" % {"target_size": _TARGET_SIZE}


class ReacherEnv(gym.Env):
    """Two-link reacher; action = the two motor torques in [-1, 1]; render 224x224 (or `resolution`) from camera 0."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}

    def __init__(self, render_mode: str | None = "rgb_array", resolution: int = 224,
                 shadow_size: int = 512, antialias: bool = False):
        """Rendering defaults trade invisible detail for speed on CPU (llvmpipe): a 512 shadow map
        instead of the suite's 2048 and no 4x multisampling; the frame differs from the suite's
        by about 0.25 grey levels on average (edges only). `shadow_size=2048, antialias=True`
        gives the reference picture at about 4x the cost. `resolution` below 224 renders at twice
        that (mujoco_render.render_size_for) and resizes, for models that take small frames."""
        check_render_mode(render_mode)
        self.render_mode = render_mode
        self.resolution = int(resolution)
        self.model = mujoco.MjModel.from_xml_string(REACHER_XML)
        set_render_quality(self.model, shadow_size, antialias)
        self.data = mujoco.MjData(self.model)
        self._wrist_range = self.model.jnt_range[self.model.joint("wrist").id].copy()
        self._target_geom = self.model.geom("target").id
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        vec = gym.spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float64)
        self.observation_space = gym.spaces.Dict({"state": vec, "proprio": vec})
        self.target_qpos = np.zeros(2)
        self._renderer = OffscreenRenderer(self.resolution, camera=0)

    # -- simulation -------------------------------------------------------------------------
    def _random_qpos(self) -> np.ndarray:
        # As dm_control's randomize_limited_and_rotational_joints: unlimited hinge in [-pi, pi),
        # limited hinge uniform in its range.
        return np.array([self.np_random.uniform(-np.pi, np.pi),
                         self.np_random.uniform(*self._wrist_range)])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = self._random_qpos()
        # The suite's random target point; invisible and unused by qpos_match, kept for parity.
        angle, radius = self.np_random.uniform(0, 2 * np.pi), self.np_random.uniform(0.05, 0.20)
        self.model.geom_pos[self._target_geom, :2] = radius * np.sin(angle), radius * np.cos(angle)
        self.target_qpos = self._random_qpos()
        mujoco.mj_forward(self.model, self.data)
        apply_reset_options(self, options)
        return self._obs(), self._info()

    def step(self, action):
        action = flat_action(action, 2, "Reacher")
        self.data.ctrl[:] = np.clip(action, -1.0, 1.0)
        mujoco.mj_step(self.model, self.data, nstep=ACTION_REPEAT)
        # mj_step leaves body poses (what the renderer draws) one physics step behind qpos;
        # dm_control's physics keeps them current, so the frame shows the state we return.
        mujoco.mj_forward(self.model, self.data)
        return self._obs(), 0.0, False, False, self._info()

    # -- state and goal ---------------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float64)

    def set_state(self, state) -> None:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape != (4,):
            raise ValueError(f"Reacher state is [qpos(2), qvel(2)], got shape {state.shape}")
        self.data.qpos[:] = state[:2]
        self.data.qvel[:] = state[2:]
        mujoco.mj_forward(self.model, self.data)

    def set_target_qpos(self, target_qpos) -> None:
        target_qpos = np.asarray(target_qpos, dtype=np.float64).reshape(-1)
        if target_qpos.shape != (2,):
            raise ValueError(f"target qpos must have 2 entries, got shape {target_qpos.shape}")
        self.target_qpos = target_qpos.copy()

    def set_goal_state(self, goal_state) -> None:
        """The goal is the joint configuration of `goal_state` (its velocities are ignored)."""
        self.set_target_qpos(np.asarray(goal_state, dtype=np.float64).reshape(-1)[:2])

    def is_success(self) -> bool:
        return bool(np.all(np.abs(self.data.qpos - self.target_qpos) < QPOS_THRESHOLD))

    def _obs(self) -> dict:
        state = self.get_state()
        return {"state": state, "proprio": state.copy()}

    def _info(self) -> dict:
        return {"success": self.is_success(), "qpos": self.data.qpos.copy(),
                "target_qpos": self.target_qpos.copy()}

    # -- rendering --------------------------------------------------------------------------
    def render(self) -> np.ndarray:
        return self._renderer.render(self.model, self.data)

    def close(self) -> None:
        self._renderer.close()
