"""Data-collection throughput: `python -m bench.collect --env pusht --episodes 100 --workers 2`.

Times `lewm_fast.collect.collect` end to end (worker start, env stepping, expert policy, rendering, lzf
compression, HDF5 writes) into a temporary file and reports episodes per minute and frames per second, in
all and per worker, in bench/reports/collect-<env>[-<resolution>px][-resized]-<device>.json. `--resolution`
collects frames at that size; `--frames resized` renders 224 px frames and resizes them (how reacher and cube
were collected before they rendered small frames themselves), for a before/after pair in the same run.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.common import REPORTS, device_tag, environment, write_report


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", default="pusht", help="pusht, tworoom, reacher or cube")
    ap.add_argument("--episodes", type=int, default=100, help="episodes to collect")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="collection worker processes")
    ap.add_argument("--seed", type=int, default=0, help="collection seed")
    ap.add_argument("--resolution", type=int, default=None, help="frame size stored (default: the env's 224)")
    ap.add_argument("--frames", choices=["env", "resized"], default="env", help="see lewm_fast.collect --frames")
    ap.add_argument("--max-steps", type=int, default=None, help="steps per episode at most (collect's default)")
    ap.add_argument("--no-stop-on-success", dest="stop_on_success", action="store_false",
                    help="keep going after success (fixed-length episodes: comparable runs)")
    args = ap.parse_args(argv)
    from lewm_fast.collect import collect
    from lewm_fast.data import EpisodeFile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{args.env}.h5"
        t0 = time.perf_counter()
        collect(args.env, args.episodes, str(path), seed=args.seed, workers=args.workers, resolution=args.resolution,
                env_frames=args.frames == "env", max_steps=args.max_steps, stop_on_success=args.stop_on_success)
        wall = time.perf_counter() - t0
        src = EpisodeFile(path)
        frames, size = int(src.n_rows), path.stat().st_size
    result = {"env": args.env, "episodes": args.episodes, "workers": args.workers, "wall_s": wall,
              "episodes_per_min": 60 * args.episodes / wall, "frames": frames, "frames_per_s": frames / wall,
              "frames_per_s_per_worker": frames / wall / args.workers,
              "file_bytes": size, "bytes_per_frame": size / frames}
    tag = (f"-{args.resolution}px" if args.resolution else "") + ("-resized" if args.frames == "resized" else "")
    out = write_report(REPORTS / f"collect-{args.env}{tag}-{device_tag()}.json",
                       {"environment": environment(), "settings": vars(args), "result": result})
    print(f"| env | episodes | workers | wall s | episodes/min | frames/s | MB |\n|---|---|---|---|---|---|---|\n"
          f"| {args.env} | {args.episodes} | {args.workers} | {wall:.1f} | {result['episodes_per_min']:.0f} | "
          f"{result['frames_per_s']:.0f} | {size / 1e6:.0f} |\nwrote {out}")
    return result


if __name__ == "__main__":
    import sys

    from lewm_fast.cli import run_cli
    sys.exit(run_cli(main, prog="bench.collect"))
