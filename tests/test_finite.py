"""Finite in, finite out: NaN weights are refused at load, and a model that still yields NaN makes
`plan` raise instead of returning NaN actions."""
import numpy as np
import pytest
import torch

from helpers import random_model
from lewm_fast import Planner
from lewm_fast.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lewm_fast.model import LeWMConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _frames(B, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (B, size, size, 3), dtype=np.uint8)


def test_plan_raises_instead_of_returning_nan_actions():
    m = random_model(LeWMConfig.tiny(), scale=0.3)
    with torch.no_grad():
        m.pred_proj.net[3].bias[0] = float("nan")   # every prediction, so every cost, becomes NaN
    p = Planner(m, device="cpu", backend="eager", num_samples=8, iterations=2, topk=2)
    with pytest.raises(FloatingPointError, match=r"non-finite actions or costs for environment\(s\) \[0, 1\]"):
        p.plan(_frames(2), _frames(2, seed=1))
    with torch.no_grad():
        m.pred_proj.net[3].bias[0] = 0.0
    assert torch.isfinite(p.plan(_frames(2), _frames(2, seed=1)).actions).all()


def test_non_finite_weights_and_stats_refused_at_load(tmp_path):
    m = random_model(LeWMConfig.tiny())
    with torch.no_grad():
        m.predictor.pos_embedding[0, 1, 3] = float("inf")
    save_checkpoint(tmp_path / "w.safetensors", m)
    with pytest.raises(CheckpointError, match=r"NaN or inf in \['predictor.pos_embedding'\]"):
        load_checkpoint(tmp_path / "w.safetensors")
    good = random_model(LeWMConfig.tiny())
    save_checkpoint(tmp_path / "s.safetensors", good, stats={"action": {"mean": [0.0, float("nan")], "std": [1.0, 1.0]}})
    with pytest.raises(CheckpointError, match=r"stats\['action'\]\['mean'\] contains NaN"):
        load_checkpoint(tmp_path / "s.safetensors")
    save_checkpoint(tmp_path / "z.safetensors", good, stats={"action": {"mean": [0.0, 0.0], "std": [1.0, 0.0]}})
    with pytest.raises(CheckpointError, match=r"stats\['action'\]\['std'\] must be > 0"):
        load_checkpoint(tmp_path / "z.safetensors")


def test_resized_frames_warn_once_per_size_and_name_an_aspect_change():
    import warnings
    m = random_model(LeWMConfig.tiny())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with torch.no_grad():
            m.encode(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))   # the model's own size: silent
            m.encode(torch.zeros(2, 3, 48, 48, dtype=torch.uint8))
            m.encode(torch.zeros(1, 3, 48, 48, dtype=torch.uint8))   # same size again: already said
            m.encode(torch.zeros(1, 3, 48, 24, dtype=torch.uint8))
    msgs = [str(x.message) for x in w]
    assert msgs == ["frames are 48x48 but the model takes 32x32: resizing them (bilinear, antialiased)",
                    "frames are 48x24 but the model takes 32x32: resizing them (bilinear, antialiased); this "
                    "changes their aspect ratio from 48:24 to 1:1"]


def test_float_frames_outside_the_normalised_range_warn_when_not_raw_pixels():
    p = Planner(random_model(LeWMConfig.tiny(), scale=0.3), device="cpu", backend="eager", num_samples=8,
                iterations=1, topk=2)
    noisy = np.random.default_rng(0).normal(0, 1.5, (1, 32, 32, 3)).astype(np.float32)   # beyond [-2.12, 2.64]
    with pytest.warns(UserWarning, match=r"obs are float frames with values in \[-\d.*planning with them as given"):
        p.plan(noisy, _frames(1))
    with pytest.raises(ValueError, match="look like raw pixels"):
        p.plan(noisy - noisy.min(), _frames(1))
