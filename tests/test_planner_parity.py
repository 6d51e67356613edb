"""Planner parity with the reference solvers of stable-worldmodel 0.1.1 (same weights, same seed).

Size: a full-size reference solve takes ~10 s on the 2-core CI CPU, so these tests use
`LeWMConfig.tiny()` (32x32 images, 2+2 layers) with every weight randomised, and the reference's
default solver settings (300 samples, 30 iterations, 30 elites, horizon 5, action block 5) for CEM
(10 seeds); iCEM and MPPI use 3 seeds. History length 1 (the reference's planning setting).

Why identical candidates: our solvers draw `torch.randn` with the reference's shapes, order, dtype
and device from a generator seeded the same way, so with one environment every iteration samples
the same noise; the plans then agree up to float rounding of the (differently organised) rollout.
"""
import types

import pytest
import torch

from helpers import random_model
from lewm_fast.model import LeWMConfig
from lewm_fast.planner import Planner


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pair():
    from reference_compat import REFERENCE_ERROR, import_reference, reference_from_ours

    if import_reference() is None:
        pytest.skip(REFERENCE_ERROR)
    ours = random_model(LeWMConfig.tiny(), seed=0, scale=0.3)
    return ours, reference_from_ours(ours)


def _reference_solve(ref_model, solver_cls, seed, obs, goal, horizon=5, action_block=5, **kw):
    from gymnasium.spaces import Box

    solver = solver_cls(ref_model, seed=seed, **kw)
    solver.configure(action_space=Box(-1.0, 1.0, shape=(1, 2)), n_envs=1,
                     config=types.SimpleNamespace(horizon=horizon, action_block=action_block))
    # 0.1.1's get_cost pops an 'action' key (any placeholder); pixels are ImageNet-normalised floats
    out = solver({"pixels": obs, "goal": goal, "action": torch.zeros(1, 1, 10)})
    return out["actions"], torch.tensor(out["costs"])


def _inputs(seed):
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(1, 1, 3, 32, 32, generator=g), torch.randn(1, 1, 3, 32, 32, generator=g)


class _RecordCosts:
    """A reference solver callback keeping every iteration's (B, S) candidate costs."""

    def __init__(self):
        self.costs = []

    def __call__(self, **kw):
        self.costs.append(kw["costs"].detach().clone().float())

    def __getattr__(self, name):   # start_batch / end_batch and any other hook: nothing to do
        return lambda *a, **k: None


@pytest.mark.parametrize("seed", range(10))
def test_cem_matches_reference(pair, seed, monkeypatch):
    """Same candidates, costs equal to float rounding at every iteration, the same plan. Exception, checked
    not assumed: an iteration whose 30th and 31st best costs lie within that rounding may pick a different elite
    set (the two rollouts sum in different orders; on an AVX2-only CPU this happened for 2 of 10 seeds), after
    which the candidates differ; the test then asserts that the swapped candidates were tied to rounding."""
    from stable_worldmodel.solver import CEMSolver

    from lewm_fast.planning.engine import RolloutEngine

    ours, ref = pair
    obs, goal = _inputs(seed)
    rec = _RecordCosts()
    want_plan, want_cost = _reference_solve(ref, CEMSolver, seed, obs, goal, num_samples=300, n_steps=30,
                                            topk=30, var_scale=1.0, callbacks=[rec])
    mine, costs = [], RolloutEngine.costs
    monkeypatch.setattr(RolloutEngine, "costs", lambda self, *a, **k: mine.append(costs(self, *a, **k)) or mine[-1])
    got = Planner(ours, seed=seed, backend="eager", precision="fp32").plan(obs, goal)
    assert got.blocks.shape == want_plan.shape == (1, 5, 10)
    assert len(mine) == len(rec.costs) == 30
    for it, (a, b) in enumerate(zip(mine, rec.costs)):
        a, b = a.reshape(-1).float(), b.reshape(-1)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)   # same candidates: same costs
        ours_top, ref_top = set(a.topk(30, largest=False).indices.tolist()), set(b.topk(30, largest=False).indices.tolist())
        if ours_top != ref_top:
            rounding = (a - b).abs().max().item()
            boundary = b.sort().values[29:31]
            for i in ours_top ^ ref_top:   # every swapped candidate sits at the elite boundary, within rounding
                assert (b[i] - boundary).abs().min().item() <= 2 * rounding + 1e-6, (it, i, b[i].item(), boundary.tolist(), rounding)
            print(f"elite sets differ at iteration {it}: boundary {boundary.tolist()}, rounding {rounding:.2e}")
            return   # from here on the two solvers sample around different means: nothing left to compare
    assert (got.blocks - want_plan).abs().max() <= 1e-4
    torch.testing.assert_close(got.cost, want_cost, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_icem_matches_reference(pair, seed):
    from stable_worldmodel.solver.icem import ICEMSolver

    ours, ref = pair
    obs, goal = _inputs(seed)
    kw = dict(num_samples=100, n_steps=10, topk=10, noise_beta=2.0, alpha=0.1, n_elite_keep=5)
    want_plan, want_cost = _reference_solve(ref, ICEMSolver, seed, obs, goal, **kw)
    # the reference clamps candidates to the env's Box bounds tiled over the block: here [-1, 1]
    got = Planner(ours, solver="icem", seed=seed, backend="eager", num_samples=100, iterations=10, topk=10,
                  noise_beta=2.0, alpha=0.1, n_elite_keep=5, action_low=-torch.ones(10),
                  action_high=torch.ones(10)).plan(obs, goal)
    assert (got.blocks - want_plan).abs().max() <= 1e-4
    torch.testing.assert_close(got.cost, want_cost, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_mppi_matches_reference(pair, seed):
    from stable_worldmodel.solver.mppi import MPPISolver

    ours, ref = pair
    obs, goal = _inputs(seed)
    want_plan, want_cost = _reference_solve(ref, MPPISolver, seed, obs, goal, num_samples=100, n_steps=10,
                                            topk=10, temperature=0.5)
    got = Planner(ours, solver="mppi", seed=seed, backend="eager", num_samples=100, iterations=10, topk=10,
                  temperature=0.5).plan(obs, goal)
    assert (got.blocks - want_plan).abs().max() <= 1e-4
    torch.testing.assert_close(got.cost, want_cost, rtol=1e-4, atol=1e-4)
