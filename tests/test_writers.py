"""Writers lose nothing: concurrent writers exclude each other, a full disk or file-size limit stops the
writer at once with its committed episodes resumable, and the output path is checked before any work."""
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import moving_square_episode, write_synthetic
from lewm_fast.collect import collect
from lewm_fast.data import EpisodeFile, HDF5Writer, WriteError

ROOT = Path(__file__).resolve().parents[1]


def _columns(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f.keys()}


def test_second_writer_is_refused_and_first_file_survives(tmp_path):
    p = tmp_path / "d.h5"
    rng = np.random.default_rng(0)
    first = HDF5Writer(p)
    first.write_episode(moving_square_episode(rng, 25))
    for mode in ("w", "a"):
        with pytest.raises(WriteError, match=f"in use by another HDF5Writer \\(pid {os.getpid()}"):
            HDF5Writer(p, mode=mode)
    with pytest.raises(WriteError, match="in use"):   # the CLI path too, before any episode is rolled out
        collect("tworoom", 1, str(p), max_steps=3, progress=False)
    first.write_episode(moving_square_episode(rng, 30))
    first.close()
    assert EpisodeFile(p).ep_len.tolist() == [25, 30]
    assert not Path(str(p) + ".lock").exists()
    with HDF5Writer(p, mode="a") as w:     # released: the next writer gets it
        w.write_episode(moving_square_episode(rng, 20))
    assert EpisodeFile(p).ep_len.tolist() == [25, 30, 20]


def test_lock_is_exclusive_across_processes(tmp_path):
    p = tmp_path / "d.h5"
    code = ("import sys, time; from lewm_fast.data import HDF5Writer; w = HDF5Writer(sys.argv[1]); "
            "print('open', flush=True); time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", code, str(p)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "open"
        with pytest.raises(WriteError, match=f"pid {child.pid}"):
            HDF5Writer(p)
    finally:
        child.kill()
        child.wait()
    with HDF5Writer(p) as w:   # the dead holder's lock is gone with its process
        w.write_episode(moving_square_episode(np.random.default_rng(0), 10))


def _limit_file_size(nbytes):
    def fn():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # so write() fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return fn


COLLECT = ["--env", "tworoom", "--seed", "3", "--max-steps", "12", "--workers", "1", "--compression", "none"]


def test_file_size_limit_stops_collect_and_append_recovers(tmp_path):
    out = tmp_path / "d.h5"
    r = subprocess.run([sys.executable, "-m", "lewm_fast.collect", *COLLECT, "--episodes", "20", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, preexec_fn=_limit_file_size(8 << 20), timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    err = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert len(err) == 1 and err[0].startswith("lewm_fast.collect: error: writing ") and "file-size limit" in err[0] \
        and "--append" in err[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    partial = Path(str(out) + ".partial")
    assert partial.exists() and not out.exists()
    kept = HDF5Writer(partial.with_suffix(""), mode="a")   # resumes the .partial
    n = kept.num_episodes
    kept.close(complete=False)
    assert 2 <= n < 20
    collect("tworoom", 20 - n, str(out), seed=3, max_steps=12, workers=1, append=True, progress=False,
            compression=None)
    whole = tmp_path / "whole.h5"
    collect("tworoom", 20, str(whole), seed=3, max_steps=12, workers=1, progress=False, compression=None)
    a, b = _columns(out), _columns(whole)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_write_error_mid_episode_keeps_committed_episodes(tmp_path):
    """The space check is bypassed, so HDF5 itself hits EFBIG while writing an episode: the writer must
    raise (not segfault, not report success) and the last committed state must reopen."""
    p = tmp_path / "d.h5"
    code = ("import sys, numpy as np; import lewm_fast.data.hdf5 as H; H._room_for = lambda *a: None\n"
            "from helpers import moving_square_episode\n"
            "rng = np.random.default_rng(0); w = H.HDF5Writer(sys.argv[1], compression=None)\n"
            "try:\n"
            "    for i in range(100): w.write_episode(moving_square_episode(rng, 40, size=48))\n"
            "except H.WriteError as e: print('WriteError', e); sys.exit(3)\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    r = subprocess.run([sys.executable, "-c", code, str(p)], cwd=ROOT, capture_output=True, text=True, env=env,
                       preexec_fn=_limit_file_size(2 << 20), timeout=120)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr[-2000:])
    assert "File too large" in r.stdout and "episodes committed" in r.stdout
    n = int(r.stdout.split("Stopped; ")[1].split()[0])
    assert n >= 3
    with HDF5Writer(p, mode="a") as w:
        assert w.num_episodes == n
        w.write_episode(moving_square_episode(np.random.default_rng(1), 10, size=48))
    assert EpisodeFile(p).ep_len.tolist() == [40] * n + [10]


def test_output_path_checked_before_any_work(tmp_path, monkeypatch):
    import lewm_fast.collect as c
    monkeypatch.setattr(c, "_env", lambda name: pytest.fail("env built before the output path was checked"))
    with pytest.raises(WriteError, match="is a directory"):
        collect("tworoom", 1, str(tmp_path), progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WriteError, match="is not a directory"):
        collect("tworoom", 1, str(blocker / "d.h5"), progress=False)
    if os.geteuid() != 0:   # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(WriteError, match="not writable"):
            collect("tworoom", 1, str(ro / "d.h5"), progress=False)


def test_outputs_get_normal_file_permissions(tmp_path):
    """atomic_write goes through mkstemp (mode 0600): the file it renames into place must get the mode a
    plain open() would give under the umask, like every other output."""
    from helpers import random_model
    from lewm_fast.checkpoint import save_checkpoint
    from lewm_fast.model import LeWMConfig
    old = os.umask(0o027)
    try:
        save_checkpoint(tmp_path / "model.safetensors", random_model(LeWMConfig.tiny()))
        write_synthetic(tmp_path / "d.h5", n_episodes=1, length=5)
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(old)
    want = (tmp_path / "plain").stat().st_mode & 0o777
    assert want == 0o640
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == want
    assert (tmp_path / "d.h5").stat().st_mode & 0o777 == want


def test_full_disk_stops_before_the_episode_and_keeps_the_committed_ones(tmp_path, monkeypatch):
    import lewm_fast.data.hdf5 as h5mod
    p = tmp_path / "d.h5"
    rng = np.random.default_rng(0)
    w = HDF5Writer(p)
    w.write_episode(moving_square_episode(rng, 20))
    real = os.statvfs

    class Full:   # the filesystem reports 10 kB free: less than one more episode
        def __init__(self, st):
            self.f_bavail, self.f_frsize = 10, 1024
    monkeypatch.setattr(h5mod.os, "statvfs", lambda path: Full(real(path)))
    with pytest.raises(WriteError, match=r"not enough disk space for the next episode: needs about 0\.\d MB, "
                                         r"0\.0 MB free.*Stopped; 1 episodes committed.*d\.h5\.partial"):
        w.write_episode(moving_square_episode(rng, 20))
    monkeypatch.setattr(h5mod.os, "statvfs", real)
    assert not p.exists() and not Path(str(p) + ".lock").exists()   # stopped, unlocked, not marked complete
    with HDF5Writer(p, mode="a") as again:
        assert again.num_episodes == 1
        again.write_episode(moving_square_episode(rng, 15))
    assert EpisodeFile(p).ep_len.tolist() == [20, 15]
