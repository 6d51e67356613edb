"""Does the planning cost rank candidates the way the true state distance does?

    python -m bench.cost_ranking --checkpoint runs/pusht/model.safetensors --env pusht --pairs 20 --out R.json

For each start/goal pair (made by the env's expert, seeds disjoint from the evaluation's), K candidate
plans (the expert's own 25 actions, then K-1 drawn like the first CEM iteration: N(0, 1) in the model's
normalised action space) are executed in the real env from the start state. Three numbers per pair:
  - true:    distance of the reached state to the goal, in units of the success test
             (PushT: hypot(|d agent,block xy| / 20 px, |d angle| / (pi/9)); success needs both < 1;
             Reacher: |d qpos| / 0.05 rad, success needs each joint < 1)
  - encoded: ||encode(reached frame) - encode(goal frame)||^2 (is the latent a good distance?)
  - planned: the planner's cost, model.rollout from the start frame (does the predictor see it?)
and the Spearman rank correlation of encoded and planned against true, and the rank of the expert's
plan under each. A model that plans well needs both correlations high; the first bounds the second.

--cem S,I adds the plan of one CEM solve (S samples x I iterations, from the start frame, as the evaluation
plans) as one more candidate: its planned cost against the expert's, and the true distance each reaches.
A CEM plan the model scores better than the expert's that ends further from the goal is the search
exploiting the model's errors.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def true_distance(env_name: str, state: np.ndarray, goal: np.ndarray) -> float:
    from lewm_fast.eval import goal_distance

    d = goal_distance(env_name, state, goal)
    if d is None:
        raise ValueError(f"no true distance for env {env_name!r} (pusht, tworoom, reacher, cube)")
    return d


def rank_pairs(checkpoint: str, env_name: str = "pusht", num_pairs: int = 20, num_candidates: int = 64,
               goal_offset: int = 25, seed: int = 1000, progress: bool = True, cem: tuple | None = None) -> dict:
    from scipy.stats import spearmanr
    from tqdm import tqdm

    from lewm_fast.collect import fit_frames
    from lewm_fast.envs import make, resolution_kwargs
    from lewm_fast.eval import expert_pairs
    from lewm_fast.planner import Planner

    planner = Planner.from_checkpoint(checkpoint, device="cpu", **(
        {"num_samples": cem[0], "iterations": cem[1], "topk": min(30, cem[0]), "seed": seed} if cem else {}))
    model, cfg = planner.model, planner.cfg
    if goal_offset % cfg.frameskip:
        raise ValueError(f"goal_offset {goal_offset} is not a multiple of the frameskip {cfg.frameskip}")
    T = goal_offset // cfg.frameskip
    if cem and planner.horizon != T:
        raise ValueError(f"--cem needs goal_offset = planner horizon x frameskip ({planner.horizon * cfg.frameskip})")
    env_kwargs = resolution_kwargs(env_name, cfg.image_size)   # frames made as the model's data were
    pairs = expert_pairs(env_name, num_pairs, goal_offset, seed, env_kwargs)
    env = make(env_name, **env_kwargs)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in tqdm(range(num_pairs), desc="pairs", disable=not progress):
        expert = torch.as_tensor(pairs["replay_actions"][i][:goal_offset], dtype=torch.float32)
        noise = torch.randn(num_candidates - 1, T * cfg.frameskip, cfg.env_action_dim, generator=gen)
        raw = torch.cat([expert[None], planner.unnormalise_actions(noise).clamp(-1, 1)])   # (K, 25, E)
        def start_env():
            env.reset(seed=seed + i)
            env.set_state(pairs["start_states"][i])
            env.set_goal_state(pairs["goal_states"][i])
        start_env()
        start_frame = env.render()
        if cem:     # the search's own plan, from the frame the evaluation would give it, as candidate K
            res = planner.plan(fit_frames(start_frame[None], cfg.image_size),
                               fit_frames(pairs["goal_pixels"][i:i + 1], cfg.image_size), env_ids=[i])
            raw = torch.cat([raw, res.actions.float()])
        K = len(raw)
        finals, frames = [], []
        for actions in raw.numpy():
            start_env()
            for a in actions:
                env.step(a)
            finals.append(env.get_state().copy())
            frames.append(env.render())
        with torch.inference_mode():
            size = cfg.image_size
            goal_emb = model.encode(torch.from_numpy(fit_frames(pairs["goal_pixels"][i:i + 1], size))
                                    .permute(0, 3, 1, 2)[None])[:, -1]                   # (1, D)
            reached = model.encode(torch.from_numpy(fit_frames(np.stack(frames), size)).permute(0, 3, 1, 2)[None])[0]
            start = torch.from_numpy(fit_frames(start_frame[None], size)).permute(0, 3, 1, 2)[None]
            blocks = planner.normalise_actions(raw).reshape(1, K, T, cfg.action_dim)
            pred = model.rollout(blocks, pixels=start)
            planned = model.cost(pred, goal_emb)[0].numpy()
        encoded = (reached - goal_emb).pow(2).sum(-1).numpy()
        true = np.array([true_distance(env_name, s, pairs["goal_states"][i]) for s in finals])
        if cem:   # the ranking statistics stay over the expert + random candidates
            rows_cem = {"cem_planned": float(planned[-1]), "expert_planned": float(planned[0]),
                        "cem_true": float(true[-1]), "cem_rank_planned": int((planned[:-1] < planned[-1]).sum())}
            encoded, planned, true = encoded[:-1], planned[:-1], true[:-1]
        rows.append({"spearman_encoded": float(spearmanr(encoded, true).statistic),
                     "spearman_planned": float(spearmanr(planned, true).statistic),
                     "expert_true": float(true[0]), "best_random_true": float(true[1:].min()),
                     "expert_rank_encoded": int((encoded < encoded[0]).sum()),
                     "expert_rank_planned": int((planned < planned[0]).sum()), **(rows_cem if cem else {})})
    env.close()
    col = lambda k: np.array([r[k] for r in rows], float)   # noqa: E731
    return {"env": env_name, "checkpoint": str(checkpoint), "pairs": num_pairs, "candidates": num_candidates,
            "goal_offset": goal_offset, "seed": seed,
            "spearman_encoded_mean": float(np.nanmean(col("spearman_encoded"))),
            "spearman_planned_mean": float(np.nanmean(col("spearman_planned"))),
            "expert_rank_encoded_median": float(np.median(col("expert_rank_encoded"))),
            "expert_rank_planned_median": float(np.median(col("expert_rank_planned"))),
            **({"cem": {"num_samples": cem[0], "iterations": cem[1],
                        "cem_scored_below_expert": int((col("cem_planned") < col("expert_planned")).sum()),
                        "cem_true_mean": float(col("cem_true").mean()),
                        "expert_true_mean": float(col("expert_true").mean()),
                        "cem_ends_further_than_expert": int((col("cem_true") > col("expert_true")).sum())}}
               if cem else {}),
            "per_pair": rows}


def main(argv=None) -> dict:
    from lewm_fast.checkpoint import atomic_write

    ap = argparse.ArgumentParser(prog="python -m bench.cost_ranking", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="checkpoint path or shipped name")
    ap.add_argument("--env", default="pusht", choices=["pusht", "tworoom", "reacher", "cube"])
    ap.add_argument("--pairs", type=int, default=20, help="start/goal pairs")
    ap.add_argument("--candidates", type=int, default=64, help="plans per pair (the expert's + random ones)")
    ap.add_argument("--seed", type=int, default=1000, help="pair and candidate seed (keep it off the eval seeds)")
    ap.add_argument("--cem", default=None, help="S,I: add one CEM solve's plan (S samples x I iterations) per pair")
    ap.add_argument("--out", help="JSON report path (written atomically)")
    args = ap.parse_args(argv)
    if args.candidates < 2 or args.pairs < 1:
        ap.error("--candidates must be >= 2 and --pairs >= 1")
    t0 = time.perf_counter()
    cem = None
    if args.cem:
        try:
            cem = tuple(int(v) for v in args.cem.split(","))
        except ValueError:
            cem = ()
        if len(cem) != 2 or min(cem) < 1:
            ap.error(f"--cem wants SAMPLES,ITERATIONS (two positive ints), got {args.cem!r}")
    rep = rank_pairs(args.checkpoint, args.env, args.pairs, args.candidates, seed=args.seed, cem=cem)
    rep["wall_time_s"] = time.perf_counter() - t0
    print(f"spearman(encoded, true) {rep['spearman_encoded_mean']:.3f}  spearman(planned, true) "
          f"{rep['spearman_planned_mean']:.3f}  expert's rank of {args.candidates}: encoded "
          f"{rep['expert_rank_encoded_median']:.0f}, planned {rep['expert_rank_planned_median']:.0f} (median)")
    if cem:
        c = rep["cem"]
        print(f"CEM's plan scored below the expert's on {c['cem_scored_below_expert']} of {args.pairs} pairs; true "
              f"distance reached: CEM {c['cem_true_mean']:.2f}, expert {c['expert_true_mean']:.2f} (mean)")
    if args.out:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(rep, indent=2)))
    return rep


if __name__ == "__main__":
    main()
