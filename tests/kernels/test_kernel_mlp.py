"""Fused AdaLN-modulated MLP block vs its torch reference and the model's modules."""
import pytest
import torch

from lewm_fast.kernels.mlp import mlp, mlp_ref
from lewm_fast.model import ConditionalBlock, mlp_half

from kernel_testing import assert_close, rand


def _inputs(lead, D, hidden, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = rand(*lead, D, gen=g, scale=2.0)
    mod = rand(*lead, 3 * D, gen=g, scale=0.5)          # shift | scale | gate, read as strided chunks
    lnw, lnb = 1 + rand(D, gen=g, scale=0.2), rand(D, gen=g, scale=0.2)
    w1, b1 = rand(hidden, D, gen=g, scale=D ** -0.5), rand(hidden, gen=g, scale=0.2)
    w2, b2 = rand(D, hidden, gen=g, scale=hidden ** -0.5), rand(D, gen=g, scale=0.2)
    cast = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    mod = cast(mod)
    return (cast(x), mod[..., :D], mod[..., D:2 * D], mod[..., 2 * D:], cast(lnw), cast(lnb), cast(w1), cast(b1),
            cast(w2), cast(b2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lead,D,hidden", [((1, 1), 32, 64), ((3, 2), 48, 128), ((7, 3), 32, 96)])
def test_matches_reference(lead, D, hidden, dtype, device):
    args = _inputs(lead, D, hidden, dtype, device)
    assert_close(mlp(*args), mlp_ref(*args), dtype)


@pytest.mark.parametrize("precision", ["ieee", "tf32"])
def test_full_size(precision, device):
    """192 -> 2048 -> 192, 2 sequences x 3 tokens."""
    args = _inputs((2, 3), 192, 2048, torch.float32, device, seed=1)
    tol = dict(atol=2e-5, rtol=1e-5) if precision == "ieee" else dict(atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(mlp(*args, precision=precision), mlp_ref(*args), **tol)


def test_bf16_weights_with_fp32_activations(device):
    x, shift, scale, gate, lnw, lnb, w1, b1, w2, b2 = _inputs((3, 3), 48, 128, torch.float32, device)
    got = mlp(x, shift, scale, gate, lnw, lnb, w1.bfloat16(), b1, w2.bfloat16(), b2)
    assert got.dtype == torch.float32
    want = mlp_ref(x, shift, scale, gate, lnw, lnb, w1.bfloat16().float(), b1, w2.bfloat16().float(), b2)
    torch.testing.assert_close(got, want, atol=3e-2, rtol=2e-2)


def test_reference_is_the_models_block_half():
    """mlp_ref == the model's MLP half (lewm_fast.model.mlp_half, what ConditionalBlock.forward runs), eval mode."""
    blk = ConditionalBlock(32, heads=2, dim_head=16, mlp_dim=64, dropout=0.1).eval()
    with torch.no_grad():
        for p in blk.mlp.parameters():
            p.normal_(0, 0.3)
        x, shift, scale, gate = (rand(3, 2, 32, seed=s) for s in range(4))
        want = mlp_half(blk.weights(), x, shift, 1 + scale, gate)
        ln, fc1, fc2 = blk.mlp.net[0], blk.mlp.net[1], blk.mlp.net[4]
        got = mlp_ref(x, shift, scale, gate, ln.weight, ln.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_rejects_bad_inputs(device):
    x, shift, scale, gate, lnw, lnb, w1, b1, w2, b2 = _inputs((2, 2), 32, 64, torch.float32, device)
    with pytest.raises(ValueError, match="w2"):
        mlp(x, shift, scale, gate, lnw, lnb, w1, b1, w2[:, :32], b2)
    with pytest.raises(TypeError, match="dtype"):
        mlp(x, shift, scale, gate.double(), lnw, lnb, w1, b1, w2, b2)
    with pytest.raises(ValueError, match="precision"):
        mlp(x, shift, scale, gate, lnw, lnb, w1, b1, w2, b2, precision="fp8")


def test_modulation_in_another_dtype(device):
    """The planner stores the modulation in its matmul dtype (bf16): the kernel upcasts it on load,
    so the result is the fp32 maths on the bf16-rounded modulation."""
    x, shift, scale, gate, lnw, lnb, w1, b1, w2, b2 = _inputs((3, 2), 32, 64, torch.float32, device)
    sh, sc, gt = (t.bfloat16() for t in (shift, scale, gate))
    got = mlp(x, sh, sc, gt, lnw, lnb, w1, b1, w2, b2)
    want = mlp_ref(x, sh.float(), sc.float(), gt.float(), lnw, lnb, w1, b1, w2, b2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_precision_names_are_the_planners(device):
    """One vocabulary: "fp32" is the exact mode (= "ieee"); "bf16" with fp32 weights is exact too (the
    weights' dtype decides the dots)."""
    args = _inputs((2, 3), 32, 64, torch.float32, device)
    want = mlp(*args, precision="ieee")
    for name in ("fp32", "bf16"):
        torch.testing.assert_close(mlp(*args, precision=name), want, atol=0, rtol=0)
