"""Collection CLI: files read back through EpisodeDataset, rows replay in the env, worker-count independence."""
import h5py
import numpy as np
import pytest

from lewm_fast.collect import collect, episode_seed, main
from lewm_fast.data import EpisodeDataset
from lewm_fast.envs import make


def read_all(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f.keys()}, dict(f.attrs)


@pytest.mark.parametrize("env_name, act_dim, state_dim", [("pusht", 2, 7), ("tworoom", 2, 2)])
def test_collect_reads_back_and_replays(tmp_path, env_name, act_dim, state_dim):
    out = tmp_path / f"{env_name}.h5"
    assert main(["--env", env_name, "--episodes", "3", "--out", str(out), "--seed", "5", "--max-steps", "6"]) == 0
    ds = EpisodeDataset(out, columns=("state", "proprio"))
    assert len(ds.ep_len) == 3 and (ds.ep_len >= 1).all() and (ds.ep_len <= 7).all()
    cols, attrs = read_all(out)
    assert attrs["env"] == env_name and attrs["seed"] == 5 and "lewm_fast_version" in attrs
    assert cols["pixels"].shape[1:] == (224, 224, 3) and cols["action"].shape[1] == act_dim
    assert cols["state"].shape[1] == state_dim
    # Replaying each episode's actions from its recorded start reproduces states and frames.
    env = make(env_name)
    for e, (off, n) in enumerate(zip(ds.ep_offset, ds.ep_len)):
        rows = slice(off, off + n)
        assert np.isnan(cols["action"][off + n - 1]).all()
        assert np.isfinite(cols["action"][off:off + n - 1]).all()
        env.reset(seed=episode_seed(5, e))
        np.testing.assert_array_equal(env.get_state(), cols["state"][off])
        for t in range(n - 1):
            env.step(cols["action"][off + t])
            np.testing.assert_array_equal(env.get_state(), cols["state"][off + t + 1])
        np.testing.assert_array_equal(env.render(), cols["pixels"][rows][-1])
        np.testing.assert_array_equal(ds.pixels(np.arange(off, off + n)), cols["pixels"][rows])


def test_same_file_for_any_worker_count_and_append(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    collect("tworoom", 4, str(a), seed=1, workers=1, max_steps=5, progress=False)
    collect("tworoom", 2, str(b), seed=1, workers=2, max_steps=5, progress=False)
    collect("tworoom", 2, str(b), seed=1, workers=1, max_steps=5, append=True, progress=False)
    ca, _ = read_all(a)
    cb, _ = read_all(b)
    assert ca.keys() == cb.keys()
    for k in ca:
        np.testing.assert_array_equal(ca[k], cb[k], err_msg=k)
    other = tmp_path / "other.h5"
    collect("tworoom", 4, str(other), seed=2, workers=1, max_steps=5, progress=False)
    assert not np.array_equal(read_all(other)[0]["state"][:1], ca["state"][:1])


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        collect("nosuchenv", 1, str(tmp_path / "x.h5"), progress=False)
    with pytest.raises(ValueError):
        collect("tworoom", 0, str(tmp_path / "x.h5"), progress=False)
    assert not (tmp_path / "x.h5").exists()


def test_policy_noise_is_recorded_and_changes_only_the_actions(tmp_path):
    """--policy-noise: the PushT expert adds N(0, s^2) to its actions; s = 0 reproduces the default file."""
    from lewm_fast.data import open_h5
    plain, zero, noisy = tmp_path / "plain.h5", tmp_path / "zero.h5", tmp_path / "noisy.h5"
    collect("pusht", 2, str(plain), seed=4, workers=1, max_steps=12, progress=False, resolution=32)
    collect("pusht", 2, str(zero), seed=4, workers=1, max_steps=12, progress=False, resolution=32, policy_noise=0.0)
    collect("pusht", 2, str(noisy), seed=4, workers=1, max_steps=12, progress=False, resolution=32, policy_noise=0.3)
    with open_h5(plain) as a, open_h5(zero) as b, open_h5(noisy) as c:
        np.testing.assert_array_equal(a["action"][:], b["action"][:])
        assert c.attrs["policy_noise"] == 0.3 and a.attrs["policy_noise"] == -1.0
        diff = c["action"][:10] - a["action"][:10]     # first episode's actions (12 steps each)
        assert np.abs(diff).max() > 0.05 and np.abs(c["action"][:10]).max() <= 1.0
    with pytest.raises(ValueError, match="finite number >= 0"):
        collect("pusht", 1, str(tmp_path / "bad.h5"), progress=False, policy_noise=-1.0)
    with pytest.raises(ValueError, match="no action-noise setting"):
        collect("reacher", 1, str(tmp_path / "bad2.h5"), progress=False, policy_noise=0.1)


def test_mujoco_small_frames_come_from_the_env_and_eval_asks_for_them(tmp_path):
    from lewm_fast.collect import fit_frames
    from lewm_fast.envs import resolution_kwargs
    from lewm_fast.envs.mujoco_gl import select_gl_backend
    try:
        select_gl_backend()
    except RuntimeError as err:
        pytest.skip(f"no headless GL: {err}")
    assert resolution_kwargs("Reacher", 32) == {"resolution": 32} and resolution_kwargs("cube", 64) == {"resolution": 64}
    assert resolution_kwargs("pusht", 64) == {} and resolution_kwargs("reacher", None) == {}
    own, resized = tmp_path / "own.h5", tmp_path / "resized.h5"
    collect("reacher", 1, str(own), seed=3, max_steps=3, progress=False, resolution=32)
    collect("reacher", 1, str(resized), seed=3, max_steps=3, progress=False, resolution=32, env_frames=False)
    (a, attrs_a), (b, attrs_b) = read_all(own), read_all(resized)
    assert attrs_a["frames"] == "env" and attrs_b["frames"] == "resized"
    np.testing.assert_array_equal(a["state"], b["state"])          # same episode, only the frames differ
    small, full = make("reacher", resolution=32), make("reacher")
    for env in (small, full):   # replay the episode (frames after a step show that step's kinematics)
        env.reset(seed=episode_seed(3, 0))
        for act in a["action"][:-1]:
            env.step(act)
        np.testing.assert_array_equal(env.get_state(), a["state"][-1])
    np.testing.assert_array_equal(a["pixels"][-1], small.render())                       # the env's own 32 px frame
    np.testing.assert_array_equal(b["pixels"][-1], fit_frames(full.render()[None], 32)[0])  # 224 px resized
    assert 0 < np.abs(a["pixels"].astype(int) - b["pixels"]).mean() < 8
    small.close(), full.close()
