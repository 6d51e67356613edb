"""Full-size checks on a GPU: planner-sized batches (300 candidates x 4 environments), D = 192: the
predictor step (TritonPredictor vs EagerPredictor, the model's Predictor as the fp32 expectation) and
each kernel vs its reference. Skipped on CPU (the interpreter is far too slow for these sizes;
test_kernel_predictor.py and the per-kernel files cover the maths there)."""
import pytest
import torch

from lewm_fast.kernels.adaln_modulation import adaln_modulation, adaln_modulation_ref
from lewm_fast.kernels.attention import attention, attention_ref
from lewm_fast.kernels.mlp import mlp, mlp_ref
from lewm_fast.kernels.norm_modulate import norm_modulate, norm_modulate_ref
from lewm_fast.model import LeWMConfig
from lewm_fast.planning.backends import EagerPredictor, TritonPredictor

from kernel_testing import grow_window, rand, random_lewm

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

N = 300 * 4
D = 192


def _err(got, want):
    return (got.float() - want.float()).abs().max().item()


def _setup():
    model = random_lewm(LeWMConfig(), seed=0).cuda()
    emb, act = rand(N, 5, D, seed=1, device="cuda"), rand(N, 5, D, seed=2, device="cuda")
    return model, emb, act


def _steps(step, emb, act):
    """The growing window's 3 steps, then the window slid by 2 (recomputed at action offset 2)."""
    with torch.inference_mode():
        outs = grow_window(step, emb[:, :3], act)
        outs.append(step.window(emb[:, 2:5], 2, 0, None, keep_cache=False)[0])
    return outs


def _model_lasts(model, emb, act):
    with torch.no_grad():          # conftest turns TF32 off: an exact fp32 reference
        return [model.predictor(emb[:, :p], act[:, :p])[:, -1] for p in (1, 2, 3)] + \
            [model.predictor(emb[:, 2:5], act[:, 2:5])[:, -1]]


def test_step_fp32_ieee_matches_eager_and_model():
    model, emb, act = _setup()
    eager = _steps(EagerPredictor(model, "fp32"), emb, act)
    triton = _steps(TritonPredictor(model, "fp32"), emb, act)
    for got, e, w in zip(triton, eager, _model_lasts(model, emb, act)):
        torch.testing.assert_close(e, w, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got, e, atol=1e-4, rtol=1e-4)


def test_step_tf32_close_to_model():
    model, emb, act = _setup()
    for got, w in zip(_steps(TritonPredictor(model, "tf32"), emb, act), _model_lasts(model, emb, act)):
        torch.testing.assert_close(got, w, atol=3e-2, rtol=3e-2)


def test_step_bf16_no_worse_than_eager_bf16():
    """precision="bf16" (bf16 matmul operands, fp32 residual stream): against exact fp32, at most about
    the error of the eager step in the same precision."""
    model, emb, act = _setup()
    eager = _steps(EagerPredictor(model, "bf16"), emb, act)
    triton = _steps(TritonPredictor(model, "bf16"), emb, act)
    for got, e, w in zip(triton, eager, _model_lasts(model, emb, act)):
        assert got.dtype == torch.float32
        assert _err(got, w) <= 1.5 * _err(e, w) + 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T", [1, 2, 3])
def test_kernels_full_size(dtype, T):
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=8e-2, rtol=5e-2)
    g = torch.Generator().manual_seed(T)
    r = lambda *s, scale=1.0: rand(*s, gen=g, scale=scale).to("cuda", dtype)  # noqa: E731
    x, mod = r(N, T, D), r(N, T, 6 * D, scale=0.5)
    shift, scale, gate = mod[..., :D], mod[..., D:2 * D], mod[..., 2 * D:3 * D]
    lnw, lnb = 1 + r(D, scale=0.2), r(D, scale=0.2)
    w_mod, b_mod = r(6 * D, D, scale=D ** -0.5), r(6 * D, scale=0.1)
    torch.testing.assert_close(adaln_modulation(x, w_mod, b_mod).float(),
                               adaln_modulation_ref(x, w_mod, b_mod).float(), **tol)
    xn = norm_modulate(x, shift, scale, lnw, lnb)
    torch.testing.assert_close(xn.float(), norm_modulate_ref(x, shift, scale, lnw, lnb).float(), **tol)
    w_qkv, w_out, b_out = r(3072, D, scale=D ** -0.5), r(D, 1024, scale=1024 ** -0.5), r(D, scale=0.1)
    torch.testing.assert_close(attention(xn, w_qkv, w_out, b_out, x, gate, 16).float(),
                               attention_ref(xn, w_qkv, w_out, b_out, x, gate, 16).float(), **tol)
    w1, b1, w2, b2 = r(2048, D, scale=D ** -0.5), r(2048, scale=0.2), r(D, 2048, scale=2048 ** -0.5), r(D, scale=0.2)
    args = (x, shift, scale, gate, lnw, lnb, w1, b1, w2, b2)
    torch.testing.assert_close(mlp(*args).float(), mlp_ref(*args).float(), **tol)
