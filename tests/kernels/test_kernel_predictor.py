"""The planner's predictor step through the fused kernels (TritonPredictor) vs the same step in PyTorch
(EagerPredictor), and both vs the model's own Predictor.forward on the same window, which is the
independent expectation: the last row after the final norm.

Windows as the rollout engine forms them: the growing window (position p computed from the KV cache
of positions < p), windows recomputed from position 0 (the slid window, action offset lo > 0), and a
cached window with two new tokens. Every window returns only the last row, so the last block's
last_only path is what these compare.
"""
import pytest
import torch

from lewm_fast.model import LeWMConfig
from lewm_fast.planning.backends import EagerPredictor, TritonPredictor

from kernel_testing import TOL, grow_window, rand, random_lewm


def _inputs(n, L, D, device, seed=1):
    return rand(n, L, D, seed=seed, device=device), rand(n, L, D, seed=seed + 1, device=device)


def _model_last(model, emb, act):
    with torch.no_grad():
        return model.predictor(emb, act)[:, -1]


@pytest.mark.parametrize("n", [1, 19])
def test_growing_window_fp32(n, device):
    cfg = LeWMConfig.tiny()
    model = random_lewm(cfg, seed=n).to(device)
    emb, act = _inputs(n, cfg.num_frames, cfg.embed_dim, device)
    with torch.inference_mode():
        eager = grow_window(EagerPredictor(model, "fp32"), emb, act)
        triton = grow_window(TritonPredictor(model, "fp32"), emb, act)
    for p in range(cfg.num_frames):
        want = _model_last(model, emb[:, :p + 1], act[:, :p + 1])
        assert want.abs().max() > 0.5                      # a real output, not the zero-gate identity
        torch.testing.assert_close(eager[p], want, **TOL[torch.float32])
        torch.testing.assert_close(triton[p], eager[p], **TOL[torch.float32])


@pytest.mark.parametrize("lo,pos0,m", [(2, 0, 3), (1, 0, 2), (0, 0, 1), (0, 1, 2)])
def test_recomputed_and_partly_cached_windows_fp32(lo, pos0, m, device):
    """(lo, 0, m): a window recomputed from position 0 at action offset lo (the slid window when m is
    the window length); (0, 1, 2): one cached position, two new tokens."""
    cfg = LeWMConfig.tiny()
    model = random_lewm(cfg, seed=7).to(device)
    n = 5
    emb, act = _inputs(n, 5, cfg.embed_dim, device, seed=3)
    rows = slice(lo, lo + pos0 + m)
    want = _model_last(model, emb[:, rows], act[:, rows])
    got = {}
    with torch.inference_mode():
        for cls in (EagerPredictor, TritonPredictor):
            step = cls(model, "fp32")
            step.begin(act)
            cache = None
            if pos0:
                _, cache = step.window(emb[:, lo:lo + pos0], lo, 0, None, keep_cache=True)
            got[cls], _ = step.window(emb[:, lo + pos0:lo + pos0 + m], lo, pos0, cache, keep_cache=False)
    torch.testing.assert_close(got[EagerPredictor], want, **TOL[torch.float32])
    torch.testing.assert_close(got[TritonPredictor], got[EagerPredictor], **TOL[torch.float32])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("m,keep", [(3, False), (2, False), (2, True)])
def test_split_window_computes_the_whole_window(precision, m, keep, device):
    """split_window (one one-token launch per window token through the KV-cache form) against the
    whole-window launch: same maths and dot shapes per token, keys/values round-tripped through the
    cache in the activations' dtype, so the rows agree to float rounding; with keep_cache the cache it
    leaves serves the next growing step the same."""
    cfg = LeWMConfig.tiny()
    model = random_lewm(cfg, seed=4).to(device)
    n = 19                                                   # a partial last program of sequences
    emb, act = _inputs(n, 5, cfg.embed_dim, device, seed=8)
    got = {}
    with torch.inference_mode():
        for split in (False, True):
            step = TritonPredictor(model, precision, split_window=split)
            step.begin(act)
            last, cache = step.window(emb[:, 1:1 + m], 1, 0, None, keep_cache=keep)
            nxt = step.window(emb[:, 1 + m:2 + m], 1, m, cache, keep_cache=False)[0] if keep else None
            got[split] = (last, nxt)
    assert got[True][0].abs().max() > 0.5
    torch.testing.assert_close(got[True][0], got[False][0], atol=1e-6, rtol=1e-6)
    if keep:
        torch.testing.assert_close(got[True][1], got[False][1], atol=1e-6, rtol=1e-6)


def test_full_size_growing_window(device):
    """The paper's predictor (D 192, 6 blocks, 16 x 64 heads, MLP 2048), 2 sequences, 3 cached steps."""
    cfg = LeWMConfig()
    model = random_lewm(cfg, seed=6).to(device)
    emb, act = _inputs(2, 3, 192, device, seed=7)
    with torch.inference_mode():
        eager = grow_window(EagerPredictor(model, "fp32"), emb, act)
        triton = grow_window(TritonPredictor(model, "fp32"), emb, act)
    torch.testing.assert_close(eager[-1], _model_last(model, emb, act), **TOL[torch.float32])
    for p in range(3):
        torch.testing.assert_close(triton[p], eager[p], **TOL[torch.float32])


def test_bf16_step_no_worse_than_eager_bf16(device):
    """precision="bf16" (bf16 matmul weights, fp32 residual stream): fp32 output close to the eager
    bf16 step (both round the same packed weights; the eager side also rounds every matmul input,
    the interpreter's kernels do not), and no further from the fp32 model than the eager bf16 step is."""
    cfg = LeWMConfig.tiny()
    model = random_lewm(cfg, seed=9).to(device)
    emb, act = _inputs(19, cfg.num_frames, cfg.embed_dim, device, seed=5)
    with torch.inference_mode():
        eager = grow_window(EagerPredictor(model, "bf16"), emb, act)
        triton = grow_window(TritonPredictor(model, "bf16"), emb, act)
    for p in range(cfg.num_frames):
        want = _model_last(model, emb[:, :p + 1], act[:, :p + 1])
        assert triton[p].dtype == torch.float32
        eager_err = (eager[p] - want).abs().max().item()
        assert eager_err > 1e-4                              # bf16 weights really were used
        torch.testing.assert_close(triton[p], eager[p], **TOL[torch.bfloat16])
        assert (triton[p] - want).abs().max().item() <= 1.5 * eager_err + 1e-2


def test_precision_names_agree(device):
    cfg = LeWMConfig.tiny()
    model = random_lewm(cfg, seed=2).to(device)
    emb, act = _inputs(3, cfg.num_frames, cfg.embed_dim, device)
    with torch.inference_mode():
        a, b = (grow_window(TritonPredictor(model, p), emb, act) for p in ("fp32", "ieee"))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("cls", [EagerPredictor, TritonPredictor])
def test_rejects_bad_inputs(cls, device):
    cfg = LeWMConfig.tiny()
    model = random_lewm(cfg).to(device)
    D = cfg.embed_dim
    z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
    with pytest.raises(ValueError, match="precision"):
        cls(model, "fast")
    step = cls(model, "fp32")
    with pytest.raises(RuntimeError, match="begin"):
        step.window(z(2, 1, D), 0, 0, None, False)
    with pytest.raises(ValueError, match="act_emb"):
        step.begin(z(2, 5, D + 1))
    step.begin(z(2, 5, D))
    with torch.inference_mode():
        with pytest.raises(ValueError, match="x must be"):
            step.window(z(2, 1, D + 1), 0, 0, None, False)        # wrong width
        with pytest.raises(ValueError, match="x must be"):
            step.window(z(3, 1, D), 0, 0, None, False)            # not begin()'s rows
        with pytest.raises(ValueError, match="frames"):
            step.window(z(2, 4, D), 0, 0, None, False)            # longer than num_frames
        with pytest.raises(ValueError, match="action tokens"):
            step.window(z(2, 3, D), 3, 0, None, False)            # past the last action token
        with pytest.raises(RuntimeError, match="cache"):
            step.window(z(2, 1, D), 0, 1, None, False)            # position 1 without position 0's cache
