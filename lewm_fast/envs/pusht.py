"""PushT (spec D.1): push a T-shaped block with a round kinematic agent, pymunk physics.

Behaviour follows the reference environment: a 512x512 world without gravity or momentum (damping 0), a
PD-controlled kinematic agent whose action is a relative target (agent + 100 * a), 10 physics substeps
of 0.01 s per env step, and the joint success test of spec C.4. The physics scene is built in the same
order with the same parameters as the reference so trajectories agree to floating-point precision
(tests/test_pusht.py checks this against the reference when it is installed).

State (7): agent x, y, block x, y, block angle mod 2 pi, agent vx, vy. Block x, y is the body origin
(the middle of the T's top edge), not its centre of gravity. Proprio (4): agent x, y, vx, vy.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pymunk
from gymnasium import spaces

from .render import PUSHT_GOAL_POSE, render_pusht

WORLD = 512
AGENT_RADIUS = 15.0
ACTION_SCALE = 100.0  # pixels per unit action (relative target)
K_P, K_V = 100.0, 20.0
DT, SUBSTEPS = 0.01, 10
SUCCESS_POS, SUCCESS_ANGLE = 20.0, np.pi / 9
# The T in body coordinates: bar on top, stem below (y points down on screen).
T_BAR = [(-60.0, 30.0), (60.0, 30.0), (60.0, 0.0), (-60.0, 0.0)]
T_STEM = [(-15.0, 30.0), (-15.0, 120.0), (15.0, 120.0), (15.0, 30.0)]
WALLS = [((5, 506), (5, 5)), ((5, 5), (506, 5)), ((506, 5), (506, 506)), ((5, 506), (506, 506))]


def contact_segments(block: pymunk.Body) -> np.ndarray:
    """Contact markers of the block's current contacts, (K, 4) rows ax, ay, bx, by.

    The reference's debug draw marks each contact point with a segment from the point on body A moved
    2 px against the normal to the point on body B moved 2 px along it (every contact involves the block:
    the kinematic agent and the static walls never collide with each other)."""
    segs = []

    def add(arbiter):
        n = arbiter.normal
        for p in arbiter.contact_point_set.points:
            a, b = p.point_a - n * 2.0, p.point_b + n * 2.0
            segs.append((a.x, a.y, b.x, b.y))

    block.each_arbiter(add)
    return np.array(segs, dtype=np.float64).reshape(-1, 4)


def pusht_success(state, goal_state) -> bool:
    """Spec C.4: ||(agent xy, block xy) - goal's|| < 20 as one 4-vector AND block angle error < pi/9."""
    state, goal_state = np.asarray(state, dtype=np.float64), np.asarray(goal_state, dtype=np.float64)
    pos_err = np.linalg.norm(goal_state[:4] - state[:4])
    ang = abs(goal_state[4] - state[4]) % (2 * np.pi)
    ang = min(ang, 2 * np.pi - ang)  # wrap-around: 0.05 and 2 pi - 0.05 are 0.1 apart
    # (The reference skips the "% 2 pi", so for |difference| > 2 pi its test passes vacuously; with
    # dataset goals, whose angles lie in [0, 2 pi), both agree.)
    return bool(pos_err < SUCCESS_POS and ang < SUCCESS_ANGLE)


class PushTEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str = "rgb_array", resolution: int = 224):
        if render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.resolution = int(resolution)
        self.observation_space = spaces.Dict({
            "state": spaces.Box(np.array([0, 0, 0, 0, 0, -WORLD, -WORLD], dtype=np.float64),
                                np.array([WORLD, WORLD, WORLD, WORLD, 2 * np.pi, WORLD, WORLD], dtype=np.float64),
                                dtype=np.float64),
            "proprio": spaces.Box(np.array([0, 0, -WORLD, -WORLD], dtype=np.float64),
                                  np.array([WORLD] * 4, dtype=np.float64), dtype=np.float64),
        })
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.goal_pose = np.array(PUSHT_GOAL_POSE)  # the drawn target T (fixed, as in the reference)
        self.goal_state = None
        self.colours = None   # {"agent"|"block"|"goal": RGB}: recolour objects (surprise tests); None: the reference's
        self._build_space()

    # ------------------------------------------------------------------ physics scene
    def _build_space(self):
        # Same construction order as the reference (walls, agent, block): the contact solver visits
        # bodies in insertion order, so this keeps trajectories identical.
        space = pymunk.Space()
        space.gravity = (0, 0)
        space.damping = 0  # velocity is wiped every substep: the block moves only while pushed
        for a, b in WALLS:
            space.add(pymunk.Segment(space.static_body, a, b, 2))
        self.agent = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        self.agent.position = (256.0, 400.0)
        space.add(self.agent, pymunk.Circle(self.agent, AGENT_RADIUS))
        # Mass 1; the reference's moment of inertia is twice the bar's polygon moment (it passes the bar's
        # vertices for both parts), kept so the block turns the same way.
        moment = 2 * pymunk.moment_for_poly(1.0, T_BAR)
        self.block = pymunk.Body(1.0, moment)
        bar, stem = pymunk.Poly(self.block, T_BAR), pymunk.Poly(self.block, T_STEM)
        self.block.center_of_gravity = (bar.center_of_gravity + stem.center_of_gravity) / 2  # (0, 45)
        self.block.position = (400.0, 100.0)
        space.add(self.block, bar, stem)
        self.space = space

    # ------------------------------------------------------------------ state
    def get_state(self) -> np.ndarray:
        a, b = self.agent, self.block
        return np.array([a.position.x, a.position.y, b.position.x, b.position.y, b.angle % (2 * np.pi),
                         a.velocity.x, a.velocity.y], dtype=np.float64)

    def set_state(self, state, settle: bool = True) -> None:
        """Place agent and block (state of length 7, or 5 with zero agent velocity), then settle one 0.01 s
        physics step, as the reference does (so the agent moves by velocity * 0.01 and overlaps resolve).
        settle=False places them exactly, without that step (and so without contacts).

        Unlike the reference, the physics scene is rebuilt first: the reference keeps the block's leftover
        velocity and pymunk's cached contact impulses from before the call, so its result depends on history.
        Here the same state always gives the same result (block at rest, no contact history)."""
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        if s.shape[0] not in (5, 7) or not np.isfinite(s).all():
            raise ValueError(f"PushT state must be 5 or 7 finite numbers, got shape {s.shape}")
        self._build_space()
        self.agent.velocity = (float(s[5]), float(s[6])) if s.shape[0] == 7 else (0.0, 0.0)
        self.agent.position = (float(s[0]), float(s[1]))
        # Angle before position: pymunk rotates about the centre of gravity, so this order puts the body
        # origin exactly at (x, y).
        self.block.angle = float(s[4])
        self.block.position = (float(s[2]), float(s[3]))
        if settle:
            self.space.step(DT)

    def set_goal_state(self, goal_state) -> None:
        g = np.asarray(goal_state, dtype=np.float64).reshape(-1)
        if g.shape[0] < 5 or not np.isfinite(g[:5]).all():
            raise ValueError(f"PushT goal state needs >= 5 finite numbers, got shape {g.shape}")
        self.goal_state = g.copy()

    def is_success(self) -> bool:
        if self.goal_state is None:
            return False
        return pusht_success(self.get_state(), self.goal_state)

    def _obs(self):
        s = self.get_state()
        return {"state": s, "proprio": np.concatenate([s[:2], s[5:]])}

    def _info(self):
        return {"success": self.is_success(), "goal_state": None if self.goal_state is None else self.goal_state.copy()}

    def _sample_state(self) -> np.ndarray:
        rng = self.np_random
        # Angles as the state reports them, in [0, 2 pi) (the reference samples [-2 pi, 2 pi): same law).
        return np.concatenate([rng.uniform(50, 450, 2), rng.uniform(100, 400, 2),
                               [rng.uniform(-2 * np.pi, 2 * np.pi) % (2 * np.pi)], [0.0, 0.0]])

    # ------------------------------------------------------------------ gym API
    def reset(self, seed=None, options=None):
        """Random start (agent in [50, 450]^2, block in [100, 400]^2, any angle, at rest) and an independent
        random goal state; options may give `state` and/or `goal_state` instead."""
        super().reset(seed=seed)
        options = options or {}
        goal = options.get("goal_state")
        self.set_goal_state(self._sample_state() if goal is None else goal)
        start = options.get("state")
        self.set_state(self._sample_state() if start is None else start)
        return self._obs(), self._info()

    def step(self, action):
        a = np.asarray(action)
        if a.shape != (2,):
            raise ValueError(f"PushT action must have shape (2,), got {a.shape}")
        if not np.issubdtype(a.dtype, np.floating):
            a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ValueError("PushT action contains NaN or inf")
        # Scalar-wise arithmetic on purpose: it keeps the reference's precision (a float32 action makes the
        # PD target and velocity update float32, a float64 action keeps float64). Not clipped, as in the reference.
        pos = self.agent.position
        tx, ty = pos.x + a[0] * ACTION_SCALE, pos.y + a[1] * ACTION_SCALE
        for _ in range(SUBSTEPS):
            p, v = self.agent.position, self.agent.velocity
            ax = K_P * (tx - p.x) + K_V * (0 - v.x)
            ay = K_P * (ty - p.y) + K_V * (0 - v.y)
            self.agent.velocity = (float(v.x + ax * DT), float(v.y + ay * DT))
            self.space.step(DT)
        obs, info = self._obs(), self._info()
        reward = 0.0
        if self.goal_state is not None:  # the reference's dense reward: minus the state-space distance
            n = min(len(self.goal_state), 7)
            reward = -float(np.linalg.norm(self.goal_state[:n] - obs["state"][:n]))
        return obs, reward, bool(info["success"]), False, info

    def render(self):
        return render_pusht(self.get_state(), size=self.resolution, goal_pose=self.goal_pose,
                            contacts=contact_segments(self.block), colours=self.colours)

    def close(self):
        pass
