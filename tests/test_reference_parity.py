"""Our LeWM against stable-worldmodel 0.1.1's, with the same random weights (full paper size, fp32)."""
import pytest
import torch

from helpers import random_model
from lewm_fast.model import LeWMConfig


@pytest.fixture(scope="module")
def pair():
    from reference_compat import REFERENCE_ERROR, import_reference, reference_from_ours

    if import_reference() is None:
        pytest.skip(REFERENCE_ERROR)
    ours = random_model(LeWMConfig(), seed=1, scale=0.05)
    return ours, reference_from_ours(ours)


def _pixels(B, H, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, H, 3, 224, 224), dtype=torch.uint8, generator=g)


def test_encode(pair):
    ours, ref = pair
    px = _pixels(2, 2, 0)
    with torch.no_grad():
        a = ours.encode(px)
        b = ref.encode({"pixels": ours.normalize_pixels(px)})["emb"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_predict(pair):
    ours, ref = pair
    g = torch.Generator().manual_seed(1)
    emb, acts = torch.randn(3, 3, 192, generator=g), torch.randn(3, 3, 10, generator=g)
    with torch.no_grad():
        a = ours.predict(emb, ours.embed_actions(acts))
        b = ref.predict(emb, ref.action_encoder(acts))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("H", [1, 3])
def test_rollout(pair, H):
    ours, ref = pair
    B, S, T = 1, 4, 5
    px = _pixels(B, H, H)
    g = torch.Generator().manual_seed(10 + H)
    cand = torch.randn(B, S, T, 10, generator=g)
    hist = torch.randn(B, S, H - 1, 10, generator=g)
    with torch.no_grad():
        a = ours.rollout(cand, pixels=px, action_history=hist if H > 1 else None)
        # 0.1.1's rollout takes cat(history, candidates) and context pixels expanded over S (spec preamble)
        info = {"pixels": ours.normalize_pixels(px)[:, None].expand(B, S, H, 3, 224, 224)}
        b = ref.rollout(info, torch.cat([hist, cand], dim=2))["predicted_emb"]
    assert a.shape == b.shape == (B, S, H + T, 192)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
