"""Planner(compile=True): the eager predictor step through torch.compile computes what the eager step
computes (same plans), says so in its report, and falls back to the eager step when compiling fails."""
import pytest
import torch

import lewm_fast.planning.backends as backends
from lewm_fast.model import LeWM, LeWMConfig
from lewm_fast.planner import Planner


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = LeWM(LeWMConfig.tiny()).eval()
    for blk in m.predictor.transformer.layers:      # AdaLN-zero starts at identity: give it work to do
        torch.nn.init.normal_(blk.adaLN_modulation[1].weight, std=0.05)
    return m


def _frames(m, seed):
    g = torch.Generator().manual_seed(seed)
    s = m.cfg.image_size
    return torch.randint(0, 255, (2, 1, 3, s, s), dtype=torch.uint8, generator=g)


def _plan(m, precision, **kw):
    planner = Planner(m, device="cpu", backend="eager", precision=precision, num_samples=32, iterations=3, topk=4,
                      seed=1, **kw)
    return planner.plan(_frames(m, 0), _frames(m, 1))


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-5), ("bf16", 1e-3)])
def test_compiled_step_plans_what_the_eager_step_plans(model, precision, tol):
    eager, compiled = _plan(model, precision), _plan(model, precision, compile=True)
    assert compiled.info["predictor"] == "EagerPredictor+compile" and eager.info["predictor"] == "EagerPredictor"
    # the same elites each iteration give the same plan; fused loops round differently (fp32 ~1e-7)
    torch.testing.assert_close(compiled.blocks, eager.blocks, atol=tol, rtol=0)
    torch.testing.assert_close(compiled.cost, eager.cost, atol=0, rtol=tol)


def test_a_failing_compile_falls_back_to_the_eager_step(model, monkeypatch):
    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("inductor: no C++ compiler")
        return run

    monkeypatch.setattr(backends.torch, "compile", broken_compile)
    eager = _plan(model, "fp32")
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        planner = Planner(model, device="cpu", backend="eager", num_samples=32, iterations=3, topk=4, seed=1,
                          compile=True)
        res = planner.plan(_frames(model, 0), _frames(model, 1))
    assert res.info["predictor"] == "EagerPredictor"                 # the report names what ran
    assert "no C++ compiler" in planner.engine.predictor.compile_error
    assert torch.equal(res.blocks, eager.blocks) and torch.equal(res.cost, eager.cost)


def test_bad_windows_raise_before_the_compiled_code(model):
    p = backends.EagerPredictor(model, compile=True)
    D = model.cfg.embed_dim
    p.begin(torch.zeros(4, 6, D))
    with pytest.raises(ValueError, match="x must be"):
        p.window(torch.zeros(3, 1, D), 0, 0, None, False)              # 3 rows where begin() had 4
    assert p.compiled and p.compile_error is None                     # not mistaken for a compile failure


def test_compile_is_for_the_torch_kernels(model):
    with pytest.raises(ValueError, match="already fused"):
        backends.make_predictor_backend("triton", model, "fp32", compile=True)
