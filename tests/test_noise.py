"""Batch-invariant CEM noise (issue 14, item 4): environment i's draws depend only on (seed, i).

The expectation is independent of the batched code: planning environment i alone (B = 1, env_ids=[i])
on a fresh planner. Parity of B = 1 with the reference CEMSolver is pinned by test_planner_parity.py
(env 0's stream is a generator seeded with `seed`, as the reference's); here, without the reference,
env 0's first draw is compared with torch.randn from torch.Generator().manual_seed(seed).
"""
import numpy as np
import pytest
import torch

from helpers import random_model
from lewm_fast.model import LeWMConfig
from lewm_fast.planner import Planner
from lewm_fast.planning.noise import EnvStreams, env_seed, randn
from lewm_fast.planning.solvers import CEM

pytestmark = pytest.mark.usefixtures("one_thread")
KW = dict(num_samples=24, iterations=3, topk=4, backend="eager", seed=9)


@pytest.fixture(scope="module")
def model():
    return random_model(LeWMConfig.tiny(), seed=0, scale=0.3)


def _frames(B, seed):
    return np.random.default_rng(seed).integers(0, 256, (B, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("solver,extra", [("cem", {}), ("icem", {"noise_beta": 2.0}), ("mppi", {"temperature": 0.5})])
def test_batched_row_equals_single_env_plan(model, solver, extra):
    obs, goal = _frames(5, 0), _frames(5, 1)
    obs[3] = obs[1]                                      # identical rows: still each env's own plan
    goal[3] = goal[1]
    batched = Planner(model, solver=solver, **KW, **extra).plan(obs, goal)
    # float rounding of batched vs single-row GEMMs only (MPPI's softmax weights amplify it to ~1e-5);
    # a row drawing from another stream differs by O(1)
    for i in range(5):
        alone = Planner(model, solver=solver, **KW, **extra).plan(obs[i:i + 1], goal[i:i + 1], env_ids=[i])
        torch.testing.assert_close(batched.blocks[i:i + 1], alone.blocks, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(batched.cost[i:i + 1], alone.cost, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batched.blocks[1], batched.blocks[3])   # different ids: independent draws


def test_rows_follow_their_ids_not_their_position(model):
    obs, goal = _frames(4, 2), _frames(4, 3)
    perm = [2, 0, 3, 1]
    a = Planner(model, **KW).plan(obs, goal)
    b = Planner(model, **KW).plan(obs[perm], goal[perm], env_ids=perm)
    torch.testing.assert_close(b.blocks, a.blocks[perm], rtol=1e-5, atol=1e-6)
    assert b.info["env_ids"] == perm


def test_streams_advance_per_env_and_reseed(model):
    """Each call consumes only its own environments' streams; manual_seed restarts all of them."""
    obs, goal = _frames(3, 4), _frames(3, 5)
    p = Planner(model, **KW)
    p.plan(obs[:1], goal[:1], env_ids=[0])              # advances env 0 only
    second = p.plan(obs, goal)
    fresh = Planner(model, **KW)
    fresh.plan(obs[:1], goal[:1], env_ids=[0])
    torch.testing.assert_close(second.blocks, fresh.plan(obs, goal).blocks)
    once = Planner(model, **KW).plan(obs[1:2], goal[1:2], env_ids=[1])
    torch.testing.assert_close(second.blocks[1:2], once.blocks)  # env 1 had not drawn before
    p.generator.manual_seed(KW["seed"])
    torch.testing.assert_close(p.plan(obs, goal).blocks, Planner(model, **KW).plan(obs, goal).blocks)


def test_env0_stream_is_the_reference_generator():
    s, shape = 123, (1, 300, 5, 10)
    state = CEM().init(torch.zeros(1, 5, 10))
    cand = CEM().sample(state, EnvStreams(s, "cpu").generators([0]))
    want = torch.randn(shape, generator=torch.Generator().manual_seed(s))
    torch.testing.assert_close(cand[:, 1:], want[:, 1:], rtol=0, atol=0)   # row 0 is the mean itself


def test_env_seeds_are_distinct_and_in_range():
    seeds = {env_seed(s, i) for s in range(20) for i in range(1, 500)}
    assert len(seeds) == 20 * 499 and all(0 <= x < 2 ** 63 for x in seeds)
    assert env_seed(7, 0) == 7
    g = EnvStreams(5, "cpu").generators([3])[0]
    assert g.initial_seed() == env_seed(5, 3)
    rows = randn(EnvStreams(5, "cpu").generators([0, 3]), (2, 4, 3), "cpu", torch.float32)
    torch.testing.assert_close(rows[1], torch.randn(4, 3, generator=torch.Generator().manual_seed(env_seed(5, 3))))


@pytest.mark.parametrize("ids", [[0, 0], [0], [-1, 2], [0, 1, 2]])
def test_env_ids_are_validated(model, ids):
    with pytest.raises(ValueError, match="env_ids"):
        Planner(model, **KW).plan(_frames(2, 0), _frames(2, 1), env_ids=ids)
