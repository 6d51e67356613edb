"""TwoRoom (spec D.2): a dot navigates between two rooms through one door; no physics engine.

224x224 pixel world. Border walls leave the agent centre in [14 + r, 210 - r] (radius r = 7); a vertical
wall occupies x in [107, 117] except a door centred at y = 49 with half-size 14. Each step moves the
agent by clip(a, -1, 1) * 5 px; a move that ends inside the wall band (widened by the radius) outside the
door is snapped 0.5 px outside the band on the side the agent came from. Success: agent within 16 px of
the target. Positions are float32 like the reference's, so trajectories agree with it exactly.

State = proprio = agent x, y (the reference records the same two numbers as `state` and `proprio`);
the target is the goal state (`set_goal_state`).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .render import TWOROOM_AGENT_RADIUS, render_tworoom

SIZE = 224
BORDER = 14.0
RADIUS = TWOROOM_AGENT_RADIUS
SPEED = 5.0
WALL_X, WALL_HALF = 112.0, 5  # wall band x in [107, 117]
DOOR_Y, DOOR_HALF, DOOR_MARGIN = 49.0, 14.0, 1.75  # the centre counts as "in the door" within 14 + 1.75
SUCCESS_DIST = 16.0
SPAWN_LOW, SPAWN_HIGH = BORDER, SIZE - BORDER - 1  # reset samples positions in [14, 209]^2


def in_door(y: float) -> bool:
    return DOOR_Y - DOOR_HALF - DOOR_MARGIN <= y <= DOOR_Y + DOOR_HALF + DOOR_MARGIN


def tworoom_step(pos, action) -> np.ndarray:
    """The step rule on a float32 (2,) position: move, clamp to the borders, then resolve the middle wall."""
    pos = np.asarray(pos, dtype=np.float32)
    a = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
    nxt = pos + a * np.float32(SPEED)
    lo, hi = BORDER + RADIUS, SIZE - BORDER - RADIUS
    x, y = min(max(float(nxt[0]), lo), hi), min(max(float(nxt[1]), lo), hi)
    band_left, band_right = WALL_X - WALL_HALF - RADIUS, WALL_X + WALL_HALF + RADIUS
    if float(pos[0]) < WALL_X:  # came from the left room
        if x > band_left and not in_door(y):
            x = band_left - 0.5
    elif x < band_right and not in_door(y):
        x = band_right + 0.5
    return np.array([x, y], dtype=np.float32)


class TwoRoomEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str = "rgb_array"):
        if render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        box = spaces.Box(0.0, float(SIZE), shape=(2,), dtype=np.float64)
        self.observation_space = spaces.Dict({"state": box, "proprio": box})
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.agent = np.array([60.0, 112.0], dtype=np.float32)
        self.goal_state = np.array([164.0, 112.0], dtype=np.float32)
        self.door_center = np.array([WALL_X, DOOR_Y])
        self.wall_x = WALL_X
        self.colours = None   # {"agent": RGB}: recolour the agent dot (surprise tests); None: the reference's red

    # ------------------------------------------------------------------ state
    def get_state(self) -> np.ndarray:
        return self.agent.astype(np.float64)

    def set_state(self, state) -> None:
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        if s.shape[0] < 2 or not np.isfinite(s[:2]).all():
            raise ValueError(f"TwoRoom state needs >= 2 finite numbers (agent x, y), got shape {s.shape}")
        self.agent = s[:2].astype(np.float32)

    def set_goal_state(self, goal_state) -> None:
        g = np.asarray(goal_state, dtype=np.float64).reshape(-1)
        if g.shape[0] < 2 or not np.isfinite(g[:2]).all():
            raise ValueError(f"TwoRoom goal needs >= 2 finite numbers (target x, y), got shape {g.shape}")
        self.goal_state = g[:2].astype(np.float32)

    def distance_to_goal(self) -> float:
        return float(np.linalg.norm(self.agent - self.goal_state))

    def is_success(self) -> bool:
        return self.distance_to_goal() < SUCCESS_DIST

    def _obs(self):
        s = self.get_state()
        return {"state": s, "proprio": s.copy()}

    def _info(self):
        return {"success": self.is_success(), "goal_state": self.goal_state.astype(np.float64),
                "distance_to_target": self.distance_to_goal()}

    # ------------------------------------------------------------------ gym API
    def reset(self, seed=None, options=None):
        """Agent uniform in [14, 209]^2 outside the wall band (widened by the radius), target uniform in
        [14, 209]^2 (as in the reference); options may give `state` and/or `goal_state`."""
        super().reset(seed=seed)
        options = options or {}
        rng = self.np_random
        if options.get("state") is not None:
            self.set_state(options["state"])
        else:
            while True:
                p = rng.uniform(SPAWN_LOW, SPAWN_HIGH, 2)
                if not (WALL_X - WALL_HALF - RADIUS <= p[0] <= WALL_X + WALL_HALF + RADIUS):
                    break
            self.set_state(p)
        goal = options.get("goal_state")
        self.set_goal_state(rng.uniform(SPAWN_LOW, SPAWN_HIGH, 2) if goal is None else goal)
        return self._obs(), self._info()

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,) or not np.isfinite(a).all():
            raise ValueError(f"TwoRoom action must be 2 finite numbers, got {a}")
        self.agent = tworoom_step(self.agent, a)
        info = self._info()
        return self._obs(), 0.0, bool(info["success"]), False, info

    def render(self):
        if self.colours:
            unknown = sorted(set(self.colours) - {"agent"})
            if unknown:
                raise ValueError(f"TwoRoom can recolour only 'agent', got {unknown}")
            return render_tworoom(self.agent, colour=self.colours["agent"])
        return render_tworoom(self.agent)

    def close(self):
        pass
