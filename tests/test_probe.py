"""Probing: ridge against least squares, metrics against scipy, recovery of linearly / non-linearly encoded
quantities, failure on noise, encoder features, the CLI and its errors."""
import json

import numpy as np
import pytest
import torch
from scipy import stats

from helpers import random_model, write_synthetic
from lewm_fast.checkpoint import save_checkpoint
from lewm_fast.data import HDF5Writer
from lewm_fast.model import LeWMConfig
from lewm_fast.probe import (embed_frames, fit_probes, main, metrics, ridge_path, split_by_episode,
                             state_targets)


def _episodes(n_eps=40, per_ep=50):
    return np.repeat(np.arange(n_eps), per_ep)


def test_ridge_path_small_penalty_is_least_squares_large_penalty_shrinks():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 10))
    Y = X @ rng.normal(size=(10, 3)) + 0.1 * rng.normal(size=(200, 3))
    X, Y = X - X.mean(0), Y - Y.mean(0)
    W = ridge_path(X, Y, [1e-10, 1e6])
    np.testing.assert_allclose(W[0], np.linalg.lstsq(X, Y, rcond=None)[0], rtol=1e-6, atol=1e-8)
    assert np.abs(W[1]).max() < 1e-4
    # a middle penalty agrees with the normal equations (X'X + lambda n I) w = X'y
    lam = 0.3
    want = np.linalg.solve(X.T @ X + lam * len(X) * np.eye(10), X.T @ Y)
    np.testing.assert_allclose(ridge_path(X, Y, [lam])[0], want, rtol=1e-8)


def test_metrics_match_scipy():
    rng = np.random.default_rng(1)
    y = rng.normal(size=300)
    p = y + 0.5 * rng.normal(size=300)
    m = metrics(y, p)
    assert m["pearson_r"] == pytest.approx(stats.pearsonr(y, p)[0])
    assert m["mse"] == pytest.approx(np.mean((y - p) ** 2))
    assert m["r2"] == pytest.approx(1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))


def test_probe_recovers_linear_quantity_and_fails_on_noise():
    rng = np.random.default_rng(0)
    ep = _episodes()
    X = rng.normal(size=(len(ep), 32))
    linear = X @ rng.normal(size=32) + 0.05 * rng.normal(size=len(ep))
    noise = rng.normal(size=len(ep))
    res = fit_probes(X, np.stack([linear, noise], 1), ep, ["linear", "noise"], seed=0,
                     mlp_kwargs={"max_steps": 300})
    q = res["quantities"]
    assert q["linear"]["linear"]["r2"] > 0.95 and q["linear"]["linear"]["pearson_r"] > 0.97
    assert q["linear"]["mlp"]["r2"] > 0.9
    assert q["noise"]["linear"]["r2"] < 0.1 and q["noise"]["mlp"]["r2"] < 0.1
    # the split is by episode: no episode on both sides
    tr, val, te = split_by_episode(ep, seed=0)
    assert not set(ep[te]) & set(ep[tr | val]) and not set(ep[val]) & set(ep[tr])
    assert res["split"]["test_episodes"] == 8 and res["split"]["test_rows"] == 400
    np.testing.assert_allclose(res["predictions"]["true"][:, 0], linear[te])


def test_feature_constant_in_training_does_not_blow_up():
    """A feature that never varies on the training episodes (e.g. a background pixel) but does on test ones
    must not be divided by its ~0 training std."""
    rng = np.random.default_rng(2)
    ep = _episodes()
    X = rng.normal(size=(len(ep), 8))
    y = X @ rng.normal(size=8)
    tr, val, te = split_by_episode(ep, seed=0)
    const = np.where(te, 1.0, 0.0)[:, None]
    q = fit_probes(np.hstack([X, const]), y, ep, ["y"], seed=0, mlp_kwargs={"max_steps": 200})["quantities"]["y"]
    assert q["linear"]["r2"] > 0.99 and q["mlp"]["r2"] > 0.8, q


def test_mlp_probe_finds_what_a_linear_probe_cannot():
    rng = np.random.default_rng(3)
    ep = _episodes()
    z = rng.uniform(-2, 2, size=(len(ep), 2))
    X = np.tanh(z @ rng.normal(size=(2, 24))) + 0.01 * rng.normal(size=(len(ep), 24))
    target = z[:, 0] ** 2   # even in z: no linear readout of a (near-odd) tanh code has it
    q = fit_probes(X, target, ep, ["square"], seed=0, mlp_kwargs={"max_steps": 400, "lr": 3e-3})["quantities"]["square"]
    assert q["mlp"]["r2"] > 0.8, q
    assert q["linear"]["r2"] < q["mlp"]["r2"] - 0.3, q


def test_fit_probes_rejects_bad_inputs():
    ep = _episodes(5, 4)
    X = np.zeros((20, 3))
    with pytest.raises(ValueError, match="row counts differ"):
        fit_probes(X, np.zeros(19), ep)
    with pytest.raises(ValueError, match="at least 3 episodes"):
        fit_probes(X, np.zeros(20), np.repeat([0, 1], 10))
    with pytest.raises(ValueError, match="finite"):
        fit_probes(np.full((20, 3), np.nan), np.zeros(20), ep)
    with pytest.raises(ValueError, match="2 names for 1"):
        fit_probes(X, np.zeros(20), ep, ["a", "b"])


def test_state_targets_tables():
    s = np.array([[1.0, 2.0, 3.0, 4.0, np.pi / 2, 0.0, 0.0]])
    names, Y = state_targets("pusht", s)
    assert names == ["agent_x", "agent_y", "block_x", "block_y", "block_angle_sin", "block_angle_cos"]
    np.testing.assert_allclose(Y, [[1, 2, 3, 4, 1, 0]], atol=1e-12)
    # Reacher's "hand" is the second link's direction in the frame: shoulder + wrist
    names, Y = state_targets("reacher", np.array([[np.pi / 3, np.pi / 6, 0.5, -0.5]]))
    assert names == ["shoulder_sin", "shoulder_cos", "wrist", "hand_sin", "hand_cos", "shoulder_vel", "wrist_vel"]
    np.testing.assert_allclose(Y, [[np.sin(np.pi / 3), 0.5, np.pi / 6, 1, 0, 0.5, -0.5]], atol=1e-12)
    names, _ = state_targets("synthetic", np.zeros((3, 2)))
    assert names == ["state_0", "state_1"]
    with pytest.raises(ValueError, match="column 2 .*missing"):
        state_targets("pusht", np.zeros((3, 2)))


def test_embed_frames_features_and_batching():
    model = random_model(LeWMConfig.tiny(), seed=4)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (7, 48, 48, 3), dtype=np.uint8)   # not 32 px: the encoder resizes
    px = torch.as_tensor(frames).permute(0, 3, 1, 2)
    with torch.no_grad():
        want = model.encode(px).numpy()
        x = torch.nn.functional.interpolate(model.normalize_pixels(px), size=(32, 32), mode="bilinear",
                                            antialias=True, align_corners=False)
        want_cls = model.encoder(x).numpy()
    np.testing.assert_allclose(embed_frames(model, frames, batch_size=3), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embed_frames(model, frames, batch_size=3, features="cls"), want_cls, rtol=1e-5, atol=1e-6)
    # the bf16 autocast path (used on CUDA) runs on CPU too and stays close to fp32
    np.testing.assert_allclose(embed_frames(model, frames, precision="bf16"), want, atol=0.02 * np.abs(want).max())
    with pytest.raises(ValueError, match="features"):
        embed_frames(model, frames, features="patches")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, random_model(LeWMConfig.tiny(), seed=5))
    return str(path)


def test_cli_writes_report_and_plot(tmp_path, checkpoint):
    data = write_synthetic(tmp_path / "syn.h5", n_episodes=10, length=30)
    out = tmp_path / "out"
    rep = main(["--env", "synthetic", "--checkpoint", checkpoint, "--dataset", data, "--max-frames", "250",
                "--mlp-steps", "100", "--out", str(out), "--no-progress"])
    saved = json.loads((out / "probe.json").read_text())
    assert saved["frames"] == 250 and set(saved["quantities"]) == {"state_0", "state_1"}
    assert saved["quantities"] == json.loads(json.dumps(rep["quantities"]))
    for q in saved["quantities"].values():
        assert set(q["linear"]) == {"r2", "mse", "pearson_r"} and set(q["mlp"]) == {"r2", "mse", "pearson_r"}
    import matplotlib.image as mpimg
    assert (out / "probe.png").stat().st_size > 10_000
    img = mpimg.imread(out / "probe.png")
    assert img.shape[0] > 200 and img[..., :3].std() > 0.05


def test_cli_missing_state_column(tmp_path, checkpoint):
    path = tmp_path / "nostate.h5"
    with HDF5Writer(path) as w:
        for _ in range(3):
            a = np.zeros((5, 2), np.float32)
            a[-1] = np.nan
            w.write_episode({"pixels": np.zeros((5, 32, 32, 3), np.uint8), "action": a})
    with pytest.raises(SystemExit, match="missing column.*state"):
        main(["--env", "pusht", "--checkpoint", checkpoint, "--dataset", str(path), "--out", str(tmp_path)])
