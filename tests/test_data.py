import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from helpers import moving_square_episode, write_synthetic
from lewm_fast.data import (ClipDataset, DatasetError, EpisodeFile, HDF5Writer, make_datasets, split_episodes)
from lewm_fast.data.dataset import _clip_starts


def test_layout_matches_spec(tmp_path):
    p = write_synthetic(tmp_path / "d.h5", n_episodes=3, length=30)
    with h5py.File(p) as f:
        assert f["ep_len"].dtype == np.int32 and f["ep_offset"].dtype == np.int64
        assert f["ep_len"][:].tolist() == [30, 30, 30] and f["ep_offset"][:].tolist() == [0, 30, 60]
        assert f["pixels"].dtype == np.uint8 and f["pixels"].shape == (90, 32, 32, 3)
        assert f["step_idx"][:].tolist() == list(range(30)) * 3
        assert f["episode_idx"][:].tolist() == [0] * 30 + [1] * 30 + [2] * 30
        assert np.isnan(f["action"][29]).all() and np.isfinite(f["action"][28]).all()
        assert f.attrs["env"] == "synthetic"


def test_clip_contents_against_manual_indexing(tmp_path):
    p = write_synthetic(tmp_path / "d.h5", n_episodes=4, length=33)
    src = EpisodeFile(p, columns=("state",))
    ds = ClipDataset(src, np.arange(4), num_steps=4, frameskip=5, columns=("state",))
    assert len(ds) == 4 * (33 - 20 + 1)
    with h5py.File(p) as f:
        px, act, state = f["pixels"][:], f["action"][:], f["state"][:]
    mu, sd = ds.stats["action"]["mean"], ds.stats["action"]["std"]
    for i in [0, 13, 14, 30, len(ds) - 1]:
        ep, s = divmod(i, 14)
        row = 33 * ep + s
        item = ds[i]
        frames = [row + 5 * k for k in range(4)]
        assert torch.equal(item["pixels"], torch.from_numpy(px[frames]).permute(0, 3, 1, 2))
        raw = np.nan_to_num((act[row:row + 20] - mu) / sd, nan=0.0).reshape(4, 10)   # block k = a_{5k..5k+4}
        np.testing.assert_allclose(item["action"].numpy(), raw, rtol=1e-6)
        np.testing.assert_allclose(item["state"].numpy(), (state[frames] - ds.stats["state"]["mean"])
                                   / ds.stats["state"]["std"], rtol=1e-5)
    # the last clip of an episode uses the NaN last action, which becomes 0
    assert torch.isfinite(ds[13]["action"]).all()


def test_native_clip_index_matches_numpy():
    lens = np.array([3, 25, 20, 0, 47])
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]])
    expected = np.concatenate([o + np.arange(n - 20 + 1) for n, o in zip(lens, offs) if n >= 20])
    np.testing.assert_array_equal(_clip_starts(lens, offs, 20), expected)
    from lewm_fast import _native
    np.testing.assert_array_equal(_native.clip_starts(lens, offs, 20), expected)
    with pytest.raises(ValueError, match="span"):
        _native.clip_starts(lens, offs, 0)


def test_split_by_episode_and_stats_from_train(tmp_path):
    p = write_synthetic(tmp_path / "d.h5", n_episodes=20, length=25)
    tr_eps, va_eps = split_episodes(20, 0.1, seed=3072)
    assert len(va_eps) == 2 and not set(tr_eps) & set(va_eps) and len(tr_eps) + len(va_eps) == 20
    train, val = make_datasets(p, val_fraction=0.1, columns=("state",))
    ep_of = EpisodeFile(p).episode_of_rows()
    assert set(ep_of[train.starts]).isdisjoint(set(ep_of[val.starts]))
    assert val.stats is train.stats
    with h5py.File(p) as f:
        a = f["action"][:]
    rows = np.isin(ep_of, tr_eps) & np.isfinite(a).all(1)
    np.testing.assert_allclose(train.stats["action"]["mean"], a[rows].mean(0), rtol=1e-5)


def test_writer_is_atomic_and_appendable(tmp_path):
    p = tmp_path / "d.h5"
    rng = np.random.default_rng(0)
    w = HDF5Writer(p)
    w.write_episode(moving_square_episode(rng, 25))
    assert not p.exists() and (tmp_path / "d.h5.partial").exists()   # nothing that looks complete yet
    with pytest.raises(FileNotFoundError, match="partial"):
        EpisodeFile(p)
    w.close()
    assert p.exists() and not (tmp_path / "d.h5.partial").exists()
    with HDF5Writer(p, mode="a") as w:
        w.write_episode(moving_square_episode(rng, 30))
    assert EpisodeFile(p).ep_len.tolist() == [25, 30]


def test_interrupted_append_is_refused_then_recovered(tmp_path):
    p = write_synthetic(tmp_path / "d.h5", n_episodes=2, length=25)
    w = HDF5Writer(p, mode="a")
    w.write_episode(moving_square_episode(np.random.default_rng(1), 25))
    # simulate a crash in the middle of the next episode: rows written, index not yet grown
    for k in ("pixels", "action", "state", "step_idx", "episode_idx"):
        w.f[k].resize(w.f[k].shape[0] + 7, axis=0)
    w.f.flush()
    w.f.close()
    w.f = None
    w._lock.release()   # the crashed process's lock goes with it
    with pytest.raises(DatasetError, match="incomplete"):
        EpisodeFile(p)
    with HDF5Writer(p, mode="a"):
        pass
    src = EpisodeFile(p)
    assert src.ep_len.tolist() == [25, 25, 25] and src.n_rows == 75


def test_writer_rejects_bad_episodes_before_writing(tmp_path):
    rng = np.random.default_rng(0)
    with HDF5Writer(tmp_path / "d.h5") as w:
        w.write_episode(moving_square_episode(rng, 25))
        ep = moving_square_episode(rng, 25)
        ep["state"][3, 0] = np.nan
        with pytest.raises(ValueError, match="'state' has non-finite values at rows \\[3\\]"):
            w.write_episode(ep)
        ep = moving_square_episode(rng, 25)
        ep["action"][5] = np.inf
        with pytest.raises(ValueError, match="'action'.*\\[5\\]"):
            w.write_episode(ep)
        ep = moving_square_episode(rng, 25)
        ep["state"] = ep["state"][:-1]
        with pytest.raises(ValueError, match="same number of rows"):
            w.write_episode(ep)
        ep = moving_square_episode(rng, 25, size=16)
        with pytest.raises(ValueError, match="pixels.*shape"):
            w.write_episode(ep)
        ep = moving_square_episode(rng, 25)
        del ep["state"]
        with pytest.raises(ValueError, match="differ"):
            w.write_episode(ep)
        assert w.num_episodes == 1 and w.num_rows == 25
        assert all(w.f[k].shape[0] == 25 for k in ("pixels", "action", "state"))


def test_reader_errors(tmp_path):
    p = write_synthetic(tmp_path / "d.h5", n_episodes=2, length=25)
    # missing column
    q = tmp_path / "nocol.h5"
    with h5py.File(p) as f, h5py.File(q, "w") as g:
        for k in f:
            if k != "action":
                f.copy(k, g)
    with pytest.raises(DatasetError, match="missing column.*action"):
        EpisodeFile(q)
    # wrong shapes: index beyond the rows
    q = tmp_path / "badidx.h5"
    with h5py.File(p) as f, h5py.File(q, "w") as g:
        for k in f:
            f.copy(k, g)
        g["ep_len"][1] = 40
    with pytest.raises(DatasetError, match="outside"):
        EpisodeFile(q)
    # NaN inside an episode
    q = tmp_path / "nan.h5"
    with h5py.File(p) as f, h5py.File(q, "w") as g:
        for k in f:
            f.copy(k, g)
        g["action"][3] = np.nan
    with pytest.raises(DatasetError, match="non-finite.*rows \\[3\\]"):
        EpisodeFile(q)
    # pixels not uint8 HWC
    q = tmp_path / "px.h5"
    with h5py.File(p) as f, h5py.File(q, "w") as g:
        for k in f:
            if k != "pixels":
                f.copy(k, g)
        g["pixels"] = np.zeros((50, 3, 32, 32), np.float32)
    with pytest.raises(DatasetError, match="uint8"):
        EpisodeFile(q)
    # truncated file
    q = tmp_path / "trunc.h5"
    q.write_bytes(open(p, "rb").read()[:4096])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        EpisodeFile(q)
    # too-short episodes for a clip
    with pytest.raises(DatasetError, match="has 100 steps"):
        make_datasets(p, num_steps=4, frameskip=25)


def _write_blosc(path):
    import hdf5plugin
    src = h5py.File(path, "a")
    px = src["pixels"][:]
    del src["pixels"]
    src.create_dataset("pixels", data=px, chunks=(1, *px.shape[1:]), **hdf5plugin.Blosc(cname="lz4"))
    src.close()


def test_blosc_files_read_with_hdf5plugin_and_explain_without(tmp_path):
    pytest.importorskip("hdf5plugin", reason="hdf5plugin not installed")
    p = write_synthetic(tmp_path / "d.h5", n_episodes=2, length=25)
    expected = EpisodeFile(p).pixels(np.array([0, 5, 30]))
    _write_blosc(p)
    np.testing.assert_array_equal(EpisodeFile(p).pixels(np.array([0, 5, 30])), expected)
    # a fresh interpreter where hdf5plugin cannot be imported: the error must say what to install
    code = ("import sys; sys.modules['hdf5plugin'] = None\n"
            "from lewm_fast.data import EpisodeFile\n"
            f"EpisodeFile({str(p)!r})\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode != 0 and "pip install hdf5plugin" in r.stderr, r.stderr[-2000:]


def test_dataloader_workers(tmp_path):
    p = write_synthetic(tmp_path / "d.h5", n_episodes=3, length=25)
    train, _ = make_datasets(p, val_fraction=0.0)
    loader = torch.utils.data.DataLoader(train, batch_size=4, num_workers=2)
    batches = list(loader)
    assert sum(b["pixels"].shape[0] for b in batches) == len(train)
    assert torch.equal(batches[0]["pixels"][1], train[1]["pixels"])
