"""adaln_modulation kernel (SiLU + Linear) vs its torch reference and the model's module."""
import pytest
import torch

from lewm_fast.kernels.adaln_modulation import adaln_modulation, adaln_modulation_ref
from lewm_fast.model import ConditionalBlock

from kernel_testing import assert_close, rand


def _inputs(lead, K, N, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = rand(*lead, K, gen=g, scale=2.0)
    w, b = rand(N, K, gen=g, scale=K ** -0.5), rand(N, gen=g, scale=0.1)
    return (t.to(device=device, dtype=dtype) for t in (c, w, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lead,K,N", [((1,), 32, 192), ((3, 2), 48, 288), ((7, 3), 32, 100)])
def test_matches_reference(lead, K, N, dtype, device):
    c, w, b = _inputs(lead, K, N, dtype, device)
    assert_close(adaln_modulation(c, w, b), adaln_modulation_ref(c, w, b), dtype)


@pytest.mark.parametrize("precision", ["ieee", "tf32"])
def test_full_size_all_blocks_stacked(precision, device):
    """The predictor's use: 6 blocks x 1152 outputs from D = 192, 3 sequences of 3 tokens."""
    c, w, b = _inputs((3, 3), 192, 6 * 1152, torch.float32, device)
    got = adaln_modulation(c, w, b, precision=precision)
    tol = dict(atol=2e-5, rtol=1e-5) if precision == "ieee" else dict(atol=2e-2, rtol=1e-2)  # tf32 on GPU only
    torch.testing.assert_close(got, adaln_modulation_ref(c, w, b), **tol)


def test_reference_is_the_models_module():
    blk = ConditionalBlock(32, heads=2, dim_head=16, mlp_dim=64, dropout=0.0)
    with torch.no_grad():
        blk.adaLN_modulation[1].weight.normal_(0, 0.2)
        blk.adaLN_modulation[1].bias.normal_(0, 0.2)
        c = rand(4, 3, 32, seed=3)
        lin = blk.adaLN_modulation[1]
        torch.testing.assert_close(adaln_modulation_ref(c, lin.weight, lin.bias), blk.adaLN_modulation(c))


def test_rejects_bad_inputs(device):
    c, w, b = _inputs((2,), 32, 64, torch.float32, device)
    with pytest.raises(ValueError, match="shape"):
        adaln_modulation(c, w[:, :16], b)
    with pytest.raises(TypeError, match="dtype"):
        adaln_modulation(c, w.double(), b)
    with pytest.raises(ValueError, match="precision"):
        adaln_modulation(c, w, b, precision="fp16")
    with pytest.raises(ValueError, match="contiguous"):
        adaln_modulation(c, w.t().contiguous().t(), b)


def test_out_dtype_rounds_the_fp32_result_once(device):
    """out_dtype=bf16 (the planner's bf16 modulation): the fp32 kernel result rounded to bf16."""
    c, w, b = rand(6, 32, device=device, seed=3), rand(96, 32, device=device, seed=4, scale=0.2), rand(96, device=device)
    got = adaln_modulation(c, w, b, out_dtype=torch.bfloat16)
    assert got.dtype == torch.bfloat16
    # within one bf16 ulp: the 3.7.1 interpreter's fp32 -> bf16 store truncates where GPUs round to nearest
    torch.testing.assert_close(got.float(), adaln_modulation(c, w, b).bfloat16().float(), atol=1e-6, rtol=2 ** -7)
    with pytest.raises(TypeError, match="out_dtype"):
        adaln_modulation(c, w, b, out_dtype=torch.float64)
