"""bench/reference_port.py reproduces stable-worldmodel 0.1.1's CEMSolver + LeWM (same weights, same seed).

The port stands in for the package on machines that cannot import it (bench.cem), so it must give the
package's plans: same candidates (same generator consumption across environments and across solves)
and the same elite costs. Reduced size: tiny model (32x32 frames), 64 samples, 6 iterations, 8 elites,
3 environments solved one after another, two consecutive solves from one solver.
"""
import sys
import types
from pathlib import Path

import pytest
import torch

from helpers import random_model
from lewm_fast.model import LeWMConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.reference_port import ReferencePortCEM  # noqa: E402

KW = dict(num_samples=64, n_steps=6, topk=8, var_scale=1.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _package_solver(ref_model, seed, n_envs, env_action_dim):
    from gymnasium.spaces import Box
    from stable_worldmodel.solver import CEMSolver

    solver = CEMSolver(ref_model, seed=seed, **KW)   # batch_size defaults to 1: one env at a time
    solver.configure(action_space=Box(-1.0, 1.0, shape=(n_envs, env_action_dim)), n_envs=n_envs,
                     config=types.SimpleNamespace(horizon=5, action_block=5))
    return solver


@pytest.mark.parametrize("env_action_dim,seed", [(2, 0), (2, 7), (5, 3)])
def test_port_matches_package(reference, env_action_dim, seed, capsys):
    from reference_compat import reference_from_ours

    ours = random_model(LeWMConfig.tiny(env_action_dim=env_action_dim), seed=seed, scale=0.3)
    ref = reference_from_ours(ours)
    n_envs = 3
    g = torch.Generator().manual_seed(100 + seed)
    package = _package_solver(ref, seed, n_envs, env_action_dim)
    port = ReferencePortCEM(ours, seed=seed, **KW)
    for solve in range(2):     # the generator carries over between solves, as in the package
        obs = torch.randn(n_envs, 1, 3, 32, 32, generator=g)
        goal = torch.randn(n_envs, 1, 3, 32, 32, generator=g)
        want = package({"pixels": obs, "goal": goal, "action": torch.zeros(n_envs, 1, ours.cfg.action_dim)})
        got = port.solve(obs, goal)
        assert got["actions"].shape == want["actions"].shape == (n_envs, 5, ours.cfg.action_dim)
        assert (got["actions"] - want["actions"]).abs().max() <= 1e-4, f"solve {solve}"
        torch.testing.assert_close(torch.tensor(got["costs"]), torch.tensor(want["costs"]), rtol=1e-4, atol=1e-4)
    # the plans really depend on the seed (a port ignoring the generator would fail above, not here)
    other = ReferencePortCEM(ours, seed=seed + 1, **KW).solve(obs, goal)["actions"]
    assert (other - got["actions"]).abs().max() > 1e-2
