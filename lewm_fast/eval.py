"""Goal-reaching evaluation (spec C.4): MPC with the batched planner from dataset start/goal pairs.

    python -m lewm_fast.eval --env pusht --checkpoint pusht.safetensors --dataset pusht.h5
    python -m lewm_fast.eval --env pusht --dataset pusht.h5 --policy random --seeds 42,43,44

Protocol (per seed): `num_eval` distinct dataset rows drawn with np.random.default_rng(seed) among rows
whose episode still has `goal_offset` steps after them; goal = the frame and state `goal_offset` raw
steps ahead. Every env is set to its start state and told its goal state; all still-running envs are
planned together in one batched solve; each plan's first `receding_horizon` blocks (x frameskip raw
actions) are executed before replanning; success = the env reports success at any step within
`budget` steps (an env that succeeded stops, as the reference's terminated envs do).

Policies: `cem` / `icem` / `mppi` (the planner), `random` (uniform actions: the baseline) and
`replay` (the dataset's own actions from the start row: a check of env/dataset consistency).

The CLI process keeps freed CPU memory for reuse (lewm_fast/planning/allocator.py: same plans, ~8% less wall
time on a full-size PushT evaluation); LEWM_FAST_KEEP_FREED_MEMORY=0 opts out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from lewm_fast.cli import positive, run_cli
from lewm_fast.collect import fit_frames


DEFAULT_ITERATIONS = {"pusht": 30}   # the paper: 30 CEM iterations on PushT, 10 on the other envs


def goal_distance(env_name: str, state: np.ndarray, goal: np.ndarray) -> float | None:
    """Distance of a state to the goal state in units of the env's success test (1 = its threshold;
    PushT combines position and angle), or None for an env without one.
    A continuous view of progress where the binary success rate is near 0 or 1."""
    state, goal = np.asarray(state, np.float64), np.asarray(goal, np.float64)
    # thresholds from the envs' own success tests (imported per env: each module needs its simulator)
    if env_name == "pusht":    # agent + block positions jointly within SUCCESS_POS, block angle within SUCCESS_ANGLE
        from lewm_fast.envs.pusht import SUCCESS_ANGLE, SUCCESS_POS
        pos = np.linalg.norm(state[:4] - goal[:4])
        ang = abs((state[4] - goal[4] + np.pi) % (2 * np.pi) - np.pi)
        return float(np.hypot(pos / SUCCESS_POS, ang / SUCCESS_ANGLE))
    if env_name == "tworoom":
        from lewm_fast.envs.tworoom import SUCCESS_DIST
        return float(np.linalg.norm(state[:2] - goal[:2]) / SUCCESS_DIST)
    if env_name == "reacher":   # qpos_match: each joint within QPOS_THRESHOLD, angles not wrapped (as the env)
        from lewm_fast.envs.reacher import QPOS_THRESHOLD
        return float(np.linalg.norm(state[:2] - goal[:2]) / QPOS_THRESHOLD)
    if env_name == "cube":      # the cube's centre within SUCCESS_DISTANCE of the goal state's
        from lewm_fast.envs.cube import CUBE_QPOS, SUCCESS_DISTANCE
        cube = slice(CUBE_QPOS, CUBE_QPOS + 3)
        return float(np.linalg.norm(state[cube] - goal[cube]) / SUCCESS_DISTANCE)
    return None


def sample_pairs(ep_len: np.ndarray, ep_offset: np.ndarray, num_eval: int, goal_offset: int, seed: int):
    """Start rows (global) with `goal_offset` steps left in their episode; distinct, uniform, seeded."""
    valid = np.concatenate([off + np.arange(n - goal_offset) for n, off in zip(ep_len, ep_offset)
                            if n - goal_offset > 0] or [np.zeros(0, np.int64)]).astype(np.int64)
    if len(valid) < num_eval:
        raise ValueError(f"dataset has {len(valid)} rows with {goal_offset} steps after them; need {num_eval}")
    starts = np.random.default_rng(seed).choice(valid, size=num_eval, replace=False)
    return starts, starts + goal_offset


def _episode_end(ds, rows: np.ndarray) -> np.ndarray:
    ep = np.searchsorted(ds.ep_offset, rows, side="right") - 1
    return ds.ep_offset[ep] + ds.ep_len[ep]


def dataset_pairs(ds, num_eval: int, goal_offset: int, seed: int) -> dict:
    """Spec C.4 start/goal pairs from a dataset: states, goal frames, and the rows they came from."""
    starts, goals = sample_pairs(ds.ep_len, ds.ep_offset, num_eval, goal_offset, seed)
    states = ds.cache["state"]
    return {"start_states": states[starts], "goal_states": states[goals], "goal_pixels": ds.pixels(goals),
            "replay_actions": [ds.cache["action"][r:end] for r, end in zip(starts, _episode_end(ds, starts))],
            "start_rows": starts.tolist(), "goal_rows": goals.tolist()}


def expert_pairs(env_name: str, num_eval: int, goal_offset: int, seed: int, env_kwargs: dict | None = None,
                 max_start: int = 25) -> dict:
    """Start/goal pairs without a dataset: pair i rolls the env's own data policy (the collection expert,
    noise included) from a reset seeded by (seed, i) for s + goal_offset steps, s uniform in [0, max_start];
    the start is the state after s steps, the goal the state and frame goal_offset steps later."""
    from lewm_fast.collect import episode_seed
    from lewm_fast.envs import make
    from lewm_fast.policies import make_policy

    env = make(env_name, **(env_kwargs or {}))
    starts, goals, frames, replay = [], [], [], []
    for i in range(num_eval):
        ep_seed = episode_seed(seed, i)
        s = int(np.random.default_rng(ep_seed).integers(0, max_start + 1))
        obs, info = env.reset(seed=ep_seed)
        policy = make_policy(env_name, env, seed=ep_seed)
        policy.reset(obs, info)
        actions = []
        for t in range(s + goal_offset):
            if t == s:
                starts.append(np.asarray(obs["state"], np.float64).copy())
            a = np.asarray(policy.act(obs, info), np.float32)
            if t >= s:
                actions.append(a)
            obs, _, _, _, info = env.step(a)
        goals.append(np.asarray(obs["state"], np.float64).copy())
        frames.append(env.render())
        replay.append(np.stack(actions))
    env.close()
    return {"start_states": np.stack(starts), "goal_states": np.stack(goals), "goal_pixels": np.stack(frames),
            "replay_actions": replay}


def write_video_grid(path: str | Path, frames: np.ndarray, success: np.ndarray, fps: int = 10) -> None:
    """frames (T, N, h, w, 3) uint8 -> an animated GIF grid (atomically); a green / red border marks each
    episode's success once it has happened."""
    from PIL import Image

    from lewm_fast.checkpoint import atomic_write

    T, N, h, w, _ = frames.shape
    cols = int(np.ceil(np.sqrt(N)))
    rows = int(np.ceil(N / cols))
    pages = []
    for t in range(T):
        grid = np.full((rows * (h + 4), cols * (w + 4), 3), 255, np.uint8)
        for i in range(N):
            r, c = divmod(i, cols)
            y, x = r * (h + 4), c * (w + 4)
            grid[y:y + h + 4, x:x + w + 4] = (40, 170, 60) if success[t, i] else (200, 60, 60)
            grid[y + 2:y + 2 + h, x + 2:x + 2 + w] = frames[t, i]
        pages.append(Image.fromarray(grid))
    atomic_write(path, lambda tmp: pages[0].save(tmp, format="GIF", save_all=True, append_images=pages[1:],
                                                 duration=int(1000 / fps), loop=0))


def make_envs(env_name: str, n: int, env_kwargs: dict | None = None) -> list:
    """n envs of one kind for the episodes of one evaluation."""
    from lewm_fast.envs import make
    return [make(env_name, **(env_kwargs or {})) for _ in range(n)]


def run_episodes(env_name: str, pairs: dict, policy: str, planner=None, budget: int = 50,
                 receding_horizon: int = 5, seed: int = 42, env_kwargs: dict | None = None,
                 video: str | None = None, video_size: int = 96, envs: list | None = None) -> dict:
    """MPC episodes from pairs (start_states, goal_states, goal_pixels[, replay_actions]); all envs that still
    need a plan are planned together in one batched solve. video: path of a GIF grid of all episodes.
    envs: the n envs to use (each is reset, then set to its start state), e.g. kept from an earlier seed."""
    n = len(pairs["start_states"])
    own_envs = envs is None
    if own_envs:
        envs = make_envs(env_name, n, env_kwargs)
    elif len(envs) != n:
        raise ValueError(f"{len(envs)} envs given for {n} start/goal pairs")
    goal_px = pairs["goal_pixels"]
    # a planner that reads the envs' true states (bench.oracle_plan: the simulator as the world model)
    from_states = getattr(planner, "plans_from_states", False)
    if planner is not None and not from_states:
        goal_px = fit_frames(goal_px, planner.cfg.image_size)
    for i, e in enumerate(envs):
        e.reset(seed=seed + i)
        e.set_state(pairs["start_states"][i])
        e.set_goal_state(pairs["goal_states"][i])
    success = np.zeros(n, bool)
    first_success = np.full(n, -1)
    buffers = [[] for _ in range(n)]
    rng = np.random.default_rng(seed)
    solve_latency, env_time, solves, env_solves = [], 0.0, 0, 0
    # where the wall time goes: rendering the envs that replan (+ resizing), encoding their frames and goals,
    # the CEM search, stepping the envs
    render_time = encode_time = search_time = 0.0
    t_start = time.perf_counter()
    clips, clip_success = [], []

    def record():   # one downsized frame of every env (finished ones keep their last frame)
        clips.append(fit_frames(np.stack([e.render() for e in envs]), video_size))
        clip_success.append(success.copy())

    for step in range(budget):
        if video:
            record()
        active = np.flatnonzero(~success)
        if len(active) == 0:
            break
        need = [i for i in active if not buffers[i]]
        if need and policy not in ("random", "replay"):
            if from_states:
                t0 = time.perf_counter()
                actions = planner.plan_states([envs[i] for i in need], pairs["goal_states"][need], env_ids=need)
                frameskip = planner.frameskip
            else:
                t0 = time.perf_counter()
                frames = fit_frames(np.stack([envs[i].render() for i in need]), planner.cfg.image_size)
                render_time += time.perf_counter() - t0
                t0 = time.perf_counter()
                # env_ids: env i keeps drawing from its own noise stream as other envs finish (batch invariance)
                result = planner.plan(frames, goal_px[need], env_ids=need)
                actions = result.actions.numpy().astype(np.float64)
                encode_time += result.timing["encode_s"]
                search_time += result.timing["solve_s"]
                frameskip = planner.cfg.frameskip
            solve_latency.append(time.perf_counter() - t0)
            solves += 1
            env_solves += len(need)
            for row, i in enumerate(need):
                buffers[i] = list(actions[row, :receding_horizon * frameskip])
        t0 = time.perf_counter()
        for i in active:
            if policy == "random":
                a = rng.uniform(envs[i].action_space.low, envs[i].action_space.high)
            elif policy == "replay":
                acts = pairs["replay_actions"][i]
                a = acts[step].astype(np.float64) if step < len(acts) else np.zeros(acts.shape[1])
                if not np.isfinite(a).all():       # past the episode end: stay put
                    a = np.zeros_like(a)
            else:
                a = buffers[i].pop(0)
            _, _, _, _, info = envs[i].step(a)
            if info["success"]:
                success[i] = True
                first_success[i] = step + 1
        env_time += time.perf_counter() - t0
    if video:
        record()
        write_video_grid(video, np.stack(clips), np.stack(clip_success))
    start_d = [goal_distance(env_name, a, b) for a, b in zip(pairs["start_states"], pairs["goal_states"])]
    final_d = [goal_distance(env_name, e.get_state(), g) for e, g in zip(envs, pairs["goal_states"])]
    if own_envs:
        for e in envs:
            e.close()
    out = {"success_rate": float(success.mean()), "successes": int(success.sum()), "episodes": n,
           "start_distance": start_d, "final_distance": final_d,
           "mean_final_distance": None if None in final_d else float(np.mean(final_d)),
           "first_success_step": first_success.tolist(), "solves": solves, "env_solves": env_solves,
           "solve_latency_s": solve_latency,
           "mean_solve_latency_s": float(np.mean(solve_latency)) if solve_latency else None,
           "env_time_s": env_time + render_time,
           "stage_time_s": {"render": render_time, "encode": encode_time, "search": search_time, "step": env_time},
           "wall_time_s": time.perf_counter() - t_start}
    out.update({k: pairs[k] for k in ("start_rows", "goal_rows") if k in pairs})
    return out


def evaluate(env: str, dataset: str | None = None, checkpoint: str | None = None, policy: str = "cem",
             seeds=(42,), num_eval: int = 50, goal_offset: int = 25, budget: int = 50, receding_horizon: int = 5,
             device=None, backend: str = "auto", precision: str = "fp32", planner_kwargs: dict | None = None,
             env_kwargs: dict | None = None, progress: bool = False, video: str | None = None) -> dict:
    """Success rate of `policy` over one evaluation per seed. Start/goal pairs come from `dataset` (spec C.4)
    or, without one, from the env's own expert (`expert_pairs`). `checkpoint` is a path or a shipped name."""
    from lewm_fast.planner import Planner

    planner = None
    if policy in ("cem", "icem", "mppi"):
        if checkpoint is None:
            raise ValueError(f"policy {policy!r} needs --checkpoint")
        planner = Planner.from_checkpoint(checkpoint, device=device, backend=backend, precision=precision,
                                          solver=policy, env=env, **(planner_kwargs or {}))
        if planner.history_len != 1:
            raise NotImplementedError("evaluation with history length > 1 is not implemented (the paper plans with 1)")
    elif policy not in ("random", "replay"):
        raise ValueError(f"unknown policy {policy!r}; choose cem, icem, mppi, random or replay")
    if planner is not None:
        # frames at the model's size made the way its data's were (MuJoCo envs render them themselves)
        from lewm_fast.envs import resolution_kwargs
        env_kwargs = {**resolution_kwargs(env, planner.cfg.image_size), **(env_kwargs or {})}
    ds = None
    if dataset is not None:
        from lewm_fast.data import EpisodeDataset
        ds = EpisodeDataset(dataset, columns=("state",))
        data_env = ds.attrs.get("env")
        if data_env is not None and str(data_env).lower() != env.lower():
            raise ValueError(f"dataset {dataset} was collected in env {data_env!r}, not {env!r}")
    runs, envs = {}, None
    for seed in seeds:
        pairs = (dataset_pairs(ds, num_eval, goal_offset, seed) if ds is not None
                 else expert_pairs(env, num_eval, goal_offset, seed, env_kwargs))
        if planner is not None:
            planner.generator.manual_seed(seed)
        if progress:
            print(f"[eval] {env} {policy} seed {seed}: {num_eval} episodes, budget {budget}", flush=True)
        vid = None if video is None else (video if len(seeds) == 1 else str(Path(video).with_suffix(f".seed{seed}.gif")))
        if envs is None:   # made once for all seeds: a Cube env takes seconds and ~200 MB to build
            envs = make_envs(env, len(pairs["start_states"]), env_kwargs)
        runs[str(seed)] = run_episodes(env, pairs, policy, planner, budget, receding_horizon, seed, env_kwargs, vid,
                                       envs=envs)
    for e in envs or []:
        e.close()
    rates = np.array([r["success_rate"] for r in runs.values()])
    return {"env": env, "policy": policy, "checkpoint": None if checkpoint is None else str(checkpoint),
            "dataset": None if dataset is None else str(dataset),
            "pairs": "dataset" if dataset is not None else "expert",
            "protocol": {"num_eval": num_eval, "goal_offset": goal_offset, "budget": budget,
                         "receding_horizon": receding_horizon, "seeds": list(seeds)},
            "planner": None if planner is None else {"backend": planner.backend, "precision": planner.precision,
                                                     "predictor": planner.predictor_name,
                                                     "solver": policy, "num_samples": planner.solver.num_samples,
                                                     "iterations": planner.solver.iterations,
                                                     "var_scale": getattr(planner.solver, "var_scale", None),
                                                     "horizon": planner.horizon, "device": str(planner.device)},
            "success_rate_mean": float(rates.mean()), "success_rate_std": float(rates.std()),
            "final_distance_mean": (None if any(r["mean_final_distance"] is None for r in runs.values())
                                    else float(np.mean([r["mean_final_distance"] for r in runs.values()]))),
            "runs": runs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", required=True, help="pusht, tworoom, reacher or cube")
    ap.add_argument("--dataset", help="HDF5 file for start/goal pairs; without it the env's expert makes them")
    ap.add_argument("--checkpoint", help="checkpoint path, or a shipped name (e.g. tworoom)")
    ap.add_argument("--policy", default="cem", choices=["cem", "icem", "mppi", "random", "replay"],
                    help="planner solver, or the random-policy baseline / dataset-action replay")
    ap.add_argument("--seeds", default="42", help="comma-separated; one full evaluation per seed")
    ap.add_argument("--num-eval", type=int, default=50, help="episodes (start/goal pairs) per seed")
    ap.add_argument("--goal-offset", type=int, default=25, help="goal = the state this many raw steps ahead")
    ap.add_argument("--budget", type=int, default=50, help="env steps allowed per episode")
    ap.add_argument("--receding-horizon", type=int, default=5, help="planned blocks executed before replanning")
    ap.add_argument("--num-samples", type=int, default=300, help="CEM candidates per iteration")
    ap.add_argument("--topk", type=int, default=30, help="elites per iteration (at most --num-samples)")
    ap.add_argument("--var-scale", type=float, default=1.0,
                    help="std of the first CEM iteration's samples, in normalised action units (default 1, the reference's)")
    ap.add_argument("--iterations", type=int, default=None,
                    help="CEM iterations (default: 30 on pusht, 10 on the others, as the paper)")
    ap.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    ap.add_argument("--backend", default="auto", help="auto, eager, triton or graph")
    ap.add_argument("--precision", default="fp32", help="fp32, tf32 or bf16")
    ap.add_argument("--compile", action="store_true",
                    help="torch kernels: run the predictor step through torch.compile (faster on CPU after the first "
                         "solves compile; Planner(compile=True))")
    ap.add_argument("--resolution", type=int, help="env render size (default: the env's; must match the model)")
    ap.add_argument("--out", help="JSON path (written atomically); default: print only")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice). Use 1 when other jobs share the cores: two "
                         "threads on a 2-core machine with one core busy made a Reacher solve 8x slower")
    ap.add_argument("--video", help="write an animated GIF grid of the episodes here (one per seed)")
    args = ap.parse_args(argv)
    import torch
    from lewm_fast.planning.allocator import default_on_in_this_process
    if args.threads is not None:
        positive("--threads", args.threads)
        torch.set_num_threads(args.threads)
    for name in ("num_eval", "goal_offset", "budget", "receding_horizon", "num_samples", "topk", "iterations"):
        positive("--" + name.replace("_", "-"), getattr(args, name))
    if not args.var_scale > 0:
        raise SystemExit(f"--var-scale must be > 0, got {args.var_scale}")
    if args.topk > args.num_samples:
        raise SystemExit(f"--num-samples {args.num_samples} is below --topk {args.topk}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"--seeds must be comma-separated integers like 42,43; got {args.seeds!r}") from None
    # An evaluation process reuses freed CPU temporaries (planning/allocator.py; 838 s instead of 916 s for the
    # 50-episode PushT evaluation); plans are bit-identical. LEWM_FAST_KEEP_FREED_MEMORY=0 opts out.
    keep_freed = default_on_in_this_process()
    report = evaluate(args.env, args.dataset, args.checkpoint, args.policy,
                      seeds, args.num_eval, args.goal_offset, args.budget,
                      args.receding_horizon, args.device, args.backend, args.precision,
                      {"num_samples": args.num_samples, "topk": args.topk, "var_scale": args.var_scale,
                       "iterations": args.iterations or DEFAULT_ITERATIONS.get(args.env.lower(), 10),
                       **({"compile": True} if args.compile else {})},
                      {"resolution": args.resolution} if args.resolution else None, video=args.video)
    report["torch_threads"] = torch.get_num_threads()
    report["keep_freed_memory"] = keep_freed
    text = json.dumps(report, indent=2)
    if args.out:
        from lewm_fast.checkpoint import atomic_write
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
    summary = {k: report[k] for k in ("env", "policy", "success_rate_mean", "success_rate_std")}
    summary["mean_solve_latency_s"] = [r["mean_solve_latency_s"] for r in report["runs"].values()]
    print(json.dumps(summary), file=sys.stdout)


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="lewm_fast.eval"))
