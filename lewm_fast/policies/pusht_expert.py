"""Scripted PushT expert: push the T to the env's goal pose, then park the agent on the goal's agent spot.

The reference ships no generator for its expert data (spec D.1), so this is a geometric pushing
controller. The block only moves while pushed (no momentum) and contacts are frictionless, so a push at
a boundary point p with outward normal n moves the centre of gravity along -n and turns the block by
(r x -n) / I. Each step the expert:
  1. scores a fixed set of body-frame contact points by how fast pushing there lowers
     |position error|^2 + (60 px/rad * angle error)^2, discounted by the walk needed to reach them;
  2. walks to the chosen contact's approach point, orbiting the block at a safe radius whenever the
     straight path would touch it;
  3. pushes through the contact by the step that minimises the error along that push (2..25 px).
When the block pose is within tolerance it walks to the goal agent position instead.
"""
from __future__ import annotations

import numpy as np

R_AGENT = 15.0
LAMBDA = 60.0  # px per radian: weighs angle error against position error
MOMENT = 3000.0  # block moment of inertia about its body origin, as the env builds it (mass 1)
COG = np.array([0.0, 45.0])
RECTS = [(-60.0, 60.0, 0.0, 30.0), (-15.0, 15.0, 30.0, 120.0)]  # T parts in body frame: x0, x1, y0, y1
ORBIT = 108.0  # > farthest hull point from the COG (76.5) + agent radius + margin
# Contact points (body frame) and outward normals; pocket points keep a clear approach lane.
CONTACTS = np.array(
    [(x, 0.0, 0.0, -1.0) for x in (-50.0, -25.0, 0.0, 25.0, 50.0)]  # top of the bar
    + [(-60.0, 15.0, -1.0, 0.0), (60.0, 15.0, 1.0, 0.0)]  # bar ends
    + [(x, 30.0, 0.0, 1.0) for x in (-50.0, -40.0, 40.0, 50.0)]  # under the bar, beside the stem
    + [(-15.0, y, -1.0, 0.0) for y in (65.0, 90.0, 112.0)]  # stem sides
    + [(15.0, y, 1.0, 0.0) for y in (65.0, 90.0, 112.0)]
    + [(x, 120.0, 0.0, 1.0) for x in (-8.0, 0.0, 8.0)]  # stem foot
)


def _rot(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s], [s, c]])


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def distance_to_t(points, block_xy, angle):
    """Distance from world points (K, 2) to the T at pose (block_xy, angle); 0 inside."""
    local = (np.atleast_2d(points) - block_xy) @ _rot(angle)  # world -> body frame (R^T p)
    best = np.full(len(local), np.inf)
    for x0, x1, y0, y1 in RECTS:
        dx = np.maximum(np.maximum(x0 - local[:, 0], local[:, 0] - x1), 0)
        dy = np.maximum(np.maximum(y0 - local[:, 1], local[:, 1] - y1), 0)
        best = np.minimum(best, np.hypot(dx, dy))
    return best


class PushTExpert:
    def __init__(self, env, seed=None, pos_tol=4.0, angle_tol=0.06, noise=0.0):
        self.env = env
        self.rng = np.random.default_rng(seed)
        self.pos_tol, self.angle_tol, self.noise = pos_tol, angle_tol, noise
        self.contact = None

    def reset(self, obs=None, info=None):
        self.contact = None

    # ---------------------------------------------------------------- helpers
    def _clear(self, a, b, block_xy, angle, margin=3.0):
        n = max(2, int(np.linalg.norm(b - a) / 4) + 2)
        pts = a + np.linspace(0, 1, n)[:, None] * (b - a)
        return bool(distance_to_t(pts, block_xy, angle).min() >= R_AGENT + margin)

    def _navigate(self, agent, target, block_xy, angle):
        """Next waypoint toward target that keeps the agent off the block."""
        if self._clear(agent, target, block_xy, angle):
            return target
        c = block_xy + _rot(angle) @ COG
        rel = agent - c
        dist = np.linalg.norm(rel)
        if dist < ORBIT - 8:  # get out to the orbit first, away from the centre
            return c + rel / max(dist, 1e-6) * ORBIT
        a_agent = np.arctan2(rel[1], rel[0])
        a_target = np.arctan2(*(target - c)[::-1])
        step = np.sign(_wrap(a_target - a_agent)) * np.deg2rad(35)
        a_next = a_agent + step
        return c + ORBIT * np.array([np.cos(a_next), np.sin(a_next)])

    def _parking_spot(self, spot, block_xy, angle):
        """The goal agent position, or, when the agent cannot fit there (it overlaps the T), the nearest
        point along the ray from the block's centre that it fits at."""
        c = block_xy + _rot(angle) @ COG
        ray = spot - c
        ray = ray / max(np.linalg.norm(ray), 1e-6)
        for step in range(200):
            p = spot + ray * step
            if distance_to_t(p[None], block_xy, angle)[0] >= R_AGENT + 1:
                return p
        return spot

    def _pick_contact(self, agent, block_xy, angle, err_c, err_a):
        R = _rot(angle)
        c = block_xy + R @ COG
        p = block_xy + CONTACTS[:, :2] @ R.T
        n = CONTACTS[:, 2:] @ R.T
        d = -n
        r = p - c
        torque = (r[:, 0] * d[:, 1] - r[:, 1] * d[:, 0]) / MOMENT
        gain = d @ err_c + LAMBDA**2 * err_a * torque  # first-order error decrease per px of push
        curv = 1.0 + LAMBDA**2 * torque**2
        best_drop = np.where(gain > 0, gain**2 / curv, 0.0)
        approach = p + n * (R_AGENT + 8)
        walk = np.linalg.norm(approach - agent, axis=1)
        score = best_drop * np.exp(-walk / 200.0)
        if self.contact is not None:
            score[self.contact] *= 1.5  # hysteresis: finish the push in progress
        i = int(np.argmax(score))
        return i, p[i], n[i], max(gain[i], 0.0) / curv[i]

    # ---------------------------------------------------------------- policy
    def act(self, obs=None, info=None):
        env = self.env
        s = env.get_state()
        goal = env.goal_state
        agent, block_xy, angle = s[:2], s[2:4], s[4]
        R, Rg = _rot(angle), _rot(goal[4])
        err_c = (goal[2:4] + Rg @ COG) - (block_xy + R @ COG)
        err_a = _wrap(goal[4] - angle)
        if np.linalg.norm(goal[2:4] - block_xy) < self.pos_tol and abs(err_a) < self.angle_tol:
            self.contact = None
            target = self._navigate(agent, self._parking_spot(goal[:2], block_xy, angle), block_xy, angle)
        else:
            i, p, n, step = self._pick_contact(agent, block_xy, angle, err_c, err_a)
            self.contact = i
            rel = agent - p
            along, lateral = rel @ n, abs(rel[0] * n[1] - rel[1] * n[0])
            if lateral < 6.0 and R_AGENT - 4 <= along <= R_AGENT + 12:
                target = p + n * (R_AGENT - float(np.clip(step, 2.0, 25.0)))
            else:
                target = self._navigate(agent, p + n * (R_AGENT + 8), block_xy, angle)
        action = (target - agent) / 100.0
        if self.noise > 0:
            action = action + self.rng.normal(0, self.noise, 2)
        return np.clip(action, -1, 1).astype(np.float32)


def make(env, seed=None):
    return PushTExpert(env, seed)
