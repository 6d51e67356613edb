"""Collect episodes with an env's scripted policy into an HDF5 dataset (spec E layout).

    python -m lewm_fast.collect --env pusht --episodes 1000 --out data/pusht.h5 --seed 0 --workers 4

Episode i is a pure function of (env, seed, i, max steps): its env and policy seeds derive from
(seed, i), so a file does not depend on the number of workers, and `--append` continues with the next
episode indices (new seeds) after those already in the file. Rows are frames: row t holds the frame,
state and proprio after t steps and the action taken from it (NaN on an episode's last row). An episode
ends when the env reports success (unless --no-stop-on-success) or after --max-steps steps.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys

import numpy as np

DEFAULT_MAX_STEPS = {"pusht": 300, "tworoom": 100, "reacher": 200, "cube": 200}

_worker_envs: dict = {}


def episode_seed(seed: int, index: int) -> int:
    """Seed of episode `index` of a collection run with master seed `seed` (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint32)[0])


def _env(name: str, resolution: int | None = None, env_frames: bool = True):
    key = (name, resolution, env_frames)
    if key not in _worker_envs:
        from lewm_fast.envs import make, resolution_kwargs
        _worker_envs[key] = make(name, **(resolution_kwargs(name, resolution) if env_frames else {}))
    return _worker_envs[key]


def resize_uint8(frames: np.ndarray, size: int) -> np.ndarray:
    """(L, H, W, 3) uint8 -> (L, size, size, 3) uint8 with the model's own resize (lewm_fast.model)."""
    import torch

    from lewm_fast.model import resize_frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    return resize_frames(x, size).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def fit_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(n, h, w, 3) uint8 frames at size x size: unchanged when they already are, else resize_uint8 (so live
    env frames match frames stored by `collect --resolution`)."""
    if frames.shape[1:3] == (size, size):
        return frames
    return resize_uint8(frames, size)


def run_episode(env_name: str, seed: int, index: int, max_steps: int, stop_on_success: bool = True,
                resolution: int | None = None, policy_noise: float | None = None, env_frames: bool = True) -> dict:
    """Roll out one episode; returns the HDF5 columns (pixels, action, state, proprio, goal_state)."""
    from lewm_fast.policies import make_policy

    env = _env(env_name, resolution, env_frames)
    s = episode_seed(seed, index)
    obs, info = env.reset(seed=s)
    policy = make_policy(env_name, env, seed=s, noise=policy_noise)
    policy.reset(obs, info)
    frames, states, proprios, actions = [env.render()], [obs["state"]], [obs["proprio"]], []
    done = stop_on_success and bool(info.get("success", False))
    for _ in range(max_steps):
        if done:
            break
        action = np.asarray(policy.act(obs, info), dtype=np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        actions.append(action)
        frames.append(env.render())
        states.append(obs["state"])
        proprios.append(obs["proprio"])
        done = (stop_on_success and bool(info.get("success", False))) or truncated
    L = len(frames)
    act_dim = env.action_space.shape[0]
    action_col = np.full((L, act_dim), np.nan, dtype=np.float32)
    if actions:
        action_col[:-1] = np.stack(actions)
    goal = getattr(env, "goal_state", None)
    pixels = np.stack(frames).astype(np.uint8)
    if resolution is not None:
        pixels = fit_frames(pixels, resolution)
    ep = {"pixels": pixels, "action": action_col,
          "state": np.stack(states).astype(np.float64), "proprio": np.stack(proprios).astype(np.float64)}
    if goal is not None:
        ep["goal_state"] = np.repeat(np.asarray(goal, dtype=np.float64)[None], L, axis=0)
    return ep


def _init_worker() -> None:
    # one torch thread per worker (torch only resizes frames here): with N workers on N cores, torch's
    # default of N threads each oversubscribes the cores the renderers need
    import torch
    torch.set_num_threads(1)


def _run_episode_star(args):
    return run_episode(*args)


def collect(env: str, episodes: int, out: str, seed: int = 0, workers: int = 1, max_steps: int | None = None,
            append: bool = False, stop_on_success: bool = True, progress: bool = True,
            compression: str | None = "lzf", resolution: int | None = None,
            policy_noise: float | None = None, env_frames: bool = True) -> int:
    """Write `episodes` new episodes to `out`; returns the file's episode count. With `resolution`, frames of
    envs in envs.RENDERS_AT_RESOLUTION come from the env at that size (env_frames=False: a 224 px render
    resized, as for the other envs)."""
    import lewm_fast
    from lewm_fast.data import HDF5Writer, check_output_path

    from tqdm import tqdm

    env = env.lower()
    check_output_path(out)
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    max_steps = DEFAULT_MAX_STEPS.get(env, 200) if max_steps is None else max_steps
    if max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {max_steps}")
    from lewm_fast.envs import resolution_kwargs
    from lewm_fast.policies import make_policy
    if resolution is not None and resolution < 8:
        raise ValueError(f"--resolution must be >= 8, got {resolution}")
    env_frames = bool(env_frames and resolution_kwargs(env, resolution))
    probe_env = _env(env, resolution, env_frames)  # fail fast (unknown env or policy) before any file is touched
    policy_name = type(make_policy(env, probe_env, seed=0, noise=policy_noise)).__name__
    metadata = {"env": env, "policy": policy_name, "seed": seed, "max_steps": max_steps,
                "resolution": resolution or 0, "policy_noise": -1.0 if policy_noise is None else policy_noise,
                "stop_on_success": stop_on_success, "lewm_fast_version": lewm_fast.__version__,
                # how reduced-resolution frames were made: by the env itself, or a 224 px render resized
                "frames": "env" if env_frames else "resized"}
    compression = None if compression in (None, "none") else compression
    with HDF5Writer(out, mode="a" if append else "w", metadata=metadata, compression=compression) as writer:
        start = writer.num_episodes
        jobs = [(env, seed, i, max_steps, stop_on_success, resolution, policy_noise, env_frames)
                for i in range(start, start + episodes)]
        bar = tqdm(total=episodes, desc=f"collect {env}", unit="ep", disable=not progress)
        if workers == 1:
            results = map(_run_episode_star, jobs)
            pool = None
        else:
            # spawn: workers build their own env (MuJoCo GL contexts and torch threads do not survive fork)
            pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker)
            results = pool.imap(_run_episode_star, jobs, chunksize=1)  # in episode order
        try:
            for ep in results:
                writer.write_episode(ep)
                bar.update(1)
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
        return writer.num_episodes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lewm_fast.collect",
                                 description="Collect scripted-policy episodes into an HDF5 dataset.")
    ap.add_argument("--env", required=True, help="pusht, tworoom, reacher or cube")
    ap.add_argument("--episodes", type=int, required=True, help="number of new episodes to collect")
    ap.add_argument("--out", required=True, help="output .h5 file (written atomically)")
    ap.add_argument("--seed", type=int, default=0, help="master seed; episode i is seeded from (seed, i)")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                    help="parallel worker processes (the file does not depend on this)")
    ap.add_argument("--compression", choices=["lzf", "gzip", "none"], default="lzf",
                    help="pixel compression (h5py built-in filters; lzf makes 2-D env frames ~10x smaller)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help=f"steps per episode at most (default {DEFAULT_MAX_STEPS})")
    ap.add_argument("--append", action="store_true", help="add episodes to an existing (or interrupted) file")
    ap.add_argument("--no-stop-on-success", dest="stop_on_success", action="store_false",
                    help="keep going after the env reports success")
    ap.add_argument("--resolution", type=int, default=None,
                    help="store frames resized to this many pixels (default: the env's 224); for small models")
    ap.add_argument("--frames", choices=["env", "resized"], default="env",
                    help="with --resolution: reacher and cube render small frames themselves (env, default: at twice "
                         "the size, then resized; cube also with coarser arm meshes), or render 224 px and resize")
    ap.add_argument("--policy-noise", type=float, default=None,
                    help="Gaussian action-noise std added by the scripted policy at every step (PushT expert; "
                         "default: the policy's own, 0 for PushT). Noisy data shows the model off-expert actions")
    args = ap.parse_args(argv)
    n = collect(args.env, args.episodes, args.out, seed=args.seed, workers=args.workers, max_steps=args.max_steps,
                append=args.append, stop_on_success=args.stop_on_success, compression=args.compression,
                resolution=args.resolution, policy_noise=args.policy_noise, env_frames=args.frames == "env")
    print(f"{args.out}: {n} episodes")
    return 0


if __name__ == "__main__":
    from lewm_fast.cli import run_cli
    sys.exit(run_cli(main, prog="lewm_fast.collect"))
