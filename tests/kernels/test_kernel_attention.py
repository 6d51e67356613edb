"""Fused causal attention block (qkv + attention + to_out + gated residual) vs its torch reference."""
import pytest
import torch

from lewm_fast.kernels.attention import attention, attention_by_token, attention_kv_ref, attention_ref

from kernel_testing import assert_close, rand


def _inputs(N, T, D, heads, dh, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    xn = rand(N, T, D, gen=g)
    w_qkv = rand(3 * heads * dh, D, gen=g, scale=D ** -0.5)
    w_out = rand(D, heads * dh, gen=g, scale=(heads * dh) ** -0.5)
    b_out = rand(D, gen=g, scale=0.1)
    res = rand(N, T, D, gen=g)
    mod = rand(N, T, 3 * D, gen=g, scale=0.5)           # gate read as a strided chunk, as in the predictor
    cast = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    return cast(xn), cast(w_qkv), cast(w_out), cast(b_out), cast(res), cast(mod)[..., D:2 * D]


@pytest.mark.parametrize("T", [2, 3])
def test_by_token_launches_match_the_whole_window(T, device):
    """attention_by_token (one one-token launch per token, chained through the KV cache) against the
    torch reference of the whole window; with store_kv the cache holds every token's keys/values."""
    xn, w_qkv, w_out, b_out, res, gate = _inputs(7, T, 32, 4, 8, torch.float32, device, seed=3)
    assert_close(attention_by_token(xn, w_qkv, w_out, b_out, res, gate, 4),
                 attention_ref(xn, w_qkv, w_out, b_out, res, gate, 4), torch.float32)
    kv = torch.zeros(7, 3, 2, 32, device=device)
    attention_by_token(xn, w_qkv, w_out, b_out, res, gate, 4, kv_cache=kv, store_kv=True)
    empty = torch.zeros(7, 0, 4, 8, device=device)
    _, k, v = attention_kv_ref(xn, w_qkv, w_out, b_out, res, gate, 4, empty, empty)
    assert_close(kv[:, :T, 0], k.reshape(7, T, 32), torch.float32)
    assert_close(kv[:, :T, 1], v.reshape(7, T, 32), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("T", [1, 2, 3])
@pytest.mark.parametrize("N,D,heads,dh", [(1, 32, 4, 8), (3, 48, 2, 16), (7, 32, 3, 16)])
def test_matches_reference(N, T, D, heads, dh, dtype, device):
    xn, w_qkv, w_out, b_out, res, gate = _inputs(N, T, D, heads, dh, dtype, device)
    got = attention(xn, w_qkv, w_out, b_out, res, gate, heads)
    assert_close(got, attention_ref(xn, w_qkv, w_out, b_out, res, gate, heads), dtype)


@pytest.mark.parametrize("T", [1, 3])
def test_full_size(T, device):
    """The paper's predictor: D = 192, 16 heads x 64, fp32."""
    xn, w_qkv, w_out, b_out, res, gate = _inputs(3, T, 192, 16, 64, torch.float32, device, seed=1)
    got = attention(xn, w_qkv, w_out, b_out, res, gate, 16)
    assert_close(got, attention_ref(xn, w_qkv, w_out, b_out, res, gate, 16), torch.float32)


def test_bf16_weights_with_fp32_activations(device):
    """Mixed mode (the planner's bf16): fp32 in/out, bf16 weights; matches the fp32 maths on the
    rounded weights up to the bf16 rounding of activation tiles (exact under the interpreter)."""
    xn, w_qkv, w_out, b_out, res, gate = _inputs(5, 3, 48, 2, 16, torch.float32, device)
    wq16, wo16 = w_qkv.bfloat16(), w_out.bfloat16()
    got = attention(xn, wq16, wo16, b_out, res, gate, 2)
    assert got.dtype == torch.float32
    want = attention_ref(xn, wq16.float(), wo16.float(), b_out, res, gate, 2)
    torch.testing.assert_close(got, want, atol=3e-2, rtol=2e-2)
    with pytest.raises(TypeError, match="share a dtype"):
        attention(xn, wq16, w_out, b_out, res, gate, 2)


@pytest.mark.parametrize("T", [1, 2, 3])
def test_last_only(T, device):
    xn, w_qkv, w_out, b_out, res, gate = _inputs(7, T, 32, 4, 8, torch.float32, device, seed=2)
    got = attention(xn, w_qkv, w_out, b_out, res, gate, 4, last_only=True)
    assert got.shape == (7, 1, 32)
    assert_close(got, attention_ref(xn, w_qkv, w_out, b_out, res, gate, 4)[:, -1:], torch.float32)


def test_causal_earlier_tokens_ignore_later_ones(device):
    """Changing token 2 must leave tokens 0 and 1 bit-identical and change token 2."""
    xn, w_qkv, w_out, b_out, res, gate = _inputs(5, 3, 32, 4, 8, torch.float32, device)
    a = attention(xn, w_qkv, w_out, b_out, res, gate, 4)
    xn2 = xn.clone()
    xn2[:, 2] += 1.0
    b = attention(xn2, w_qkv, w_out, b_out, res, gate, 4)
    assert torch.equal(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 2], b[:, 2])


def test_reference_is_the_models_attention():
    """norm_modulate_ref then attention_ref (the Triton step's composition) == the model's attention half
    (lewm_fast.model.attention_half, what ConditionalBlock.forward runs) in eval mode."""
    from lewm_fast.kernels.norm_modulate import norm_modulate_ref
    from lewm_fast.model import ConditionalBlock, attention_half

    blk = ConditionalBlock(32, heads=4, dim_head=8, mlp_dim=64, dropout=0.1).eval()
    with torch.no_grad():
        for p in blk.attn.parameters():
            p.normal_(0, 0.3)
        x, shift, scale, gate = (rand(3, 3, 32, seed=s) for s in range(1, 5))
        want, _ = attention_half(blk.weights(), x, shift, 1 + scale, gate)
        a = blk.attn
        xn = norm_modulate_ref(x, shift, scale, a.norm.weight, a.norm.bias, blk.norm1.eps, a.norm.eps)
        got = attention_ref(xn, a.to_qkv.weight, a.to_out[0].weight, a.to_out[0].bias, x, gate, heads=4)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_rejects_bad_inputs(device):
    xn, w_qkv, w_out, b_out, res, gate = _inputs(2, 3, 32, 4, 8, torch.float32, device)
    with pytest.raises(ValueError, match="1..3 tokens"):
        attention(torch.cat([xn, xn], 1), w_qkv, w_out, b_out, torch.cat([res, res], 1),
                  torch.cat([gate, gate], 1), 4)
    with pytest.raises(ValueError, match="multiple of 3"):
        attention(xn, w_qkv, w_out, b_out, res, gate, 5)
    with pytest.raises(ValueError, match="shape"):
        attention(xn, w_qkv, w_out[:, :16], b_out, res, gate, 4)
    with pytest.raises(ValueError, match="unit stride"):
        attention(torch.stack([xn, xn], -1)[..., 0], w_qkv, w_out, b_out, res, gate, 4)
    with pytest.raises(ValueError, match="out"):
        attention(xn, w_qkv, w_out, b_out, res, gate, 4, out=torch.empty_like(xn)[:, :1])


@pytest.mark.parametrize("block_n,block_k", [(16, 16), (32, 64)])
def test_explicit_launch_config(block_n, block_k, device):
    """block_n / block_k launch that fixed config (sweeps) instead of the tuned one: same maths, with
    sequences and K steps that do not fill the tiles (N = 37 over 32-row programs, D = 48 over 64)."""
    xn, w_qkv, w_out, b_out, res, gate = _inputs(37, 3, 48, 2, 16, torch.float32, device, seed=3)
    got = attention(xn, w_qkv, w_out, b_out, res, gate, 2, block_n=block_n, block_k=block_k, num_stages=1)
    assert_close(got, attention_ref(xn, w_qkv, w_out, b_out, res, gate, 2), torch.float32)
    with pytest.raises(ValueError, match="both block_n and block_k"):
        attention(xn, w_qkv, w_out, b_out, res, gate, 2, block_n=block_n)
