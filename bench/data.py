"""Clip-reading throughput of lewm_fast.data: `python -m bench.data [--file F.h5]`.

Times ClipDataset + DataLoader (batch 128, clips of 4 frames, frameskip 5) over an HDF5 file, for
0 and N workers, and writes bench/reports/data-<device>.json. Without --file it writes a synthetic
224x224 file first (uncompressed and lzf). A GPU training step of the paper model consumes about 128
clips; the reader must deliver more clips/s than the trainer eats.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import REPORTS, device_tag, environment, write_report
from lewm_fast.data import HDF5Writer, make_datasets


def synthetic_file(path: Path, episodes: int, length: int, compression: str | None) -> Path:
    rng = np.random.default_rng(0)
    with HDF5Writer(path, compression=compression) as w:
        for _ in range(episodes):
            px = np.full((length, 224, 224, 3), 255, np.uint8)
            xy = rng.integers(20, 200, (length, 2))
            for t, (x, y) in enumerate(xy):
                px[t, y - 15:y + 15, x - 15:x + 15] = (65, 105, 225)
            act = rng.uniform(-1, 1, (length, 2)).astype(np.float32)
            act[-1] = np.nan
            w.write_episode({"pixels": px, "action": act, "state": xy.astype(np.float64)})
    return path


def clips_per_second(path: Path, workers: int, batches: int) -> float:
    train, _ = make_datasets(path, val_fraction=0.0)
    loader = torch.utils.data.DataLoader(train, batch_size=128, shuffle=True, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)   # worker start-up is not throughput
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            n += next(it)["pixels"].shape[0]
        except StopIteration:
            break
    return n / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", type=Path, default=None, help="HDF5 file to read (default: write synthetic ones)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the parallel measurement")
    p.add_argument("--batches", type=int, default=10, help="batches of 128 clips timed per setting")
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as d:
        files = [(args.file, "given")] if args.file else [
            (synthetic_file(Path(d) / f"syn-{c or 'raw'}.h5", 24, 120, c), c or "uncompressed") for c in (None, "lzf")]
        for path, kind in files:
            for workers in sorted({0, args.workers}):
                cps = clips_per_second(path, workers, args.batches)
                results.append({"file": kind, "workers": workers, "clips_per_s": cps,
                                "frames_per_s": 4 * cps, "size_bytes": path.stat().st_size})
                print(f"{kind:>13} workers={workers}: {cps:8.1f} clips/s ({4 * cps:8.1f} frames/s)", flush=True)
    out = write_report(REPORTS / f"data-{device_tag()}.json", {"environment": environment(), "results": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    import sys

    from lewm_fast.cli import run_cli
    sys.exit(run_cli(main, prog="bench.data"))
