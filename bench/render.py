"""Benchmark the native 2-D renderer against the reference's renderers: `python -m bench.render`.

Frames per second of lewm_fast's PushT and TwoRoom rendering (one batched call on all cores, one batched
call on one thread, and one call per frame) next to the reference's `render()` (stable-worldmodel 0.1.1,
pygame + OpenCV for PushT, torch for TwoRoom), plus env steps per second of both PushT envs. Writes the
raw timings with machine, versions and git commit to bench/reports/render-<device>.json (bench/common.py) and
prints a markdown table. The reference columns are skipped (null) when it cannot be imported.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import REPORTS, device_tag, environment, write_report

ROOT = Path(__file__).resolve().parent.parent


def best_of(fn, repeats: int) -> list[float]:
    """Wall times (s) of `repeats` calls after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def pusht_states(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(50, 450, (n, 2)), rng.uniform(100, 400, (n, 2)),
                            rng.uniform(0, 2 * np.pi, n), np.zeros((n, 2))])


def bench_ours(n: int, repeats: int) -> dict:
    from lewm_fast.envs.render import render_pusht, render_tworoom

    s = pusht_states(n)
    p = np.random.default_rng(1).uniform(21, 203, (n, 2))
    single_n = min(n, 200)
    res = {}
    for name, fn_batch, fn_one, arr in [("pusht", render_pusht, render_pusht, s), ("tworoom", render_tworoom, render_tworoom, p)]:
        res[name] = {
            "batched_all_threads_s": best_of(lambda: fn_batch(arr, threads=0), repeats), "batched_frames": n,
            "batched_1_thread_s": best_of(lambda: fn_batch(arr, threads=1), repeats),
            "per_frame_calls_s": best_of(lambda: [fn_one(x, threads=1) for x in arr[:single_n]], repeats),
            "per_frame_calls_frames": single_n,
        }
    return res


def render_seconds(env, states) -> float:
    """Seconds spent in the reference env's render() alone; placing each state is outside the timed region."""
    total = 0.0
    for s in states:
        env._set_state(s)
        t = time.perf_counter()
        env.render()
        total += time.perf_counter() - t
    return total


def bench_reference(n: int, repeats: int) -> dict | None:
    sys.path.insert(0, str(ROOT / "tests"))
    from reference_compat import REFERENCE_ERROR, import_reference

    if import_reference() is None:
        print(f"reference skipped: {REFERENCE_ERROR}")
        return None
    from stable_worldmodel.envs.pusht import PushT
    from stable_worldmodel.envs.two_room import TwoRoomEnv

    out = {}
    env = PushT()
    env.reset(seed=0)
    states = pusht_states(n)
    render_seconds(env, states)  # warm-up
    out["pusht"] = {"render_s": [render_seconds(env, states) for _ in range(repeats)], "frames": n}
    tr = TwoRoomEnv()
    tr.reset(seed=0)
    pos = np.random.default_rng(1).uniform(21, 203, (min(n, 100), 2)).astype(np.float32)
    render_seconds(tr, pos)  # warm-up
    out["tworoom"] = {"render_s": [render_seconds(tr, pos) for _ in range(repeats)], "frames": len(pos)}
    actions = np.random.default_rng(2).uniform(-1, 1, (500, 2)).astype(np.float32)
    env.reset(seed=0)
    out["pusht_step"] = {"s": best_of(lambda: [env.step(a) for a in actions], repeats), "steps": len(actions)}
    return out


def bench_steps(repeats: int) -> dict:
    from lewm_fast.envs import make

    env = make("pusht")
    env.reset(seed=0)
    actions = np.random.default_rng(2).uniform(-1, 1, (500, 2)).astype(np.float32)
    res = {"pusht_step": {"s": best_of(lambda: [env.step(a) for a in actions], repeats), "steps": len(actions)}}

    def step_and_render():
        for a in actions[:200]:
            env.step(a)
            env.render()

    res["pusht_step_render"] = {"s": best_of(step_and_render, repeats), "steps": 200}
    return res


def renderer_versions() -> dict:
    """Versions of the packages behind the renderers and envs (python/torch/lewm_fast are in environment())."""
    out = {"numpy": np.__version__}
    for mod in ("pymunk", "pygame", "cv2", "stable_worldmodel"):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", getattr(m, "version", None)))
        except Exception:  # a missing optional package is simply not listed
            out[mod] = None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=512, help="frames per batched call")
    ap.add_argument("--ref-frames", type=int, default=200, help="frames rendered by the reference per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    from lewm_fast.cli import positive
    for name in ("frames", "ref_frames", "repeats"):
        positive("--" + name.replace("_", "-"), getattr(args, name))
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

    ours = bench_ours(args.frames, args.repeats)
    steps = bench_steps(args.repeats)
    ref = bench_reference(args.ref_frames, args.repeats)

    med = lambda xs: float(np.median(xs))  # noqa: E731
    rows = []  # (env, renderer, fps from the median time, fps from the best time, speed-up of the medians)
    for env_name in ("pusht", "tworoom"):
        o = ours[env_name]
        ref_fps = None if ref is None else ref[env_name]["frames"] / med(ref[env_name]["render_s"])
        for label, key, frames in [("native batched, all threads", "batched_all_threads_s", o["batched_frames"]),
                                   ("native batched, 1 thread", "batched_1_thread_s", o["batched_frames"]),
                                   ("native, one call per frame", "per_frame_calls_s", o["per_frame_calls_frames"])]:
            fps = frames / med(o[key])
            rows.append((env_name, label, fps, frames / min(o[key]), None if ref_fps is None else fps / ref_fps))
        if ref_fps is not None:
            best = ref[env_name]["frames"] / min(ref[env_name]["render_s"])
            rows.append((env_name, "reference render()", ref_fps, best, 1.0))
    step_rows = [("lewm_fast PushT step", steps["pusht_step"]["steps"] / med(steps["pusht_step"]["s"])),
                 ("lewm_fast PushT step + render()", steps["pusht_step_render"]["steps"] / med(steps["pusht_step_render"]["s"]))]
    if ref is not None:
        step_rows.append(("reference PushT step", ref["pusht_step"]["steps"] / med(ref["pusht_step"]["s"])))

    env = environment()
    report = {
        "environment": env, "versions": renderer_versions(),
        "args": vars(args) | {"out": str(args.out) if args.out else None},
        "raw": {"ours": ours, "ours_steps": steps, "reference": ref},
        "summary": {"render_fps": [dict(env=e, renderer=r, fps_median=f, fps_best=b, speedup_vs_reference=x)
                                   for e, r, f, b, x in rows],
                    "steps_per_s": {k: v for k, v in step_rows}},
    }
    out = write_report(args.out or REPORTS / f"render-{device_tag()}.json", report)

    print(f"\n{env['cpu']}, {env['cpu_count']} cores\n")
    print("| env | renderer | frames/s (median) | frames/s (best) | x reference (medians) |\n|---|---|---:|---:|---:|")
    for e, r, f, b, x in rows:
        print(f"| {e} | {r} | {f:,.0f} | {b:,.0f} | {'' if x is None else f'{x:,.1f}x'} |")
    print("\n| env stepping | steps/s (median) |\n|---|---:|")
    for l, v in step_rows:
        print(f"| {l} | {v:,.0f} |")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    import sys

    from lewm_fast.cli import run_cli
    sys.exit(run_cli(main, prog="bench.render"))
