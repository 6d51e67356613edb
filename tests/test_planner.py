"""Batched planner: rollout engine == LeWM.rollout, solvers behave, inputs are validated, API round-trips."""
import numpy as np
import pytest
import torch

from helpers import random_model
from lewm_fast.model import LeWM, LeWMConfig
from lewm_fast.planner import Planner, resolve, resolve_backend
from lewm_fast.planning.engine import RolloutEngine
from lewm_fast.planning.solvers import CEM, ICEM, MPPI


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(H=1, seed=0):
    # scale 0.3: outputs depend clearly on every input (at the helper's default 0.1 the random
    # predictor is nearly constant, which would hide cache or indexing mistakes)
    return random_model(LeWMConfig.tiny(history_len=H), seed=seed, scale=0.3)


# ------------------------------------------------------------------------------------------------
# rollout engine vs the eager model (the semantics)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("H", [1, 2, 3, 4])
@pytest.mark.parametrize("S", [1, 6, 33])
def test_engine_rollout_matches_model(H, S):
    m = _model(H)
    g = torch.Generator().manual_seed(H * 100 + S)
    B, T, D, A = 2, 5, m.cfg.embed_dim, m.cfg.action_dim
    ctx = torch.randn(B, H, D, generator=g)
    cand = torch.randn(B, S, T, A, generator=g)
    hist = torch.randn(B, S, H - 1, A, generator=g) if H > 1 else None
    goal = torch.randn(B, D, generator=g)
    with torch.inference_mode():
        want = m.rollout(cand, emb=ctx, action_history=hist)
        want_cost = LeWM.cost(want, goal)
    for chunk in (None, 5):   # chunking rows must not change any row's result
        eng = RolloutEngine(m, chunk_rows=chunk)
        got = eng.rollout(ctx, cand, hist)
        assert got.shape == want.shape == (B, S, H + T, D)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(eng.costs(ctx, goal, cand, hist), want_cost, rtol=1e-5, atol=1e-5)


def test_engine_shared_history_equals_per_candidate_history():
    m = _model(3)
    g = torch.Generator().manual_seed(1)
    ctx, cand = torch.randn(1, 3, m.cfg.embed_dim, generator=g), torch.randn(1, 4, 5, m.cfg.action_dim, generator=g)
    hist = torch.randn(1, 2, m.cfg.action_dim, generator=g)
    eng = RolloutEngine(m)
    torch.testing.assert_close(eng.rollout(ctx, cand, hist), eng.rollout(ctx, cand, hist[:, None].expand(1, 4, 2, -1)))


def test_engine_bf16_close_to_fp32():
    m = _model(1)
    g = torch.Generator().manual_seed(2)
    ctx, cand = torch.randn(2, 1, m.cfg.embed_dim, generator=g), torch.randn(2, 16, 5, m.cfg.action_dim, generator=g)
    goal = torch.randn(2, m.cfg.embed_dim, generator=g)
    c32 = RolloutEngine(m, precision="fp32").costs(ctx, goal, cand)
    c16 = RolloutEngine(m, precision="bf16").costs(ctx, goal, cand)
    assert ((c16 - c32).abs() / c32.abs()).max() < 5e-2


def test_engine_encodes_uint8_like_the_model():
    m = _model(1)
    px = torch.randint(0, 256, (2, 1, 3, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        torch.testing.assert_close(RolloutEngine(m).encode(px), m.encode(px))


# ------------------------------------------------------------------------------------------------
# solvers on a toy quadratic cost (independent of the model)
# ------------------------------------------------------------------------------------------------
def _quadratic(target):
    return lambda cand: (cand - target[:, None]).pow(2).sum((-1, -2))


@pytest.mark.parametrize("solver", [CEM(num_samples=64, iterations=15, topk=8),
                                    ICEM(num_samples=64, iterations=15, topk=8),
                                    MPPI(num_samples=64, iterations=15, topk=8, temperature=0.5)])
def test_solvers_lower_a_quadratic_cost_per_environment(solver):
    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 4, 2, generator=g) * 0.8        # each env has its own optimum
    cost_fn = _quadratic(target)
    state = solver.init(torch.zeros(3, 4, 2))
    start = cost_fn(state["mean"][:, None])[:, 0]
    for _ in range(solver.iterations):
        state = solver.step(state, cost_fn, g)
    plan, _ = solver.result(state)
    end = cost_fn(plan[:, None])[:, 0]
    assert (end < 0.1 * start).all(), (start, end)


def test_icem_respects_bounds_and_reinjects_elites():
    g = torch.Generator().manual_seed(0)
    s = ICEM(num_samples=32, iterations=3, topk=4, n_elite_keep=3,
             action_low=torch.full((2,), -0.5), action_high=torch.full((2,), 0.5))
    target = torch.full((1, 5, 2), 2.0)                    # outside the bounds
    state = s.init(torch.zeros(1, 5, 2))
    state = s.step(state, _quadratic(target), g)
    cand = s.sample(state, g)
    assert cand.min() >= -0.5 and cand.max() <= 0.5
    torch.testing.assert_close(cand[:, 1:4], state["elites"][:, :3])   # previous elites carried over


def test_mppi_keeps_std_and_weights_by_softmax():
    g = torch.Generator().manual_seed(0)
    s = MPPI(num_samples=5, iterations=1, topk=5, temperature=0.7)
    state = s.init(torch.zeros(1, 1, 1))
    seen = {}

    def cost_fn(cand):
        seen["cand"] = cand.clone()
        return cand[..., 0, 0] ** 2
    new = s.step(state, cost_fn, g)
    c = seen["cand"][0, :, 0, 0]
    w = torch.exp(-(c ** 2 - (c ** 2).min()) / 0.7)
    torch.testing.assert_close(new["mean"][0, 0, 0], (w / w.sum() * c).sum())
    torch.testing.assert_close(new["std"], state["std"])


def test_cem_rejects_bad_topk():
    with pytest.raises(ValueError, match="topk"):
        CEM(num_samples=10, topk=11)
    with pytest.raises(ValueError, match="topk"):
        ICEM(num_samples=10, topk=1)          # one elite has no (unbiased) std
    MPPI(num_samples=10, topk=1)              # MPPI keeps its std: one elite is fine


# ------------------------------------------------------------------------------------------------
# Planner API
# ------------------------------------------------------------------------------------------------
def _frames(B, H=None, seed=0, size=32):
    rng = np.random.default_rng(seed)
    shape = (B, size, size, 3) if H is None else (B, H, size, size, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _small(m, **kw):
    return Planner(m, num_samples=24, iterations=3, topk=4, backend="eager", **kw)


def test_plan_shapes_and_unnormalisation():
    m = _model(1)
    stats = {"mean": torch.tensor([0.5, -2.0]), "std": torch.tensor([2.0, 3.0])}
    r = _small(m, action_stats=stats).plan(_frames(3), _frames(3, seed=1))
    fs, E = m.cfg.frameskip, m.cfg.env_action_dim
    assert r.blocks.shape == (3, 5, fs * E) and r.actions.shape == (3, 5 * fs, E) and r.cost.shape == (3,)
    # block k holds frameskip consecutive env actions, each (dim 0, dim 1), normalised per env dim
    want = r.blocks.view(3, 5, fs, E).reshape(3, 5 * fs, E) * stats["std"] + stats["mean"]
    torch.testing.assert_close(r.actions, want)
    assert r.timing["solve_s"] > 0 and r.info["backend"] == "eager" and r.info["batch"] == 3


def test_plan_accepts_hwc_chw_and_time_axis_alike():
    m = _model(1)
    obs, goal = _frames(2), _frames(2, seed=1)
    a = _small(m, seed=3).plan(obs, goal)
    b = _small(m, seed=3).plan(torch.from_numpy(obs).permute(0, 3, 1, 2)[:, None], torch.from_numpy(goal)[:, None])
    torch.testing.assert_close(a.blocks, b.blocks)


def test_plan_is_seeded_and_the_generator_advances():
    m = _model(1)
    obs, goal = _frames(1), _frames(1, seed=1)
    p, q = _small(m, seed=7), _small(m, seed=7)
    first = p.plan(obs, goal).blocks
    torch.testing.assert_close(first, q.plan(obs, goal).blocks)
    assert not torch.equal(first, p.plan(obs, goal).blocks)   # like the reference: one generator per solver


def test_plan_batched_envs_are_independent():
    """Env b's plan only depends on env b's frames: replacing env 1's frames leaves env 0's plan alone."""
    m = _model(1)
    obs, goal = _frames(2), _frames(2, seed=1)
    a = _small(m, seed=5).plan(obs, goal)
    obs2 = obs.copy()
    obs2[1] = _frames(1, seed=9)[0]
    b = _small(m, seed=5).plan(obs2, goal)
    torch.testing.assert_close(a.blocks[0], b.blocks[0])
    torch.testing.assert_close(a.cost[0], b.cost[0])
    assert not torch.equal(a.cost[1], b.cost[1])   # (few samples: the elites themselves may coincide)


def test_plan_with_history_uses_action_history():
    m = _model(3)
    obs, goal = _frames(2, H=3), _frames(2, seed=1)
    hist = np.random.default_rng(0).normal(size=(2, 2 * m.cfg.frameskip, m.cfg.env_action_dim)).astype(np.float32)
    a = _small(m, seed=1).plan(obs, goal, action_history=hist)
    b = _small(m, seed=1).plan(obs, goal, action_history=hist * 0)
    assert a.blocks.shape == (2, 5, m.cfg.action_dim)
    assert not torch.equal(a.cost, b.cost)   # the history conditions the rollout


@pytest.mark.parametrize("obs,goal,hist,match", [
    (_frames(2, size=16), _frames(2, size=16), None, "16x16"),
    (_frames(2).astype(np.int32), _frames(2), None, "uint8"),
    (_frames(2), _frames(3), None, "batch"),
    (np.full((2, 3, 32, 32), np.nan, np.float32), _frames(2), None, "NaN"),
    (_frames(2, H=2), _frames(2), None, "history length"),
    (_frames(2)[..., :2], _frames(2), None, "colour channels"),
    (_frames(2)[0], _frames(2), None, r"\(B, h, w, 3\)"),
])
def test_plan_rejects_bad_inputs(obs, goal, hist, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _small(_model(1)).plan(obs, goal, action_history=hist)


def test_plan_history_errors():
    p = _small(_model(2))
    with pytest.raises(ValueError, match="action_history"):
        p.plan(_frames(2, H=2), _frames(2))
    with pytest.raises(ValueError, match="action_history"):
        p.plan(_frames(2, H=2), _frames(2), action_history=np.zeros((2, 3, 2), np.float32))


def test_backend_choice_on_cpu():
    assert resolve_backend("auto", torch.device("cpu")) == "eager"
    with pytest.raises(RuntimeError, match="CUDA"):
        Planner(_model(1), backend="graph", device="cpu")
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("fast", torch.device("cpu"))
    with pytest.raises(ValueError, match="precision"):
        Planner(_model(1), precision="fp8")


def test_switches_and_their_aliases_on_cpu():
    cpu = torch.device("cpu")
    assert resolve("auto", "auto", "auto", cpu) == ("torch", False)       # interpreter: never picked by auto
    assert resolve("eager", "auto", "auto", cpu) == ("torch", False)
    assert resolve("auto", "torch", False, cpu) == ("torch", False)
    with pytest.raises(ValueError, match="conflicts"):
        resolve("eager", "triton", "auto", cpu)
    with pytest.raises(ValueError, match="kernels"):
        resolve("auto", "cuda", "auto", cpu)
    with pytest.raises(RuntimeError, match="CUDA"):
        Planner(_model(1), kernels="torch", cuda_graph=True, device="cpu")


def test_triton_request_without_runnable_kernels_raises_with_the_reason():
    """Without TRITON_INTERPRET the kernels cannot run on CPU: asking for them must say so, not fall back."""
    import subprocess
    import sys

    code = ("import torch; from lewm_fast.planner import Planner, kernels_status\n"
            "from lewm_fast.model import LeWM, LeWMConfig\n"
            "print(kernels_status('cpu'))\n"
            "for b in ('triton', 'graph'):\n"
            "    try: Planner(LeWM(LeWMConfig.tiny()), backend=b, device='cpu')\n"
            "    except RuntimeError as e: print(b, 'raised:', e)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    status, triton, graph = out.stdout.strip().splitlines()[-3:]
    assert status.startswith("(False") and "TRITON_INTERPRET" in status
    assert triton.startswith("triton raised:") and "TRITON_INTERPRET" in triton
    assert graph.startswith("graph raised:")


def test_from_checkpoint_uses_action_stats(tmp_path):
    from lewm_fast.checkpoint import save_checkpoint

    m = _model(1)
    stats = {"action": {"mean": torch.tensor([1.0, 2.0]), "std": torch.tensor([0.5, 4.0])}}
    save_checkpoint(tmp_path / "m.safetensors", m, stats=stats)
    p = Planner.from_checkpoint(tmp_path / "m.safetensors", device="cpu", backend="eager",
                                num_samples=16, iterations=2, topk=4)
    r = p.plan(_frames(1), _frames(1, seed=1))
    torch.testing.assert_close(r.actions, r.blocks.view(1, -1, 2) * stats["action"]["std"] + stats["action"]["mean"])
    direct = _small(m, action_stats=stats["action"]).plan(_frames(1), _frames(1, seed=1))
    assert direct.actions.shape == r.actions.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_graph_backend_matches_eager_on_cuda(precision):
    m = _model(1).cuda()
    obs, goal = _frames(4), _frames(4, seed=1)
    kw = dict(num_samples=64, iterations=5, topk=8, device="cuda", precision=precision, seed=11)
    eager = Planner(m, backend="eager", **kw)
    graph = Planner(m, backend="graph", **kw)
    for _ in range(2):   # second call replays the captured graph; both advance the generator alike
        a, b = eager.plan(obs, goal), graph.plan(obs, goal)
        tol = 1e-4 if precision == "fp32" else 5e-2
        torch.testing.assert_close(b.blocks, a.blocks, rtol=tol, atol=tol)


def _triton_predictor_or_skip():
    from lewm_fast.planning.switches import kernels_status

    ok, why = kernels_status("cuda" if torch.cuda.is_available() else "cpu")
    if not ok:      # no Triton, or on CPU without TRITON_INTERPRET=1 (tests/conftest.py sets it)
        pytest.skip(why)


def test_triton_backend_costs_match_eager():
    """The triton predictor backend (fused kernels, KV-cached steps) vs the eager engine; on CPU
    through the Triton interpreter at tiny size."""
    _triton_predictor_or_skip()
    m = _model(1)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    m = m.to(dev)
    g = torch.Generator().manual_seed(4)
    ctx = torch.randn(2, 1, m.cfg.embed_dim, generator=g).to(dev)
    cand = torch.randn(2, 3, 5, m.cfg.action_dim, generator=g).to(dev)
    goal = torch.randn(2, m.cfg.embed_dim, generator=g).to(dev)
    want = RolloutEngine(m, predictor_backend="eager").costs(ctx, goal, cand)
    got = RolloutEngine(m, predictor_backend="triton").costs(ctx, goal, cand)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("H", [1, 2, 3, 4])
def test_triton_backend_rollout_matches_eager(H):
    """Every step of the KV-cached Triton rollout (growing window from the cache, sliding window
    recomputed, history > window) against the eager engine, whose equality with LeWM.rollout is pinned
    above; 3 + 2 rows per chunk so a chunk boundary splits the environments."""
    _triton_predictor_or_skip()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    m = _model(H).to(dev)
    g = torch.Generator().manual_seed(40 + H)
    B, S, T, D, A = 1, 5, 5, m.cfg.embed_dim, m.cfg.action_dim
    ctx, cand = torch.randn(B, H, D, generator=g).to(dev), torch.randn(B, S, T, A, generator=g).to(dev)
    hist = torch.randn(B, S, H - 1, A, generator=g).to(dev) if H > 1 else None
    want = RolloutEngine(m, predictor_backend="eager").rollout(ctx, cand, hist)
    eng = RolloutEngine(m, predictor_backend="triton", chunk_rows=3)
    assert eng.predictor.supports_kv_cache
    torch.testing.assert_close(eng.rollout(ctx, cand, hist), want, rtol=1e-4, atol=1e-5)


def test_triton_backend_does_nine_token_passes_and_one_modulation():
    """Horizon 5, history 1: windows of 1, 2, 3 (growing: 1 new token each), then 3, 3 (slid: all new)
    = 9 token passes per candidate through each block (not 12); the last block's MLP sees only the row
    pred_proj reads (5 per candidate); the modulation runs once per iteration."""
    _triton_predictor_or_skip()
    m = _model(1)
    eng = RolloutEngine(m, predictor_backend="triton")
    rows = {"adaln": 0, "norm": 0, "mlp": 0}
    adaln, attention, mlp, norm, by_token = eng.predictor._k

    def counted(key, fn, per_row):
        def wrapped(x, *a, **k):
            rows[key] += x.numel() // x.shape[-1] if per_row else 1
            return fn(x, *a, **k)
        return wrapped
    eng.predictor._k = (counted("adaln", adaln, False), attention, counted("mlp", mlp, True), counted("norm", norm, True),
                        by_token)
    S = 4
    g = torch.Generator().manual_seed(0)
    eng.costs(torch.randn(1, 1, m.cfg.embed_dim, generator=g), torch.randn(1, m.cfg.embed_dim, generator=g),
              torch.randn(1, S, 5, m.cfg.action_dim, generator=g))
    depth = m.cfg.pred_depth
    assert rows["adaln"] == 1
    assert rows["norm"] == S * (9 * depth + 5)      # + the final norm: one row per step
    assert rows["mlp"] == S * (9 * (depth - 1) + 5)


def test_triton_backend_planner_matches_eager():
    _triton_predictor_or_skip()
    m = _model(1)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    kw = dict(num_samples=8, iterations=2, topk=3, seed=2, device=dev)
    obs, goal = _frames(1), _frames(1, seed=1)
    a = Planner(m, backend="eager", **kw).plan(obs, goal)
    b = Planner(m, backend="triton", **kw).plan(obs, goal)
    assert b.info["backend"] == "triton" and b.info["kernels"] == "triton" and b.info["predictor"] == "TritonPredictor"
    assert a.info["kernels"] == "torch" and a.info["predictor"] == "EagerPredictor" and a.info["cuda_graph"] is False
    torch.testing.assert_close(b.blocks, a.blocks, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.cost, a.cost, rtol=1e-4, atol=1e-6)


_ALLOCATOR_SCRIPT = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from helpers import random_model
from lewm_fast.planner import Planner
from lewm_fast.planning import allocator
torch.manual_seed(0)
model = random_model()
g = torch.Generator().manual_seed(1)
obs = torch.randint(0, 256, (2, 3, model.cfg.image_size, model.cfg.image_size), generator=g, dtype=torch.uint8)
goal = torch.randint(0, 256, obs.shape, generator=g, dtype=torch.uint8)
res = Planner(model, device="cpu", seed=3, num_samples=32, iterations=3, topk=4).plan(obs, goal)
print(allocator._applied, repr(res.blocks.flatten().tolist()), repr(res.cost.tolist()))
"""


def test_keeping_freed_memory_changes_no_plan(tmp_path):
    # The allocator setting (planning/allocator.py) moves bytes, never values: a plan made with it is
    # bit-identical to one made in a process that opted out.
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "plan.py"
    script.write_text(_ALLOCATOR_SCRIPT)
    out = {}
    for keep in ("1", "0"):
        env = {**os.environ, "LEWM_FAST_KEEP_FREED_MEMORY": keep}
        run = subprocess.run([sys.executable, str(script), str(Path(__file__).parent)], env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        out[keep] = run.stdout.split(" ", 1)
    import platform
    if platform.libc_ver()[0] == "glibc":
        assert out["1"][0] == "True"
    assert out["0"][0] == "False"
    assert out["1"][1] == out["0"][1]
