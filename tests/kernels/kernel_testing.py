"""Shared test helpers: tolerances per dtype and seeded random inputs."""
import torch

from lewm_fast.model import LeWM, LeWMConfig, Predictor

# fp32: the kernels and torch sum in different orders (~1e-6 relative); fp16/bf16: each side rounds its
# intermediates differently (the kernels keep norms/softmax/accumulators in fp32, eager torch rounds
# after every op), so errors are a few units of the storage dtype's last place.
TOL = {torch.float32: dict(atol=2e-5, rtol=1e-5), torch.float16: dict(atol=2e-2, rtol=1e-2),
       torch.bfloat16: dict(atol=6e-2, rtol=4e-2)}


def rand(*shape, dtype=torch.float32, device="cpu", scale=1.0, seed=None, gen=None):
    g = gen or torch.Generator().manual_seed(seed if seed is not None else 0)
    return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)


def assert_close(got, want, dtype):
    assert got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got.float(), want.float(), **TOL[dtype])


def random_predictor(cfg: LeWMConfig, seed: int = 0) -> Predictor:
    """A predictor whose AdaLN weights are NOT zero: with the zero init every gate is 0 and the
    attention/MLP paths would not be tested at all."""
    torch.manual_seed(seed)
    pred = Predictor(cfg).eval()
    with torch.no_grad():
        for name, p in pred.named_parameters():
            if name.endswith("norm.weight") or name.endswith("net.0.weight"):
                p.normal_(1.0, 0.2)                        # affine LayerNorm gains around 1
            else:
                p.normal_(0.0, 0.5 * p.shape[-1] ** -0.5 if p.ndim == 2 else 0.2)
    return pred


def random_lewm(cfg: LeWMConfig, seed: int = 0) -> LeWM:
    """A LeWM (eval mode) carrying random_predictor(cfg, seed): what the planner's predictor steps take."""
    model = LeWM(cfg).eval()
    model.predictor = random_predictor(cfg, seed)
    return model


def grow_window(step, emb, act):
    """A predictor step (lewm_fast.planning.backends) over the growing window: positions 0..W-1 one at
    a time, each from the KV cache of the earlier ones. Returns the last row after each step."""
    step.begin(act)
    W, outs, cache = emb.shape[1], [], None
    for p in range(W):
        last, cache = step.window(emb[:, p:p + 1], 0, p, cache, keep_cache=p + 1 < W)
        outs.append(last)
    return outs
