"""Cube data policy (spec D.3): a scripted pick-and-place oracle with per-episode action noise.

The same kind of closed-loop ("Markov") oracle as OGBench's `CubeMarkovOracle`, used by the
reference's collection script with its defaults: it reads privileged state (effector, cube and
target poses), moves above the cube, descends, grasps, lifts, carries it above the target, lowers
it, releases it and retreats to a random final pose. Then the env draws a new target and it starts
again, so a long episode holds several pick-and-place tasks. Gaussian noise with standard deviation
xi * (1, 1, 1, 3, 10) is added, with xi ~ U(0, 0.1) drawn once per episode.

Written here (not imported from OGBench) so that all randomness comes from one seeded generator:
OGBench's oracle draws its final pose from the global `np.random`.
"""
from __future__ import annotations

import numpy as np

MAX_NOISE = 0.1  # the reference ExpertPolicy's `action_noise`
NOISE_SCALE = np.array([1.0, 1.0, 1.0, 3.0, 10.0])  # per action dim: xyz, yaw, gripper
MIN_NORM = 0.4  # small position errors are scaled up to this norm so the arm never crawls
GAIN_POS, GAIN_YAW = 5.0, 3.0
ABOVE_OFFSET = 0.18  # m above the cube / target when approaching
ABOVE_HEIGHT = 0.16  # m: effector counts as "in the air" above this
MAX_TASK_STEPS = 200  # give up on a task after this many steps and draw a new target
OPEN, CLOSE = -1.0, 1.0


def _toward(delta: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(delta)
    return delta if norm >= MIN_NORM else delta / (norm + 1e-6) * MIN_NORM


def _nearest_symmetric_yaw(reference_yaw: float, cube_yaw: float) -> float:
    """The cube looks the same every 90 degrees: pick its yaw copy closest to `reference_yaw`."""
    copies = cube_yaw + np.arange(-4, 5) * (np.pi / 2)
    return float(copies[np.argmin(np.abs(reference_yaw - copies))])


class CubeOracle:
    def __init__(self, env, seed: int | None = None):
        self.env = env
        self.rng = np.random.default_rng(seed)
        self._episode = None
        self.noise_level = 0.0

    def reset(self, obs=None, info=None) -> None:
        """Start a new episode (call after env.reset): new noise level and a new task.

        `act` also notices a new episode by itself, through `env.episode_index`."""
        self.noise_level = float(self.rng.uniform(0.0, MAX_NOISE))
        self._episode = self.env.episode_index
        self._start_task()

    def _start_task(self) -> None:
        low, high = self.env.arm_sampling_bounds
        self.final_pos = self.rng.uniform(low, high)
        self.final_yaw = float(self.rng.uniform(-np.pi, np.pi))
        self.task_steps = 0
        self.task_done = False

    def clean_action(self, info: dict) -> np.ndarray:
        """The noiseless oracle action for OGBench's privileged info dict."""
        eff = info["proprio/effector_pos"]
        eff_yaw = float(info["proprio/effector_yaw"][0])
        contact = float(info["proprio/gripper_contact"][0])
        cube = info["privileged/block_0_pos"]
        cube_yaw = _nearest_symmetric_yaw(eff_yaw, float(info["privileged/block_0_yaw"][0]))
        target = info["privileged/target_block_pos"]
        target_yaw = _nearest_symmetric_yaw(eff_yaw, float(info["privileged/target_block_yaw"][0]))

        above = eff[2] > ABOVE_HEIGHT
        over_cube = np.linalg.norm(cube[:2] - eff[:2]) <= 0.04
        at_cube = np.linalg.norm(cube - eff) <= 0.02
        cube_over_target = np.linalg.norm(target[:2] - cube[:2]) <= 0.04
        cube_at_target = np.linalg.norm(target - cube) <= 0.02
        lift = np.array([0.0, 0.0, ABOVE_OFFSET])

        carry_yaw = target_yaw - cube_yaw  # turn the held cube toward the target's yaw
        if not cube_at_target:
            if not over_cube:  # fly above the cube, gripper open
                goal, yaw_error, grip = cube + lift, cube_yaw - eff_yaw, OPEN
            elif not at_cube:  # descend onto it
                goal, yaw_error, grip = cube, cube_yaw - eff_yaw, OPEN
            elif contact <= 0.5:  # grasp
                goal, yaw_error, grip = cube, cube_yaw - eff_yaw, CLOSE
            elif not above and not cube_over_target:  # lift straight up
                goal = np.array([cube[0], cube[1], 2 * ABOVE_OFFSET])
                yaw_error, grip = carry_yaw, CLOSE
            elif not cube_over_target:  # carry above the target
                goal, yaw_error, grip = target + lift, carry_yaw, CLOSE
            else:  # lower onto the target
                goal, yaw_error, grip = target, carry_yaw, CLOSE
        elif contact >= 0.1:  # release
            goal, yaw_error, grip = target, carry_yaw, OPEN
        elif not above:  # back up into the air
            goal = np.array([cube[0], cube[1], 2 * ABOVE_HEIGHT])
            yaw_error, grip = self.final_yaw - eff_yaw, OPEN
        else:  # retreat to the final pose; the task is done once there
            goal, yaw_error, grip = self.final_pos, self.final_yaw - eff_yaw, OPEN
        if cube_at_target and np.linalg.norm(self.final_pos - eff) <= 0.04:
            self.task_done = True

        action = np.zeros(5)
        action[:3] = _toward(goal - eff) * GAIN_POS
        action[3] = yaw_error * GAIN_YAW
        action[4] = grip
        return np.clip(action, -1.0, 1.0)

    def act(self, obs=None, info=None) -> np.ndarray:
        """Noisy oracle action; `obs`/`info` are unused: the oracle reads the simulator directly."""
        if self._episode != self.env.episode_index:
            self.reset()
        action = self.clean_action(self.env.privileged_info())
        action = action + self.rng.normal(0.0, self.noise_level * NOISE_SCALE)
        self.task_steps += 1
        if self.task_done or self.task_steps >= MAX_TASK_STEPS:
            self.env.set_new_target()  # the next call chases the new target
            self._start_task()
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    __call__ = act


def make(env, seed: int | None = None) -> CubeOracle:
    return CubeOracle(env, seed)
