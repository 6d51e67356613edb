"""The whole predictor forward through the kernels vs lewm_fast.model.Predictor (eval mode)."""
import pytest
import torch

from lewm_fast.kernels.predictor import pack_predictor, predictor_forward_ref, predictor_forward_triton
from lewm_fast.model import LeWMConfig

from kernel_testing import rand, random_predictor


@pytest.mark.parametrize("B", [1, 3, 7])
@pytest.mark.parametrize("T", [1, 2, 3])
def test_tiny_predictor_matches_model(B, T, device):
    cfg = LeWMConfig.tiny()
    pred = random_predictor(cfg).to(device)
    emb, act = rand(B, T, cfg.embed_dim, seed=1, device=device), rand(B, T, cfg.embed_dim, seed=2, device=device)
    with torch.no_grad():
        want = pred(emb, act)
        got = predictor_forward_triton(pred, emb, act)
        ref = predictor_forward_ref(pred, emb, act)
    assert want.abs().max() > 0.5 and (want - pred.transformer.norm(emb + pred.pos_embedding[:, :T])).abs().max() > 0.1
    torch.testing.assert_close(ref, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_packed_weights_and_fp16(device):
    """A pack made once gives the same result as passing the module; an fp16 pack stays close."""
    cfg = LeWMConfig.tiny(pred_depth=3, pred_heads=2, pred_dim_head=16)
    pred = random_predictor(cfg, seed=3).to(device)
    emb, act = rand(5, 3, cfg.embed_dim, seed=4, device=device), rand(5, 3, cfg.embed_dim, seed=5, device=device)
    with torch.no_grad():
        want = pred(emb, act)
        packed = pack_predictor(pred)
        assert torch.equal(predictor_forward_triton(packed, emb, act), predictor_forward_triton(pred, emb, act))
        half = predictor_forward_triton(pack_predictor(pred, dtype=torch.float16), emb, act)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), want, atol=3e-2, rtol=3e-2)


def test_full_size_predictor(device):
    """The paper's predictor (D 192, 6 blocks, 16 x 64 heads, MLP 2048) on 2 windows of 3 frames."""
    cfg = LeWMConfig()
    pred = random_predictor(cfg, seed=6).to(device)
    emb, act = rand(2, 3, 192, seed=7, device=device), rand(2, 3, 192, seed=8, device=device)
    with torch.no_grad():
        want = pred(emb, act)
        got = predictor_forward_triton(pred, emb, act)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_rejects_bad_windows(device):
    cfg = LeWMConfig.tiny()
    pred = random_predictor(cfg).to(device)
    D = cfg.embed_dim
    with pytest.raises(ValueError, match="frames"):
        predictor_forward_triton(pred, torch.zeros(1, 4, D, device=device), torch.zeros(1, 4, D, device=device))
    with pytest.raises(ValueError, match="wide"):
        predictor_forward_triton(pred, torch.zeros(1, 2, D + 1, device=device), torch.zeros(1, 2, D + 1, device=device))
    with pytest.raises(ValueError, match="act_emb"):
        predictor_forward_triton(pred, torch.zeros(1, 2, D, device=device), torch.zeros(1, 3, D, device=device))
    with pytest.raises(ValueError, match="precision"):
        predictor_forward_triton(pred, torch.zeros(1, 2, D, device=device), torch.zeros(1, 2, D, device=device),
                                 precision="fast")


def test_bf16_matmul_mode_keeps_fp32_activations(device):
    """precision="bf16" on an fp32 model (the planner's bf16): fp32 output, products from bf16-rounded
    weights (and, on a GPU, bf16-rounded activation tiles), close to the fp32 model."""
    cfg = LeWMConfig.tiny()
    pred = random_predictor(cfg, seed=9).to(device)
    emb, act = rand(4, 3, cfg.embed_dim, seed=1, device=device), rand(4, 3, cfg.embed_dim, seed=2, device=device)
    with torch.no_grad():
        got = predictor_forward_triton(pred, emb, act, precision="bf16")
        ref = predictor_forward_ref(pred, emb, act, precision="bf16")
        want = pred(emb, act)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=3e-2, rtol=3e-2)
    assert (ref - want).abs().max() > 1e-5            # the reference really used rounded weights
    torch.testing.assert_close(got, want, atol=1e-1, rtol=1e-1)


def test_precision_names_and_pack_checks(device):
    cfg = LeWMConfig.tiny()
    pred = random_predictor(cfg).to(device)
    emb, act = rand(2, 2, cfg.embed_dim, seed=1, device=device), rand(2, 2, cfg.embed_dim, seed=2, device=device)
    with torch.no_grad():
        assert torch.equal(predictor_forward_triton(pred, emb, act, precision="fp32"),
                           predictor_forward_triton(pred, emb, act, precision="ieee"))
        with pytest.raises(ValueError, match="pack_predictor"):
            predictor_forward_triton(pack_predictor(pred), emb, act, precision="bf16")
        with pytest.raises(ValueError, match="pack_predictor"):
            predictor_forward_triton(pack_predictor(pred, precision="bf16"), emb, act, precision="ieee")


def test_cached_pack_follows_parameter_updates(device):
    """Passing the module reuses a cached pack, but an in-place weight update (a training step,
    load_state_dict) must be seen by the next call."""
    cfg = LeWMConfig.tiny()
    pred = random_predictor(cfg, seed=4).to(device)
    emb, act = rand(3, 3, cfg.embed_dim, seed=1, device=device), rand(3, 3, cfg.embed_dim, seed=2, device=device)
    with torch.no_grad():
        before = predictor_forward_triton(pred, emb, act)
        pred.transformer.layers[0].mlp.net[1].weight.mul_(-1.0)
        pred.transformer.layers[1].adaLN_modulation[1].bias.add_(0.3)
        after = predictor_forward_triton(pred, emb, act)
        want = pred(emb, act)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("T", [1, 2, 3])
def test_last_only_is_the_last_row(T, device):
    """last_only=True (what the planner reads) returns the last token of the full forward."""
    cfg = LeWMConfig.tiny()
    pred = random_predictor(cfg, seed=5).to(device)
    emb, act = rand(7, T, cfg.embed_dim, seed=1, device=device), rand(7, T, cfg.embed_dim, seed=2, device=device)
    with torch.no_grad():
        want = pred(emb, act)[:, -1:]
        got = predictor_forward_triton(pred, emb, act, last_only=True)
        ref = predictor_forward_ref(pred, emb, act, last_only=True)
    assert got.shape == (7, 1, cfg.embed_dim)
    torch.testing.assert_close(ref, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
