"""norm_modulate kernel vs its torch reference (and the reference vs the model's modules)."""
import pytest
import torch

from lewm_fast.kernels.norm_modulate import norm_modulate, norm_modulate_ref
from lewm_fast.model import Attention, modulated_norm

from kernel_testing import assert_close, rand


def _inputs(N, T, D, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = rand(N, T, D, gen=g, scale=3.0) + 0.5
    mod = rand(N, T, 6 * D, gen=g, scale=0.5)          # modulation vector; shift/scale are strided chunks
    w, b = 1 + rand(D, gen=g, scale=0.3), rand(D, gen=g, scale=0.3)
    cast = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    mod = cast(mod)
    return cast(x), mod[..., :D], mod[..., D:2 * D], cast(w), cast(b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("N,T,D", [(1, 1, 32), (3, 2, 48), (7, 3, 192)])
def test_matches_reference(N, T, D, dtype, device):
    x, shift, scale, w, b = _inputs(N, T, D, dtype, device)
    assert shift.stride(-2) == 6 * D                    # read in place through its row stride
    got = norm_modulate(x, shift, scale, w, b)
    assert_close(got, norm_modulate_ref(x, shift, scale, w, b), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_plain_affine_layer_norm(dtype, device):
    x, _, _, w, b = _inputs(5, 3, 40, dtype, device)
    got = norm_modulate(x, None, None, w, b, eps_affine=1e-5)
    want = torch.nn.functional.layer_norm(x.float(), (40,), w.float(), b.float(), eps=1e-5).to(dtype)
    assert_close(got, want, dtype)


def test_reference_is_the_models_math():
    """The *_ref is the model's LN1 -> modulate -> Attention.norm (lewm_fast.model.modulated_norm)."""
    x, shift, scale, _, _ = _inputs(3, 3, 32, torch.float32, "cpu")
    attn = Attention(32, heads=2, dim_head=16, dropout=0.0)
    with torch.no_grad():
        attn.norm.weight.normal_(1, 0.2)
        attn.norm.bias.normal_(0, 0.2)
        want = modulated_norm(x, shift, 1 + scale, 1e-6, attn.norm.weight, attn.norm.bias, attn.norm.eps)
        got = norm_modulate_ref(x, shift, scale, attn.norm.weight, attn.norm.bias)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_constant_rows_do_not_blow_up(device):
    """Zero-variance rows: rstd = 1/sqrt(eps) times a zero-centred row gives exactly shift, then LN."""
    D = 32
    x = torch.full((2, 1, D), 3.0, device=device)
    shift = rand(2, 1, D, seed=1, device=device)
    scale = rand(2, 1, D, seed=2, device=device)
    w, b = torch.ones(D, device=device), torch.zeros(D, device=device)
    got = norm_modulate(x, shift, scale, w, b)
    assert torch.isfinite(got).all()
    assert_close(got, norm_modulate_ref(x, shift, scale, w, b), torch.float32)


def test_rejects_bad_inputs(device):
    x, shift, scale, w, b = _inputs(2, 2, 32, torch.float32, device)
    with pytest.raises(TypeError, match="dtype"):
        norm_modulate(x, shift.double(), scale, w, b)
    with pytest.raises(ValueError, match="shape"):
        norm_modulate(x, shift, scale, w[:16], b)
    with pytest.raises(ValueError, match="both shift and scale"):
        norm_modulate(x, shift, None, w, b)
    with pytest.raises(TypeError, match="supported"):
        norm_modulate(x.double(), None, None, w.double(), b.double())


def test_modulation_in_another_dtype(device):
    """bf16 shift/scale with fp32 x (the planner's bf16 mode): upcast on load, fp32 maths."""
    x, shift, scale, w, b = _inputs(3, 2, 32, torch.float32, device)
    sh, sc = shift.bfloat16(), scale.bfloat16()
    got = norm_modulate(x, sh, sc, w, b)
    torch.testing.assert_close(got, norm_modulate_ref(x, sh.float(), sc.float(), w, b), atol=2e-5, rtol=1e-5)
