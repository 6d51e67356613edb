"""Parity (c): does planning in bf16 cost plan quality? bf16 plans scored by the fp32 model, many seeds.

    python -m bench.parity --env pusht --envs 10 --out bench/reports/parity-pusht-cpu.json

For N start/goal pairs (the frames bench.cem plans on), an fp32 planner and a bf16 planner (same
model, same seed, batch-invariant noise: pair i draws from stream i, so each pair is its own
seed) solve all pairs; every plan is then scored by one fp32 rollout of the model (the cost the
planner minimises, computed in fp32). The bf16 path may return a different plan (its top-k can
differ, and CEM is chaotic), so the criterion is on plan quality, not plan equality: the relative
gap (cost_bf16 - cost_fp32) / cost_fp32 per pair, its mean over pairs (the issue's "within 1% over at
least 10 seeds") and its spread.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.cem import DEFAULT_ITERATIONS, ENVS, build_model, make_frames
from bench.common import environment


def fp32_cost(model, obs: np.ndarray, goal: np.ndarray, blocks: torch.Tensor) -> np.ndarray:
    """The planner's objective for each (pair, plan), computed by the fp32 eager model (spec C.1, C.2)."""
    with torch.inference_mode():
        px = model.normalize_pixels(torch.from_numpy(obs).permute(0, 3, 1, 2))[:, None]      # (N, 1, 3, h, w)
        g = model.normalize_pixels(torch.from_numpy(goal).permute(0, 3, 1, 2))[:, None]
        goal_emb = model.encode(g)[:, -1]                                                 # (N, D)
        out = []
        for i in range(len(obs)):
            pred = model.rollout(blocks[i:i + 1, None].float(), pixels=px[i:i + 1])
            out.append(float(model.cost(pred, goal_emb[i:i + 1])[0, 0]))
    return np.array(out)


def main(argv=None) -> dict:
    from lewm_fast.checkpoint import atomic_write
    from lewm_fast.planner import Planner

    ap = argparse.ArgumentParser(prog="python -m bench.parity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", default="pusht", choices=sorted(ENVS))
    ap.add_argument("--checkpoint", help="lewm_fast checkpoint (default: random weights at the paper's size, as bench.cem)")
    ap.add_argument("--tiny", action="store_true", help="tiny config (tests of this script)")
    ap.add_argument("--envs", type=int, default=10, help="start/goal pairs, one noise stream each")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--iterations", type=int, help="default: 30 on pusht, 10 elsewhere")
    ap.add_argument("--topk", type=int, default=30)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--out", help="JSON report (written atomically)")
    args = ap.parse_args(argv)
    if args.envs < 1:
        ap.error("--envs must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    iters = args.iterations or DEFAULT_ITERATIONS.get(args.env, 10)
    model, source = build_model(args.env, args.checkpoint, "cpu", tiny=args.tiny)
    obs, goal, frames_src = make_frames(args.env, args.envs, model.cfg.image_size)
    t0 = time.perf_counter()
    plans, planner_costs, wall = {}, {}, {}
    for prec in ("fp32", "bf16"):
        planner = Planner(model, device="cpu", backend="eager", precision=prec, seed=args.seed,
                          num_samples=args.samples, iterations=iters, topk=args.topk)
        t = time.perf_counter()
        res = planner.plan(obs, goal)
        wall[prec] = time.perf_counter() - t
        plans[prec], planner_costs[prec] = res.blocks, res.cost.numpy()
        print(f"[parity] {prec}: {args.envs} pairs in {wall[prec]:.1f} s", flush=True)
    scored = {p: fp32_cost(model, obs, goal, plans[p]) for p in plans}
    rel = (scored["bf16"] - scored["fp32"]) / np.maximum(np.abs(scored["fp32"]), 1e-12)
    report = {"what": "bf16 vs fp32 eager plans, each scored by the fp32 model (parity (c))", "env": args.env,
              "model": source, "frames": frames_src, "pairs": args.envs, "seed": args.seed,
              "settings": {"samples": args.samples, "iterations": iters, "topk": args.topk, "horizon": 5},
              "fp32_scored_cost": {p: scored[p].tolist() for p in scored},
              "planner_reported_cost": {p: planner_costs[p].tolist() for p in planner_costs},
              "rel_gap_per_pair": rel.tolist(), "rel_gap_mean": float(rel.mean()),
              "rel_gap_median": float(np.median(rel)), "rel_gap_max": float(rel.max()),
              "rel_gap_of_mean_cost": float(scored["bf16"].mean() / scored["fp32"].mean() - 1),
              "bf16_no_worse_pairs": int((rel <= 0).sum()),
              "max_abs_plan_diff": float((plans["bf16"] - plans["fp32"]).abs().max()),
              "solve_wall_s": wall, "wall_s": time.perf_counter() - t0,
              "environment": {**environment(), "load_avg": list(os.getloadavg())},
              "command": "python -m bench.parity " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(f"[parity] rel gap mean {rel.mean():+.3%} median {np.median(rel):+.3%} max {rel.max():+.3%} "
          f"(bf16 no worse on {report['bf16_no_worse_pairs']}/{args.envs})")
    if args.out:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    return report


if __name__ == "__main__":
    main()
