import pytest
import torch

from helpers import random_model
from lewm_fast.model import LeWM, LeWMConfig, count_parameters


def test_paper_config_parameter_counts():
    # spec A.5: ViT 5,501,376; predictor 10,791,360 (1,798,400 per layer); projector and pred_proj
    # 792,768 each; action encoder 156,206 (PushT); total about 18.03 M
    m = LeWM(LeWMConfig())
    assert count_parameters(m.encoder) == 5_501_376
    assert count_parameters(m.predictor) == 10_791_360
    assert count_parameters(m.predictor.transformer.layers[0]) == 1_798_400
    assert count_parameters(m.projector) == count_parameters(m.pred_proj) == 792_768
    assert count_parameters(m.action_encoder) == 156_206
    assert count_parameters(m) == 18_034_478


def test_shapes_and_untrained_predictor_is_layernorm():
    cfg = LeWMConfig.tiny()
    m = LeWM(cfg).eval()
    px = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8)
    emb = m.encode(px)
    assert emb.shape == (2, 3, cfg.embed_dim)
    act = m.embed_actions(torch.randn(2, 3, cfg.action_dim))
    assert act.shape == (2, 3, cfg.embed_dim)
    # gates start at zero: the predictor is LayerNorm(x + pos) (spec A.4)
    out = m.predictor(emb, act)
    ln = m.predictor.transformer.norm
    torch.testing.assert_close(out, ln(emb + m.predictor.pos_embedding[:, :3]))


def slow_rollout(m: LeWM, ctx: torch.Tensor, actions: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
    """Spec C.1 written out one (b, s) at a time: window [lo, H+t) of frames and action blocks."""
    B, S, T, _ = actions.shape
    H = ctx.shape[1]
    out = torch.empty(B, S, H + T, ctx.shape[-1])
    for b in range(B):
        for s in range(S):
            acts = actions[b, s] if history is None else torch.cat([history[b, s], actions[b, s]])
            a_emb = m.embed_actions(acts[None])[0]
            frames = [ctx[b, h] for h in range(H)]
            for t in range(T):
                lo = max(0, H + t - m.cfg.num_frames)
                window = torch.stack(frames[lo:])[None]
                pred = m.pred_proj(m.predictor(window, a_emb[lo:H + t][None]))
                frames.append(pred[0, -1])
            out[b, s] = torch.stack(frames)
    return out


@pytest.mark.parametrize("H", [1, 3])
def test_rollout_matches_slow_step_by_step(H):
    m = random_model()
    B, S, T = 2, 3, 5
    g = torch.Generator().manual_seed(H)
    px = torch.randint(0, 256, (B, H, 3, 32, 32), dtype=torch.uint8, generator=g)
    actions = torch.randn(B, S, T, m.cfg.action_dim, generator=g)
    history = torch.randn(B, S, H - 1, m.cfg.action_dim, generator=g) if H > 1 else None
    with torch.no_grad():
        fast = m.rollout(actions, pixels=px, action_history=history)
        slow = slow_rollout(m, m.encode(px), actions, history)
    assert fast.shape == (B, S, H + T, m.cfg.embed_dim)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_rollout_history_shared_over_samples_and_emb_context():
    m = random_model()
    px = torch.randint(0, 256, (1, 2, 3, 32, 32), dtype=torch.uint8)
    acts = torch.randn(1, 4, 3, m.cfg.action_dim)
    hist = torch.randn(1, 1, m.cfg.action_dim)
    with torch.no_grad():
        a = m.rollout(acts, pixels=px, action_history=hist)
        b = m.rollout(acts, emb=m.encode(px), action_history=hist[:, None].expand(1, 4, 1, -1))
    torch.testing.assert_close(a, b)


def test_rollout_bad_inputs():
    m = random_model()
    px = torch.randint(0, 256, (1, 2, 3, 32, 32), dtype=torch.uint8)
    acts = torch.randn(1, 4, 3, m.cfg.action_dim)
    with pytest.raises(ValueError, match="action_history"):
        m.rollout(acts, pixels=px)
    with pytest.raises(ValueError, match="exactly one"):
        m.rollout(acts)
    with pytest.raises(ValueError, match="width"):
        m.rollout(torch.randn(1, 4, 3, 7), pixels=px[:, :1])
    with pytest.raises(ValueError, match="num_frames"):
        m.predictor(torch.randn(1, 4, m.cfg.embed_dim), torch.randn(1, 4, m.cfg.embed_dim))
    with pytest.raises(TypeError, match="uint8"):
        m.encode(torch.zeros(1, 3, 32, 32, dtype=torch.int32))


def test_encode_resizes_other_frame_sizes():
    m = random_model()
    px = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    small = torch.nn.functional.interpolate(m.normalize_pixels(px), size=(32, 32), mode="bilinear", antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(m.encode(px), m.encode(small))


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        LeWMConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="unknown LeWMConfig fields"):
        LeWMConfig.from_dict({"bogus": 1})
    cfg = LeWMConfig.tiny(history_len=3)
    assert LeWMConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.action_dim == cfg.frameskip * cfg.env_action_dim == 10


def test_no_hard_coded_device():
    # every tensor the model creates follows its parameters: meta device exercises that without a GPU
    with torch.device("meta"):
        m = LeWM(LeWMConfig.tiny()).eval()
        out = m.rollout(torch.randn(1, 2, 3, 10), emb=torch.randn(1, 1, 32))
    assert out.device.type == "meta"


def _textbook_block(blk, x, c):
    """AdaLN-zero block as the reference writes it (spec A.4): LayerNorm, x * (1 + scale) + shift, the
    branch's own LayerNorm, causal SDPA / GELU MLP, gated residuals. Independent of model.attention_half."""
    F = torch.nn.functional
    sh_a, sc_a, g_a, sh_f, sc_f, g_f = blk.adaLN_modulation(c).chunk(6, dim=-1)
    a = blk.attn
    B, T, D = x.shape
    h = a.norm(blk.norm1(x) * (1 + sc_a) + sh_a)
    q, k, v = a.to_qkv(h).view(B, T, 3, a.heads, a.dim_head).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)
    x = x + g_a * a.to_out(o)
    return x + g_f * blk.mlp.net(blk.norm2(x) * (1 + sc_f) + sh_f)


def test_predictor_block_is_the_textbook_block():
    m = random_model()
    blk = m.predictor.transformer.layers[0].eval()
    g = torch.Generator().manual_seed(3)
    x, c = torch.randn(4, 3, m.cfg.embed_dim, generator=g), torch.randn(4, 3, m.cfg.embed_dim, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(blk(x, c), _textbook_block(blk, x, c), rtol=1e-5, atol=1e-5)
    # training mode applies dropout (attention probabilities and both branches), so two calls differ,
    # and gradients reach every parameter through the live weights
    blk.train()
    assert not torch.equal(blk(x, c), blk(x, c))
    blk(x, c).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in blk.parameters())
