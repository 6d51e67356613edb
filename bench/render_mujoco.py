"""MuJoCo frame cost and fidelity: `python -m bench.render_mujoco --env cube --resolution 64`.

For Reacher and Cube at the resolution a model takes, times one frame (update_scene + render + resize, best
of a few passes over the same states, after a warm-up) for each way of making it, and measures how far each
picture is from the reference's: the env's own full-quality 224 px render (Reacher: the suite's 2048 shadow
map, Cube: OGBench's 4096, both with 4x multisampling) resized to the resolution with the model's resize.
Ways: `224-resized` (a 224 px render with this repo's fast shadow settings, resized: how small frames were
made before), `native` (rendered at the resolution itself), `env` (what the env does now: render at twice the
resolution and resize; Cube also with render-only coarse meshes, envs/mujoco_render.coarse_render_model),
`env-no-shadows` (the same with the scene's shadow pass off: what dropping shadows would buy and cost).
Also times the env's physics + data policy per step (`physics_policy_ms_per_step`), the rest of a collected
frame: with the `env` frame it bounds collection's frames/s per worker (`collect_bound_frames_per_s`).
Writes bench/reports/render-mujoco-<env>-<resolution>px-<device>.json and, with --frames-png, a PNG of the
reference and `env` frames side by side.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import REPORTS, device_tag, environment, write_report

REFERENCE_QUALITY = {"reacher": 2048, "cube": 4096}   # the suite's / OGBench's shadow map


def sample_states(name: str, n: int, seed: int = 1, every: int = 12) -> tuple[list, float]:
    """States along one data-policy episode (arm poses and, for Cube, cube poses that data shows), and the
    mean ms of one env step with the policy's action (physics + policy, no rendering)."""
    from lewm_fast.envs import make as make_env
    from lewm_fast.policies import make_policy

    env = make_env(name, render_mode=None)
    obs, info = env.reset(seed=seed)
    policy = make_policy(name, env, seed=seed)
    policy.reset(obs, info)
    states, steps, t = [], 0, time.perf_counter()
    while len(states) < n:
        for _ in range(every):
            obs, _, _, _, info = env.step(policy.act(obs, info))
        steps += every
        states.append(env.get_state())
    ms = 1e3 * (time.perf_counter() - t) / steps
    env.close()
    return states, ms


def frames_and_ms(env, states, passes: int) -> tuple[np.ndarray, float]:
    frames = []
    for s in states:
        env.set_state(s)
        frames.append(env.render())
    best = float("inf")
    for _ in range(passes):
        t = time.perf_counter()
        for s in states:
            env.set_state(s)
            env.render()
        best = min(best, (time.perf_counter() - t) / len(states))
    return np.stack(frames), 1e3 * best


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", default="cube", choices=sorted(REFERENCE_QUALITY))
    ap.add_argument("--resolution", type=int, default=64, help="frame size the model takes")
    ap.add_argument("--states", type=int, default=10, help="poses to render")
    ap.add_argument("--passes", type=int, default=3, help="timed passes (best kept)")
    ap.add_argument("--frames-png", default=None, help="write reference | env frames side by side here")
    args = ap.parse_args(argv)
    from lewm_fast.collect import fit_frames
    from lewm_fast.envs import make

    states, physics_ms = sample_states(args.env, args.states)
    R = args.resolution
    ref_env = make(args.env, shadow_size=REFERENCE_QUALITY[args.env], antialias=True, **({"mesh_cell": 0} if args.env == "cube" else {}))
    ref224, ref_ms = frames_and_ms(ref_env, states, 1)
    ref_env.close()
    reference = fit_frames(ref224, R)
    ways = {"224-resized": dict(resolution=224), "native": dict(resolution=R), "env": dict(resolution=R),
            "env-no-shadows": dict(resolution=R)}
    if args.env == "cube":
        ways["224-resized"]["mesh_cell"] = 0.0
        ways["native"]["mesh_cell"] = 0.0
    rows = {"reference": {"render_ms": ref_ms, "settings": {"resolution": 224, "shadow_size": REFERENCE_QUALITY[args.env],
                                                            "antialias": True}}}
    env_frames = None
    for way, kw in ways.items():
        env = make(args.env, **kw)
        if way == "native":   # render at R itself: bypass the twice-the-size render
            env._renderer.size = R
        if way == "env-no-shadows":
            env._renderer.shadows = False
        frames, ms = frames_and_ms(env, states, args.passes)
        t = time.perf_counter()
        small = fit_frames(frames, R)
        resize_ms = 1e3 * (time.perf_counter() - t) / len(states) if frames.shape[1] != R else 0.0
        diff = np.abs(small.astype(np.int16) - reference)
        rows[way] = {"render_ms": ms + resize_ms, "render_size": int(env._renderer.size), "settings": kw,
                     "mean_abs_diff_grey": float(diff.mean()), "p99_abs_diff_grey": float(np.percentile(diff, 99)),
                     "max_abs_diff_grey": int(diff.max())}
        if args.env == "cube":
            model = env._render_model if env._render_model is not None else env.sim.model
            rows[way]["mesh_faces_drawn"] = int(model.mesh_facenum.sum())
        if way == "env":
            env_frames = small
        env.close()
    base = rows["224-resized"]["render_ms"]
    for way in ways:
        rows[way]["speedup_vs_224_resized"] = base / rows[way]["render_ms"]
    if args.frames_png:
        from PIL import Image

        from lewm_fast.checkpoint import atomic_write
        pair = np.concatenate([reference[0], np.full((R, 2, 3), 255, np.uint8), env_frames[0]], axis=1)
        img = Image.fromarray(pair).resize((pair.shape[1] * 3, R * 3), Image.NEAREST)
        atomic_write(args.frames_png, lambda tmp: img.save(tmp, format="PNG"))
    # a collected frame is one env step (physics + the data policy) and one `env` frame: its frames/s per worker
    # ceiling with the reference's look, and without shadows (writing and worker start-up not counted)
    bound = {"physics_policy_ms_per_step": physics_ms,
             "collect_bound_frames_per_s": 1e3 / (physics_ms + rows["env"]["render_ms"]),
             "collect_bound_frames_per_s_no_shadows": 1e3 / (physics_ms + rows["env-no-shadows"]["render_ms"])}
    out = write_report(REPORTS / f"render-mujoco-{args.env}-{R}px-{device_tag()}.json",
                       {"environment": environment(), "settings": vars(args), "result": rows, "collection": bound})
    print(f"| {args.env} {R} px | render size | ms/frame | x vs 224-resized | mean abs diff vs reference (grey) |\n"
          "|---|---|---|---|---|")
    for way in ways:
        r = rows[way]
        print(f"| {way} | {r['render_size']} | {r['render_ms']:.1f} | {r['speedup_vs_224_resized']:.1f} | "
              f"{r['mean_abs_diff_grey']:.2f} |")
    print(f"physics + data policy {physics_ms:.2f} ms/step: collection at most "
          f"{bound['collect_bound_frames_per_s']:.0f} frames/s per worker with shadows, "
          f"{bound['collect_bound_frames_per_s_no_shadows']:.0f} without")
    print(f"wrote {out}")
    return {**rows, "collection": bound}


if __name__ == "__main__":
    import sys

    from lewm_fast.cli import run_cli
    sys.exit(run_cli(main, prog="bench.render_mujoco"))
