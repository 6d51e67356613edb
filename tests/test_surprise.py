"""Surprise (violation of expectation): input formatting, the per-step prediction error against a slow
reference, perturbations, statistics, the CLI, and that a model with exact dynamics is surprised by a
teleport but not by a colour change it cannot see."""
import json

import numpy as np
import pytest
import torch

from helpers import random_model, write_synthetic
from lewm_fast.checkpoint import save_checkpoint
from lewm_fast.data import ClipDataset, EpisodeFile, HDF5Writer, fit_stats
from lewm_fast.model import LeWMConfig
from lewm_fast.surprise import (Trajectory, action_blocks, dataset_trajectories, main, run_experiment,
                                summarize, surprise_series, teleport_by_env, teleport_by_splice, tint_frames)

FS = 5


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("sur") / "syn.h5", n_episodes=8, length=41)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, synthetic):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, random_model(LeWMConfig.tiny(), seed=1),
                    {"action": fit_stats(EpisodeFile(synthetic).cache["action"])})
    return str(path)


def test_action_blocks_match_the_training_clips(synthetic):
    """Blocks built here equal what the trainer feeds the model for the same frames."""
    src = EpisodeFile(synthetic)
    clips = ClipDataset(src, np.array([0]), num_steps=4, frameskip=FS)
    m, s = clips.stats["action"]["mean"], clips.stats["action"]["std"]
    raw = src.cache["action"][: src.ep_len[0]]
    blocks = action_blocks(raw, FS, m, s)
    for start_frame in (0, 3):   # clips starting at raw steps 0 and 15 (clip starts are per raw step)
        item = clips[start_frame * FS]
        np.testing.assert_allclose(blocks[start_frame:start_frame + 4], item["action"].numpy(), rtol=1e-5, atol=1e-6)
    assert blocks.shape == (-(-len(raw) // FS), FS * 2)
    assert np.all(blocks[-1, 2:] == 0)   # NaN last action and the padding become 0


def _slow_surprise(model, frames, blocks, H):
    """Independent reference: one predict call per target frame on explicit window slices."""
    px = torch.as_tensor(frames).permute(0, 3, 1, 2)
    out = [np.nan]
    with torch.no_grad():
        for t in range(1, len(frames)):
            lo = max(0, t - H)
            emb = torch.stack([model.encode(px[i:i + 1])[0] for i in range(lo, t)])[None]
            act = model.embed_actions(torch.as_tensor(blocks[lo:t])[None])
            pred = model.predict(emb, act)[0, -1]
            target = model.encode(px[t:t + 1])[0]
            out.append(float(((pred - target) ** 2).mean()))
    return np.array(out)


@pytest.mark.parametrize("H", [1, 3])
def test_surprise_series_matches_slow_reference(H):
    model = random_model(LeWMConfig.tiny(), seed=2)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    blocks = rng.normal(size=(9, model.cfg.action_dim)).astype(np.float32)
    got = surprise_series(model, frames, blocks, history=H, batch_size=2)   # batch 2: several batches
    want = _slow_surprise(model, frames, blocks, H)
    assert np.isnan(got[0])
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-4, atol=1e-7)


def test_surprise_series_rejects_bad_inputs():
    model = random_model(LeWMConfig.tiny())
    frames = np.zeros((6, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="action blocks must be"):
        surprise_series(model, frames, np.zeros((6, 3), np.float32))
    with pytest.raises(ValueError, match="at least 5 action blocks"):
        surprise_series(model, frames, np.zeros((3, model.cfg.action_dim), np.float32))
    with pytest.raises(ValueError, match="at least 2 frames"):
        surprise_series(model, frames[:1], np.zeros((1, model.cfg.action_dim), np.float32))
    with pytest.raises(ValueError, match=r"frames must be \(n, h, w, 3\)"):
        surprise_series(model, np.zeros((6, 32, 32), np.uint8), np.zeros((6, model.cfg.action_dim), np.float32))
    with pytest.raises(ValueError, match="3 colour channels"):
        surprise_series(model, np.zeros((6, 32, 32, 4), np.uint8), np.zeros((6, model.cfg.action_dim), np.float32))
    with pytest.raises(ValueError, match="history"):
        surprise_series(model, frames, np.zeros((6, model.cfg.action_dim), np.float32), history=5)


class SquareDynamics(torch.nn.Module):
    """Exact world model of the synthetic moving-square data (tests/helpers.py): the embedding is the
    square's centre in pixels, and the square moves by 1.5 x each raw action. It exposes LeWM's interface
    (cfg, encode, embed_actions, predict), so the code under test is the real surprise path."""

    def __init__(self, action_stats):
        super().__init__()
        self.cfg = LeWMConfig.tiny(embed_dim=2, enc_heads=1)
        self.dummy = torch.nn.Parameter(torch.zeros(1))   # gives the model a device
        self.mean = torch.as_tensor(action_stats["mean"])
        self.std = torch.as_tensor(action_stats["std"])

    def encode(self, pixels):
        mask = (pixels[..., 0, :, :] > 128).float()             # the square is (255, 200, 50), background (0, 0, 40)
        h, w = mask.shape[-2:]
        ys, xs = torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32)
        n = mask.sum((-1, -2)).clamp_min(1)
        return torch.stack([(mask * xs).sum((-1, -2)) / n, (mask * ys[:, None]).sum((-1, -2)) / n], -1)

    def embed_actions(self, blocks):
        raw = blocks.view(*blocks.shape[:-1], self.cfg.frameskip, 2) * self.std + self.mean   # undo the z-score
        return 1.5 * raw.sum(-2)                                   # displacement over the block

    def predict(self, emb, act):
        return emb + act


def test_exact_model_is_surprised_by_teleport_not_by_invisible_tint(synthetic):
    src = EpisodeFile(synthetic)
    stats = fit_stats(src.cache["action"])
    model = SquareDynamics(stats)
    trajs = dataset_trajectories(synthetic, FS, n_episodes=8, min_steps=8)
    K = 4
    series, _ = run_experiment(model, trajs, K, stats, teleport="splice", seed=0, progress=False)
    normal, tele, colour = series["normal"], series["teleport"], series["colour"]
    # exact dynamics up to the pixel grid (the square's drawn corner is the integer part of its position),
    # so unperturbed surprise stays below one pixel^2 except where the clip at the border bites
    assert np.median(normal[:, 1:]) < 0.5
    assert np.all(tele[:, K] > normal[:, K]) and tele[:, K].mean() > 20 * normal[:, K].mean()
    # the tint keeps the red channel (the one the model looks at) unchanged: invisible to this model
    np.testing.assert_allclose(colour, normal)
    s = summarize({"normal": normal, "teleport": tele, "colour": colour}, K)
    assert s["teleport"]["ratio_at"] > 20 and s["teleport"]["test_at"]["t_p"] < 0.01
    assert s["colour"]["ratio_at"] == pytest.approx(1.0)
    # after the splice the continuation follows the dynamics again, and this model predicts from the last
    # frame only (Markov), so the surprise is back to the unperturbed level right after the jump
    assert tele[:, K + 1:].mean() < tele[:, K].mean() / 20


def test_teleport_by_env_replays_actions_from_the_new_state():
    from lewm_fast.envs import make
    env = make("tworoom")
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    L = 5 * FS + 1
    raw = rng.uniform(-1, 1, (L, 2)).astype(np.float32)
    frames = [env.render()]
    for r in range(L - 1):
        env.step(raw[r])
        if (r + 1) % FS == 0:
            frames.append(env.render())
    traj = Trajectory(np.stack(frames), raw)
    target = np.array([170.0, 160.0])
    K = 2
    tele = teleport_by_env(env, traj, K, FS, target, reset_seed=3)
    np.testing.assert_array_equal(tele.frames[:K], traj.frames[:K])
    # independent replay: fresh env, set to the target, step the same actions
    ref = make("tworoom")
    ref.reset(seed=9)
    ref.set_state(target)
    want = [ref.render()]
    for r in range(K * FS, L - 1):
        ref.step(raw[r])
        if (r + 1) % FS == 0:
            want.append(ref.render())
    np.testing.assert_array_equal(tele.frames[K:], np.stack(want))
    assert not np.array_equal(tele.frames[K], traj.frames[K])
    with pytest.raises(ValueError, match="perturbation step"):
        teleport_by_env(env, traj, 6, FS, target)


def test_splice_and_tint():
    a = Trajectory(np.zeros((6, 4, 4, 3), np.uint8), np.zeros((26, 2)), source="a")
    b = Trajectory(np.full((9, 4, 4, 3), 7, np.uint8), np.ones((41, 2)), source="b")
    s = teleport_by_splice(a, b, 2, FS, start=3)
    assert s.frames.shape == a.frames.shape and s.raw_actions.shape == a.raw_actions.shape
    assert (s.frames[:2] == 0).all() and (s.frames[2:] == 7).all()
    assert (s.raw_actions[:10] == 0).all() and (s.raw_actions[10:] == 1).all()
    with pytest.raises(ValueError, match="splice source"):
        teleport_by_splice(a, b, 2, FS, start=6)
    f = np.full((3, 2, 2, 3), 200, np.uint8)
    t = tint_frames(f, 1, (1.0, 0.5, 2.0))
    assert (t[0] == 200).all() and (t[1:, ..., 0] == 200).all() and (t[1:, ..., 1] == 100).all()
    assert (t[1:, ..., 2] == 255).all()   # clipped
    with pytest.raises(ValueError, match="3 non-negative"):
        tint_frames(f, 1, (1.0, 0.5))


def test_summarize_numbers():
    normal = np.array([[np.nan, 1, 1, 2, 1], [np.nan, 1, 1, 4, 3]], dtype=float)
    tele = normal.copy()
    tele[:, 3] *= 5
    s = summarize({"normal": normal, "teleport": tele}, 3)
    assert s["normal"]["before"] == pytest.approx(1.0) and s["normal"]["at"] == pytest.approx(3.0)
    assert s["normal"]["after"] == pytest.approx(2.0)
    assert s["teleport"]["ratio_at"] == pytest.approx(5.0) and s["teleport"]["ratio_after"] == pytest.approx(1.0)
    assert s["teleport"]["test_at"]["n"] == 2


def test_cli_env_rollouts_write_json_and_png(tmp_path, checkpoint):
    out = tmp_path / "out"
    res = main(["--env", "tworoom", "--checkpoint", checkpoint, "--episodes", "3", "--perturb-step", "3",
                "--steps", "6", "--out", str(out), "--no-progress"])
    data = json.loads((out / "surprise.json").read_text())
    assert set(data["summary"]) == {"normal", "teleport", "colour"}
    assert np.asarray(data["series"]["teleport"]).shape == (3, 6)
    assert data["summary"] == json.loads(json.dumps(res["summary"]))
    _assert_png(out / "surprise.png")
    assert data["render_mismatch_mean_abs"] == 0.0   # TwoRoom frames are a function of the state
    assert data["series"]["normal"][0][0] is None   # step 0 has no prediction: null, not a NaN token


def test_cli_dataset_with_env_teleport_at_dataset_resolution(tmp_path, checkpoint):
    """A PushT dataset recorded at 32 px: the env re-renders teleported frames at the data's resolution,
    and re-rendering a recorded state reproduces the recorded frame (the honesty check in the JSON)."""
    from lewm_fast.envs import make
    env = make("pusht", resolution=32)
    rng = np.random.default_rng(0)
    path = tmp_path / "pusht32.h5"
    with HDF5Writer(path) as w:
        for ep in range(3):
            obs, _ = env.reset(seed=ep)
            px, st, act = [], [], []
            for t in range(31):
                px.append(env.render())
                st.append(obs["state"])
                a = rng.uniform(-0.3, 0.3, 2).astype(np.float32)
                act.append(a)
                obs, *_ = env.step(a)
            act[-1] = np.full(2, np.nan, np.float32)
            w.write_episode({"pixels": np.stack(px), "action": np.stack(act), "state": np.stack(st)})
    out = tmp_path / "out"
    main(["--env", "pusht", "--checkpoint", checkpoint, "--dataset", str(path), "--episodes", "3",
          "--perturb-step", "3", "--out", str(out), "--no-progress"])
    data = json.loads((out / "surprise.json").read_text())
    assert data["teleport"] == "env" and np.asarray(data["series"]["teleport"]).shape == (3, 7)
    assert data["render_mismatch_mean_abs"] < 1.0


def test_cli_dataset_splice(tmp_path, checkpoint, synthetic):
    out = tmp_path / "out"
    # synthetic states are not PushT states, so the colour change is the whole-frame tint here
    main(["--env", "pusht", "--checkpoint", checkpoint, "--dataset", synthetic, "--teleport", "splice",
          "--colour", "tint", "--episodes", "4", "--perturb-step", "3", "--out", str(out), "--no-progress"])
    data = json.loads((out / "surprise.json").read_text())
    assert len(data["episodes"]) == 4 and data["perturb_step"] == 3
    _assert_png(out / "surprise.png")


def test_cli_errors(tmp_path, checkpoint, synthetic):
    with pytest.raises(SystemExit, match="unknown env"):
        main(["--env", "nope", "--checkpoint", checkpoint, "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="no episode has 40 model steps"):
        main(["--env", "pusht", "--checkpoint", checkpoint, "--dataset", synthetic, "--teleport", "splice",
              "--perturb-step", "38", "--out", str(tmp_path), "--no-progress"])
    with pytest.raises(SystemExit, match="--tint needs three"):
        main(["--env", "tworoom", "--checkpoint", checkpoint, "--tint", "1,0.5", "--out", str(tmp_path)])
    bare = tmp_path / "nostats.safetensors"
    save_checkpoint(bare, random_model(LeWMConfig.tiny()))
    with pytest.raises(SystemExit, match="no action normalisation stats"):
        main(["--env", "tworoom", "--checkpoint", str(bare), "--out", str(tmp_path)])


def _assert_png(path):
    import matplotlib.image as mpimg
    assert path.stat().st_size > 10_000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05   # not a blank canvas


def test_object_recolouring_keeps_positions_and_everything_else():
    """recolour_frames: frames before K untouched; from K on, exactly the object pixels of each recorded state
    change, to what the env renders with the new colours; physics (states) untouched."""
    from lewm_fast.envs import make
    from lewm_fast.surprise import OBJECT_COLOURS, env_trajectories, recolour_frames
    env = make("pusht")
    tr = env_trajectories("pusht", 1, 6, 5, seed=3, env=env)[0]
    out = recolour_frames(env, tr, 2, 5, OBJECT_COLOURS["pusht"])
    assert (out[:2] == tr.frames[:2]).all()
    for t in range(2, 6):
        env.set_state(tr.states[t * 5], settle=False)
        default = env.render()
        env.colours = OBJECT_COLOURS["pusht"]
        recol = env.render()
        env.colours = None
        changed = (out[t] != tr.frames[t]).any(-1)
        assert changed.sum() > 500
        assert (changed <= (recol != default).any(-1)).all()     # only where the object colours differ
        same = (tr.frames[t] == default).all(-1)                   # away from contact markers: the new render
        assert (out[t][same] == recol[same]).all()
    assert env.colours is None
    with pytest.raises(ValueError, match="recorded states"):
        recolour_frames(env, Trajectory(tr.frames, tr.raw_actions, None), 2, 5, OBJECT_COLOURS["pusht"])


def test_cli_object_colour_default_and_tint_option(tmp_path, checkpoint):
    out = tmp_path / "obj"
    main(["--env", "tworoom", "--checkpoint", checkpoint, "--episodes", "2", "--perturb-step", "3",
          "--steps", "5", "--out", str(out), "--no-progress"])
    data = json.loads((out / "surprise.json").read_text())
    assert data["colour_change"] == "objects" and data["object_colours"] == {"agent": [40, 90, 230]}
    out = tmp_path / "tint"
    main(["--env", "tworoom", "--checkpoint", checkpoint, "--episodes", "2", "--perturb-step", "3",
          "--steps", "5", "--colour", "tint", "--out", str(out), "--no-progress"])
    assert json.loads((out / "surprise.json").read_text())["colour_change"] == "tint"
    with pytest.raises(SystemExit, match="not valid JSON"):
        main(["--env", "tworoom", "--checkpoint", checkpoint, "--object-colours", "{bad", "--out", str(tmp_path)])
