"""Cube (spec D.3): OGBench `cube-single`, a UR5e arm with a Robotiq gripper and one cube.

The simulation is OGBench's own `CubeEnv` (package `ogbench`) in its data-collection mode: every
reset draws a random arm pose, cube pose and target pose; the target marker is invisible
(`visualize_info=False`), as in the reference's collection and evaluation. Action: 5-D in [-1, 1],
scaled by OGBench to (dx, dy, dz in +-0.05 m, dyaw +-0.3 rad, gripper); 0.05 s per env step
(25 physics steps of 0.002 s). Like the reference, the gripper is drawn purple.
One deliberate difference from stock OGBench: kinematics are refreshed after every step (see
`step`), so the controller sees the current effector pose rather than one 2 ms physics step
old, and `set_state` followed by the same actions reproduces a trajectory bit for bit.

This class owns the renderer (camera `front_pixels`, 224x224) so that it can render fast on CPU
and close the GL context explicitly. By default it shrinks OGBench's 4096 shadow map to 512 and
turns off 4x multisampling: about 4x faster on llvmpipe, and the frame differs from OGBench's by
about 0.7 grey levels on average (aliased edges). `shadow_size=4096, antialias=True` gives
OGBench's picture.

state = [qpos (21), qvel (20)], the full simulator state. proprio = OGBench's 19-D robot
observation (arm joint positions and velocities, scaled effector position, cos/sin effector yaw,
scaled gripper opening, gripper contact). Success: the cube centre within 0.04 m of the target.
"""
from __future__ import annotations

from lewm_fast.envs.mujoco_gl import select_gl_backend

select_gl_backend()  # must run before mujoco (and ogbench, which imports it) is imported

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from lewm_fast.envs.mujoco_render import (OffscreenRenderer, apply_reset_options, check_render_mode,  # noqa: E402
                                          coarse_render_model, flat_action, set_render_quality)

try:
    from ogbench.manipspace.envs.cube_env import CubeEnv as _OGBenchCubeEnv  # noqa: E402
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError("the Cube env needs OGBench: `pip install -c .ci/constraints.txt ogbench` "
                      f"(see /work/notes/mujoco-install.md); import failed with: {err}") from err

# Render-only mesh clustering grid at <= 128 px: 185 k arm triangles -> 12 k; with the 128 px render the 64 px
# frame costs 21 ms instead of 113 and is 1.1 grey levels from the reference picture (a 224 px render resized:
# 0.3; bench/reports/render-mujoco-cube-64px-cpu.json)
COARSE_MESH_CELL = 0.008
SUCCESS_DISTANCE = 0.04  # m, cube centre to target centre (OGBench `_compute_successes`)
CUBE_QPOS = 14           # the cube's free joint in qpos: after 6 arm and 8 gripper joints (checked at load)
CAMERA = "front_pixels"
_PURPLE = np.array([0.61, 0.28, 0.82])  # OGBench's 'purple', the reference's default arm colour
_GRIPPER_MATERIALS = ("ur5e/robotiq/black", "ur5e/robotiq/pad_gray")
_XYZ_CENTER, _XYZ_SCALE, _GRIPPER_SCALE = np.array([0.425, 0.0, 0.0]), 10.0, 3.0


class CubeEnv(gym.Env):
    """OGBench cube-single behind the lewm_fast env contract (see lewm_fast/envs/__init__.py)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, render_mode: str | None = "rgb_array", resolution: int = 224,
                 shadow_size: int = 512, antialias: bool = False, mesh_cell: float | None = None):
        """`resolution` below 224 renders at twice that and resizes (mujoco_render.render_size_for).
        `mesh_cell` (metres) draws the arm with meshes clustered on that grid, in a render-only copy of
        the model (physics is untouched); default: COARSE_MESH_CELL when resolution <= 128, else 0
        (OGBench's meshes)."""
        check_render_mode(render_mode)
        self.render_mode = render_mode
        self.resolution = int(resolution)
        self._shadow_size = int(shadow_size)
        self._antialias = bool(antialias)
        if mesh_cell is None:
            mesh_cell = COARSE_MESH_CELL if self.resolution <= 128 else 0.0
        if mesh_cell < 0:
            raise ValueError(f"mesh_cell must be >= 0 metres, got {mesh_cell}")
        self.mesh_cell = float(mesh_cell)
        self._renderer = OffscreenRenderer(self.resolution, CAMERA, share=True)
        # OGBench sizes the offscreen framebuffer from width/height: the render size, not the output
        self.sim = _OGBenchCubeEnv(env_type="single", ob_type="states", mode="data_collection",
                                   visualize_info=False, terminate_at_goal=False,
                                   width=self._renderer.size, height=self._renderer.size)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(5,), dtype=np.float32)
        self._render_model: mujoco.MjModel | None = None   # made on the first frame
        self.episode_index = -1  # counts resets; lets policies notice a new episode
        self.sim.reset(seed=0)  # OGBench compiles the MJCF on its first reset
        self._after_compile()

    def _after_compile(self) -> None:
        model = self.sim.model
        for name in _GRIPPER_MATERIALS:
            model.material(name).rgba[:3] = _PURPLE
        set_render_quality(model, self._shadow_size, self._antialias)
        joint = model.joint("object_joint_0")
        self._cube_qpos = int(joint.qposadr[0])
        if self._cube_qpos != CUBE_QPOS:   # eval.goal_distance and probe.py read the state at CUBE_QPOS
            raise RuntimeError(f"cube joint at qpos {self._cube_qpos}, expected {CUBE_QPOS}: scene changed")
        self._target_mocap = int(model.body("object_target_0").mocapid[0])
        nq, nv = model.nq, model.nv
        vec = gym.spaces.Box(-np.inf, np.inf, shape=(nq + nv,), dtype=np.float64)
        proprio = gym.spaces.Box(-np.inf, np.inf, shape=(19,), dtype=np.float64)
        self.observation_space = gym.spaces.Dict({"state": vec, "proprio": proprio})

    # -- simulation -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # OGBench seeds its own generator from `seed`; draw one from ours so that seed=None
        # continues a seeded sequence deterministically.
        sim_seed = int(self.np_random.integers(2**31 - 1))
        self.sim.reset(seed=sim_seed)
        self.episode_index += 1
        apply_reset_options(self, options)
        return self._obs(), self._info()

    def step(self, action):
        action = flat_action(action, 5, "Cube")
        self.sim.step(np.clip(action, -1.0, 1.0))
        # mj_step leaves positions of sites (the effector) one physics step behind qpos, and
        # OGBench's controller reads them on the next step. Refreshing them makes the next action
        # a function of (qpos, qvel) alone, so set_state() continues a trajectory exactly.
        mujoco.mj_forward(self.sim.model, self.sim.data)
        return self._obs(), 0.0, False, False, self._info()

    @property
    def arm_sampling_bounds(self) -> np.ndarray:
        """(2, 3) low/high corners of the box OGBench draws effector poses from."""
        return np.asarray(self.sim._arm_sampling_bounds)

    def set_new_target(self) -> None:
        """Draw a new random target for the cube (the oracle calls this when a task is done)."""
        self.sim.set_new_target(return_info=False)

    # -- state and goal ---------------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        data = self.sim.data
        return np.concatenate([data.qpos, data.qvel]).astype(np.float64)

    def set_state(self, state) -> None:
        model, data = self.sim.model, self.sim.data
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape != (model.nq + model.nv,):
            raise ValueError(f"Cube state is [qpos({model.nq}), qvel({model.nv})], "
                             f"got shape {state.shape}")
        data.qpos[:] = state[:model.nq]
        data.qvel[:] = state[model.nq:]
        mujoco.mj_forward(model, data)

    def cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Cube position (3) and quaternion wxyz (4)."""
        qpos = self.sim.data.qpos[self._cube_qpos:self._cube_qpos + 7]
        return qpos[:3].copy(), qpos[3:].copy()

    def target_pose(self) -> tuple[np.ndarray, np.ndarray]:
        data = self.sim.data
        return data.mocap_pos[self._target_mocap].copy(), data.mocap_quat[self._target_mocap].copy()

    def set_target_pose(self, pos, quat=None) -> None:
        pos = np.asarray(pos, dtype=np.float64).reshape(-1)
        if pos.shape != (3,):
            raise ValueError(f"target position must have 3 entries, got shape {pos.shape}")
        self.sim.data.mocap_pos[self._target_mocap] = pos
        if quat is not None:
            self.sim.data.mocap_quat[self._target_mocap] = np.asarray(quat, dtype=np.float64)

    def set_goal_state(self, goal_state) -> None:
        """The target becomes the cube pose of `goal_state` (a full state vector)."""
        goal_state = np.asarray(goal_state, dtype=np.float64).reshape(-1)
        if goal_state.shape != self.observation_space["state"].shape:
            raise ValueError(f"goal state must have shape {self.observation_space['state'].shape}, "
                             f"got {goal_state.shape}")
        cube = goal_state[self._cube_qpos:self._cube_qpos + 7]
        self.set_target_pose(cube[:3], cube[3:])

    def is_success(self) -> bool:
        cube_pos, _ = self.cube_pose()
        target_pos, _ = self.target_pose()
        return bool(np.linalg.norm(cube_pos - target_pos) <= SUCCESS_DISTANCE)

    def privileged_info(self) -> dict:
        """OGBench's info dict (effector, gripper, cube and target poses) for scripted policies."""
        return self.sim.compute_ob_info()

    def _proprio(self) -> np.ndarray:
        info = self.privileged_info()
        yaw = info["proprio/effector_yaw"]
        return np.concatenate([info["proprio/joint_pos"], info["proprio/joint_vel"],
                               (info["proprio/effector_pos"] - _XYZ_CENTER) * _XYZ_SCALE,
                               np.cos(yaw), np.sin(yaw),
                               info["proprio/gripper_opening"] * _GRIPPER_SCALE,
                               info["proprio/gripper_contact"]]).astype(np.float64)

    def _obs(self) -> dict:
        return {"state": self.get_state(), "proprio": self._proprio()}

    def _info(self) -> dict:
        cube_pos, _ = self.cube_pose()
        target_pos, _ = self.target_pose()
        return {"success": self.is_success(), "cube_pos": cube_pos, "target_pos": target_pos}

    # -- rendering --------------------------------------------------------------------------
    def render(self) -> np.ndarray:
        if self._render_model is None:
            self._render_model = coarse_render_model(self.sim.model, self.mesh_cell)
        return self._renderer.render(self._render_model, self.sim.data)

    def close(self) -> None:
        self._renderer.close()
