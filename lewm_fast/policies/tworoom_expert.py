"""TwoRoom door expert (spec D.2): head for the door centre while the target is in the other room, then
for the target; unit-length direction plus N(0, noise^2) action noise (noise 2 for data), clipped to
[-1, 1]. Once within 10.5 px of the door centre it heads for the target, which carries it through."""
from __future__ import annotations

import numpy as np

DOOR_REACH = 10.5  # px: close enough to the door centre to turn toward the target


class TwoRoomExpert:
    def __init__(self, env, seed=None, noise: float = 2.0):
        self.env = env
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)

    def reset(self, obs=None, info=None):
        pass

    def waypoint(self, agent, target):
        wall_x = self.env.wall_x
        door = np.asarray(self.env.door_center, dtype=np.float64)
        if (agent[0] > wall_x) != (target[0] > wall_x) and np.linalg.norm(door - agent) > DOOR_REACH:
            return door
        return target

    def act(self, obs=None, info=None):
        agent = self.env.get_state()[:2]
        target = np.asarray(self.env.goal_state, dtype=np.float64)[:2]
        direction = self.waypoint(agent, target) - agent
        norm = np.linalg.norm(direction)
        action = direction / norm if norm > 1e-8 else np.zeros(2)
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, 2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def make(env, seed=None):
    return TwoRoomExpert(env, seed)
