"""HDF5 episode files in the reference layout (spec E): one dataset per column, rows are steps,
episodes concatenated; `ep_len` (int32) and `ep_offset` (int64) index them, `step_idx` and
`episode_idx` are per-row. Official files (including Blosc-compressed ones when `hdf5plugin` is
installed) open as they are.

Crash safety. `HDF5Writer(path, mode="w")` writes to `path.partial` and renames it over `path` only
when closed cleanly, so a killed run never leaves a file that looks complete. Mode "a" appends to an
existing file (or resumes a `.partial`): the file is marked incomplete while open, each episode's
rows are written before `ep_len`/`ep_offset` grow (so the index only ever names fully written
episodes), and reopening an interrupted file in mode "a" drops any uncommitted tail rows.

Writers exclude each other: a writer holds an exclusive lock (`fcntl.flock` on `path.lock`) from open
to close, so a second writer to the same path fails at once, naming the holder, instead of replacing
the first one's file. Before each episode the writer checks that the episode fits (free space on the
filesystem and the process's file-size limit); if it does not, or a write fails (ENOSPC, EFBIG, EIO),
it stops at once with a `WriteError` and leaves the episodes committed so far in the `.partial` file,
where `mode="a"` (`collect --append`) resumes them.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import numpy as np

try:
    import h5py
except ImportError as e:  # pragma: no cover - h5py is a hard dependency
    raise ImportError("lewm_fast.data needs h5py: pip install h5py") from e

INDEX_COLUMNS = ("ep_len", "ep_offset")
ROW_INDEX_COLUMNS = ("step_idx", "episode_idx", "ep_idx")
COMPLETE_ATTR = "lewm_fast_complete"


class DatasetError(ValueError):
    """A dataset file that cannot be used as it is (missing column, wrong shape, corrupt, incomplete)."""


class WriteError(OSError):
    """A writer could not write (disk full, file-size limit, I/O error, output path in use or unusable)."""


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse an output file path that cannot be written before any work starts: a directory, or a
    location whose nearest existing parent is not a writable directory."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"output path {path} is a directory; give a file name such as {path / 'data.h5'}")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise WriteError(f"output path {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WriteError(f"output path {path}: directory {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise WriteError(f"output path {path} exists and is not writable")
    return path


class PathLock:
    """Exclusive, non-blocking lock on `path` (a sidecar `path.lock` file), held until release().
    A second PathLock on the same path, in any process, raises WriteError naming the holder's pid."""

    def __init__(self, path: str | os.PathLike, what: str = "writer"):
        self.lock_path = Path(str(path) + ".lock")
        self.fd = None
        try:
            import fcntl
        except ImportError:   # pragma: no cover - not POSIX: no locking
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise WriteError(errno.EBUSY, f"{path} is in use by another {what} (pid {holder}, lock "
                                              f"{self.lock_path}); wait for it to finish or choose another path") from None
            try:   # the holder we waited on may have removed the lock file: lock the one on disk now
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.unlink(self.lock_path)   # while still holding it: a waiter re-checks the inode
            os.close(self.fd)
            self.fd = None


def _room_for(path: Path, nbytes: int) -> None:
    """Raise WriteError unless `nbytes` more can be written to `path` (free space, RLIMIT_FSIZE)."""
    st = os.statvfs(path.parent)
    free = st.f_bavail * st.f_frsize
    if nbytes > free:
        raise WriteError(errno.ENOSPC, f"not enough disk space for the next episode: needs about "
                                       f"{nbytes / 1e6:.1f} MB, {free / 1e6:.1f} MB free on {path.parent}")
    try:
        import resource
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, AttributeError):   # pragma: no cover
        return
    if limit != resource.RLIM_INFINITY and path.stat().st_size + nbytes > limit:
        raise WriteError(errno.EFBIG, f"the next episode would take {path} past this process's file-size limit "
                                      f"({limit / 1e6:.1f} MB, ulimit -f)")


def _register_blosc() -> bool:
    try:
        import hdf5plugin  # noqa: F401  (registers Blosc & co. with HDF5 on import)
        return True
    except ImportError:
        return False


def open_h5(path: str | os.PathLike, mode: str = "r") -> "h5py.File":
    """h5py.File with errors that say what is wrong with the file."""
    path = Path(path)
    if mode == "r" and not path.exists():
        partial = Path(str(path) + ".partial")
        hint = f" (an interrupted write left {partial}; resume it with mode='a' / --append)" if partial.exists() else ""
        raise FileNotFoundError(f"dataset not found: {path}{hint}")
    _register_blosc()
    try:
        return h5py.File(path, mode)
    except OSError as e:
        raise DatasetError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {e}") from e


def check_filters(f: "h5py.File", name: str) -> None:
    """Raise an actionable DatasetError if column `name` is compressed with a filter HDF5 lacks here."""
    plist = f[name].id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _, _, fname = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            fname = fname.decode(errors="replace") if isinstance(fname, bytes) else fname
            has = _register_blosc() and h5py.h5z.filter_avail(code)
            if has:
                continue
            raise DatasetError(
                f"{f.filename}: column '{name}' is compressed with HDF5 filter {code} ({fname}), which is not "
                "available here; official Blosc-compressed files need it: pip install hdf5plugin")


def read_column(f: "h5py.File", name: str, sel=slice(None)) -> np.ndarray:
    """Read (part of) a column, turning a missing-filter or corrupt-file failure into a clear message."""
    try:
        return f[name][sel]
    except OSError as e:
        check_filters(f, name)
        raise DatasetError(f"{f.filename}: cannot read column '{name}' (truncated or corrupt file?): {e}") from e


class HDF5Writer:
    """Append episodes to an HDF5 file in the reference layout.

        with HDF5Writer("pusht.h5", metadata={"env": "pusht"}) as w:
            w.write_episode({"pixels": uint8 (L, 224, 224, 3), "action": float (L, A), "state": ..., ...})

    Every episode must carry the same columns with the same per-row shapes and dtypes. `action` may be
    NaN only on the episode's last row (no action leaves the last frame); any other non-finite value
    is an error, raised before anything of that episode is written. Pixels are stored uncompressed by
    default like the current reference writer; compression="lzf" makes PushT files ~10x smaller.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "w", metadata: dict | None = None,
                 compression: str | None = None, chunk_rows: int = 1):
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' (new file) or 'a' (append/resume), got {mode!r}")
        self.path = check_output_path(path)
        self.partial = Path(str(self.path) + ".partial")
        self.compression = compression
        self.chunk_rows = chunk_rows
        self.f = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = PathLock(self.path, "HDF5Writer")   # held until close: no other writer touches our files
        try:
            self._open(mode, metadata)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, mode: str, metadata: dict | None) -> None:
        if mode == "w":
            if self.partial.exists():
                self.partial.unlink()
            self._target, self._rename = self.partial, True
            self.f = open_h5(self.partial, "w")
        elif self.path.exists():
            self._target, self._rename = self.path, False
            self.f = open_h5(self.path, "a")
        else:
            self._target, self._rename = self.partial, True
            self.f = open_h5(self.partial, "a")
        self.f.attrs[COMPLETE_ATTR] = False
        for k, v in (metadata or {}).items():
            self.f.attrs[k] = v if isinstance(v, (int, float, str, bool)) else str(v)
        if "ep_len" not in self.f:
            self.f.create_dataset("ep_len", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1024,))
            self.f.create_dataset("ep_offset", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
        self._drop_uncommitted_rows()
        self.f.flush()

    # -- state ---------------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        return int(self.f["ep_len"].shape[0])

    @property
    def num_rows(self) -> int:
        lens = self.f["ep_len"][:]
        return int(lens.sum()) if len(lens) else 0

    def _row_columns(self) -> list[str]:
        return [k for k in self.f.keys() if k not in INDEX_COLUMNS]

    def _drop_uncommitted_rows(self) -> None:
        n = self.num_rows
        for k in self._row_columns():
            if self.f[k].shape[0] > n:
                self.f[k].resize(n, axis=0)

    # -- writing -------------------------------------------------------------------------------
    def _validate(self, ep: dict) -> tuple[int, dict]:
        if not ep:
            raise ValueError("episode has no columns")
        cols = {k: np.asarray(v) for k, v in ep.items()}
        bad = [k for k in cols if k in INDEX_COLUMNS or k in ROW_INDEX_COLUMNS]
        if bad:
            raise ValueError(f"columns {bad} are written by HDF5Writer itself; do not pass them")
        lengths = {k: v.shape[0] if v.ndim else None for k, v in cols.items()}
        L = next(iter(lengths.values()))
        if L is None or any(n != L for n in lengths.values()):
            raise ValueError(f"all columns must have the same number of rows; got {lengths}")
        if L < 1:
            raise ValueError("episode has zero rows")
        if "pixels" in cols and (cols["pixels"].dtype != np.uint8 or cols["pixels"].ndim != 4
                                 or cols["pixels"].shape[-1] != 3):
            raise ValueError(f"pixels must be uint8 (L, H, W, 3); got {cols['pixels'].dtype} {cols['pixels'].shape}")
        for k, v in cols.items():
            if np.issubdtype(v.dtype, np.floating):
                finite = np.isfinite(v.reshape(L, -1)).all(axis=1)
                if k == "action":
                    finite[-1] = True   # the last action of an episode is NaN by convention
                if not finite.all():
                    raise ValueError(f"column '{k}' has non-finite values at rows {np.flatnonzero(~finite)[:10].tolist()}")
        existing = self._row_columns()
        if existing and self.num_episodes:
            want = set(existing) - set(ROW_INDEX_COLUMNS)
            if set(cols) != want:
                raise ValueError(f"episode columns {sorted(cols)} differ from the file's {sorted(want)}")
            for k, v in cols.items():
                ds = self.f[k]
                if ds.shape[1:] != v.shape[1:]:
                    raise ValueError(f"column '{k}' rows have shape {v.shape[1:]}, file has {ds.shape[1:]}")
        return L, cols

    def write_episode(self, ep: dict) -> None:
        """Append one episode. A write failure (or an episode that would not fit) raises WriteError; the
        writer is then closed and the episodes committed before it stay resumable with mode="a"."""
        if self.f is None:
            raise ValueError(f"writer for {self.path} is closed")
        L, cols = self._validate(ep)
        need = sum(v.nbytes for v in cols.values()) + 200 * L + (64 << 10)   # rows + per-chunk index + slack
        try:
            _room_for(self._target, need)
            self._write(L, cols)
        except (OSError, RuntimeError) as e:   # h5py raises both for failed writes and flushes
            self._abandon(e)

    def _abandon(self, err: Exception) -> None:
        try:
            n = self.num_episodes
        except Exception:   # pragma: no cover
            n = "the"
        # Point HDF5's descriptor at /dev/null: closing then cannot write a half-updated index over the
        # state the last flush left on disk, and succeeds (a close that fails leaves HDF5 objects open,
        # and HDF5 segfaults at exit).
        try:
            fd = self.f.id.get_vfd_handle()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
        except Exception:   # pragma: no cover - not the sec2 driver: close as it is
            pass
        import gc
        import sys
        hook, sys.unraisablehook = sys.unraisablehook, lambda _: None   # h5py's failed flushes at dealloc
        try:
            err.__traceback__ = None   # drop the failed write's frames (and the dataset handles they hold)
            gc.collect()
            self.f.close()
        except Exception:
            pass
        finally:
            sys.unraisablehook = hook
        self.f = None
        self._lock.release()
        code = getattr(err, "errno", None)
        found = re.search(r"errno = (\d+)", str(err))   # h5py's messages carry the OS errno in their text
        if found and code in (None, errno.EIO):
            code = int(found.group(1))
        msg = err.strerror if isinstance(err, WriteError) else os.strerror(code) if code else str(err)
        raise WriteError(code or errno.EIO,
                         f"writing {self.path} failed: {msg}. Stopped; {n} episodes committed before it are kept "
                         f"in {self._target} (resume with mode='a' / collect --append)") from err

    def _write(self, L: int, cols: dict) -> None:
        start = self.num_rows
        cols["step_idx"] = np.arange(L, dtype=np.int64)
        cols["episode_idx"] = np.full(L, self.num_episodes, dtype=np.int64)
        for k, v in cols.items():
            if k not in self.f:
                chunks = (max(1, self.chunk_rows if k == "pixels" else 4096), *v.shape[1:])
                dtype = np.float32 if k == "action" else v.dtype
                self.f.create_dataset(k, shape=(0, *v.shape[1:]), maxshape=(None, *v.shape[1:]), dtype=dtype,
                                      chunks=chunks, compression=self.compression if k == "pixels" else None)
            ds = self.f[k]
            ds.resize(start + L, axis=0)
            ds[start:start + L] = v
            ds.flush()   # write its cached chunks now: a failure raises here, not silently at dealloc
        # Rows first, index last: a crash between the two leaves rows the index does not name.
        n = self.num_episodes
        for k, val in (("ep_len", L), ("ep_offset", start)):
            self.f[k].resize(n + 1, axis=0)
            self.f[k][n] = val
        self.f.flush()

    def close(self, complete: bool = True) -> None:
        if self.f is None:
            return
        try:
            if complete:
                self.f.attrs[COMPLETE_ATTR] = True
            self.f.close()
        except (OSError, RuntimeError) as e:
            self._abandon(e)
        self.f = None
        try:
            if complete and self._rename:
                os.replace(self.partial, self.path)
        finally:
            self._lock.release()

    def __enter__(self) -> "HDF5Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an exception the file stays marked incomplete (and under its .partial name when new).
        self.close(complete=exc_type is None)
