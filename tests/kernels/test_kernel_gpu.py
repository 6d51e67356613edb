"""Full-size checks on a GPU: planner-sized batches (300 candidates x 4 environments), T = 1..3, D = 192.
Skipped on CPU (the interpreter is far too slow for these sizes; the other files cover the maths there)."""
import pytest
import torch

from lewm_fast.kernels.adaln_modulation import adaln_modulation, adaln_modulation_ref
from lewm_fast.kernels.attention import attention, attention_ref
from lewm_fast.kernels.mlp import mlp, mlp_ref
from lewm_fast.kernels.norm_modulate import norm_modulate, norm_modulate_ref
from lewm_fast.kernels.predictor import pack_predictor, predictor_forward_triton
from lewm_fast.model import LeWMConfig

from kernel_testing import rand, random_predictor

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

N = 300 * 4
D = 192


def _err(got, want):
    return (got.float() - want.float()).abs().max().item()


@pytest.mark.parametrize("T", [1, 2, 3])
def test_predictor_fp32_ieee_matches_model(T):
    pred = random_predictor(LeWMConfig(), seed=0).cuda()
    emb, act = rand(N, T, D, seed=1, device="cuda"), rand(N, T, D, seed=2, device="cuda")
    with torch.no_grad():
        want = pred(emb, act)            # conftest turns TF32 off: an exact fp32 reference
        got = predictor_forward_triton(pred, emb, act, precision="ieee")
        last = predictor_forward_triton(pred, emb, act, precision="ieee", last_only=True)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(last, want[:, -1:], atol=1e-4, rtol=1e-4)


def test_predictor_tf32_close_to_model():
    pred = random_predictor(LeWMConfig(), seed=0).cuda()
    emb, act = rand(N, 3, D, seed=1, device="cuda"), rand(N, 3, D, seed=2, device="cuda")
    with torch.no_grad():
        got = predictor_forward_triton(pred, emb, act, precision="tf32")
        want = pred(emb, act)
    torch.testing.assert_close(got, want, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("T", [1, 3])
def test_predictor_bf16_no_worse_than_eager_bf16(T):
    """bf16 kernels vs the fp32 model: at most about the error of the eager model run in bf16."""
    pred = random_predictor(LeWMConfig(), seed=0).cuda()
    emb, act = rand(N, T, D, seed=1, device="cuda"), rand(N, T, D, seed=2, device="cuda")
    with torch.no_grad():
        want = pred(emb, act)
        got = predictor_forward_triton(pack_predictor(pred, dtype=torch.bfloat16), emb, act)
        eager_bf16 = pred.to(torch.bfloat16)(emb.bfloat16(), act.bfloat16())
    assert got.dtype == torch.bfloat16
    assert _err(got, want) <= 1.5 * _err(eager_bf16, want) + 1e-2


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


def test_predictor_planner_bf16_mode_no_worse_than_autocast():
    """precision="bf16" on the fp32 model (bf16 matmul operands, fp32 residual stream): at most about
    the error of the eager fp32 model under bf16 autocast, measured against exact fp32."""
    pred = random_predictor(LeWMConfig(), seed=0).cuda()
    emb, act = rand(N, 3, D, seed=1, device="cuda"), rand(N, 3, D, seed=2, device="cuda")
    with torch.no_grad():
        want = pred(emb, act)
        got = predictor_forward_triton(pred, emb, act, precision="bf16")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            auto = pred(emb, act)
    assert got.dtype == torch.float32
    assert _err(got, want) <= 1.5 * _err(auto, want) + 1e-2
