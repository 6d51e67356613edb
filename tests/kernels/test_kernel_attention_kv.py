"""The attention kernel's KV-cache form (the planner's growing window): new tokens attend to cached
keys/values, the computed keys/values are stored, last_only keeps the last row. Checked against
attention_kv_ref and, independently, against the whole-window reference attention_ref."""
import pytest
import torch

from lewm_fast.kernels.attention import attention, attention_kv_ref, attention_ref

from kernel_testing import rand

N, D, HEADS, DH = 5, 32, 2, 16
INNER = HEADS * DH


def _weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return rand(3 * INNER, D, gen=g, scale=D ** -0.5), rand(D, INNER, gen=g, scale=INNER ** -0.5), rand(D, gen=g)


@pytest.mark.parametrize("window,cached", [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)])
@pytest.mark.parametrize("last_only", [False, True])
@pytest.mark.parametrize("store", [False, True])
def test_cached_window_matches_whole_window(window, cached, last_only, store, device):
    w_qkv, w_out, b_out = (t.to(device) for t in _weights())
    g = torch.Generator().manual_seed(window * 10 + cached)
    xn, res, gate = (rand(N, window, D, gen=g).to(device) for _ in range(3))
    # keys/values of the cached tokens as the whole-window maths gives them
    k_all, v_all = (xn @ w_qkv.t()).view(N, window, 3, HEADS, DH)[:, :, 1:].unbind(2)
    cache = torch.full((N, 3, 2, INNER), 7.0, device=device)        # 7: untouched slots stay visible
    cache[:, :cached, 0] = k_all[:, :cached].reshape(N, cached, INNER)
    cache[:, :cached, 1] = v_all[:, :cached].reshape(N, cached, INNER)
    before = cache.clone()
    new = slice(cached, window)
    got = attention(xn[:, new].contiguous(), w_qkv, w_out, b_out, res[:, new], gate[:, new], HEADS, last_only=last_only,
                    kv_cache=cache, cached=cached, store_kv=store)
    whole = attention_ref(xn, w_qkv, w_out, b_out, res, gate, HEADS)        # independent expectation
    want = whole[:, -1:] if last_only else whole[:, new]
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    ref, k, v = attention_kv_ref(xn[:, new], w_qkv, w_out, b_out, res[:, new], gate[:, new], HEADS,
                                 k_all[:, :cached], v_all[:, :cached], last_only=last_only)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)
    if store:
        torch.testing.assert_close(cache[:, :window, 0], k.reshape(N, window, INNER), atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(cache[:, :window, 1], v.reshape(N, window, INNER), atol=2e-5, rtol=1e-5)
        assert torch.equal(cache[:, window:], before[:, window:])
    else:
        assert torch.equal(cache, before)


def test_cache_arguments_are_checked(device):
    w_qkv, w_out, b_out = (t.to(device) for t in _weights())
    x = torch.zeros(N, 1, D, device=device)
    with pytest.raises(ValueError, match="kv_cache"):
        attention(x, w_qkv, w_out, b_out, x, x, HEADS, cached=1)
    with pytest.raises(ValueError, match="window"):
        attention(x, w_qkv, w_out, b_out, x, x, HEADS, cached=3, kv_cache=torch.zeros(N, 3, 2, INNER, device=device))
    with pytest.raises(ValueError, match="kv_cache must be"):
        attention(x, w_qkv, w_out, b_out, x, x, HEADS, cached=1, kv_cache=torch.zeros(N, 3, 2, INNER + 1, device=device))
