"""Learning curve of a training run: planning success (and optionally linear-probe R^2) of every snapshot.

    python -m bench.learning_curve --run runs/pusht/main --env pusht --seed 1000 --episodes 50 \
        --probe-dataset data/heldout.h5 --out results/pusht-recipe/learning_curve.json

Each `model-stepN.safetensors` of the run (train --snapshot-every) and its final `model.safetensors` is
evaluated under the evaluation protocol (lewm_fast.eval.evaluate: expert-made pairs, goal 25 steps ahead,
budget 50, CEM with the env's default iterations) on validation pairs: use a seed that the reported
evaluation does not use. With --probe-dataset, a ridge probe of the state (lewm_fast.probe, linear only,
split by episode) shows what the latent holds at each step. The validation loss of the nearest epoch end
is not logged by short runs, so the curve reports the training prediction loss averaged around each step.
The JSON is rewritten after every snapshot, so an interrupted run keeps what it measured, and rerunning the
same command (e.g. while training writes more snapshots) measures only the snapshots not in it yet.
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np


def snapshots(run: Path, final: bool = True) -> list[tuple[int, Path]]:
    found = []
    for p in run.glob("model-step*.safetensors"):
        m = re.fullmatch(r"model-step(\d+)\.safetensors", p.name)
        if m:
            found.append((int(m.group(1)), p))
    last = run / "model.safetensors"
    if final and last.is_file():
        from lewm_fast.checkpoint import load_checkpoint
        step = int(load_checkpoint(last).info.get("step", -1))
        if step not in {s for s, _ in found}:
            found.append((step, last))
    return sorted(found)


def train_loss_near(run: Path, step: int, window: int = 50) -> float | None:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    vals = [d["pred_loss"] for d in map(json.loads, path.read_text().splitlines())
            if "pred_loss" in d and step - window < d["step"] <= step]
    return float(np.mean(vals)) if vals else None


def linear_probe(checkpoint: Path, env: str, dataset: str, max_frames: int, seed: int = 0) -> dict:
    from lewm_fast.checkpoint import load_checkpoint
    from lewm_fast.data import EpisodeFile
    from lewm_fast.probe import probe_episode_file

    src = EpisodeFile(dataset, columns=("state",))
    res, _ = probe_episode_file(load_checkpoint(checkpoint).model, env, src, max_frames, seed, mlp=False)
    return {name: q["linear"]["r2"] for name, q in res["quantities"].items()}


def main(argv=None) -> dict:
    from lewm_fast.checkpoint import atomic_write
    from lewm_fast.eval import DEFAULT_ITERATIONS, evaluate

    ap = argparse.ArgumentParser(prog="python -m bench.learning_curve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="training run directory (train --out)")
    ap.add_argument("--env", required=True)
    ap.add_argument("--seed", type=int, default=1000, help="validation pair seed (not an evaluation seed)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--probe-dataset", help="held-out HDF5 with a state column: add linear-probe R^2 per snapshot")
    ap.add_argument("--probe-frames", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 when sharing the cores)")
    ap.add_argument("--snapshots-only", action="store_true",
                    help="skip model.safetensors (while training runs it is a moving target)")
    ap.add_argument("--steps", default=None,
                    help="comma-separated snapshot steps to measure (default: every snapshot of the run)")
    ap.add_argument("--out", required=True, help="JSON report (rewritten atomically after each snapshot)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    from lewm_fast.planning.allocator import default_on_in_this_process
    keep_freed = default_on_in_this_process()     # as lewm_fast.eval does: an evaluation-only process
    run = Path(args.run)
    snaps = snapshots(run, final=not args.snapshots_only)
    if args.steps:
        try:
            wanted = {int(x) for x in args.steps.split(",")}
        except ValueError:
            raise SystemExit(f"--steps must be comma-separated integers, got {args.steps!r}") from None
        missing = sorted(wanted - {s for s, _ in snaps})
        if missing:
            raise SystemExit(f"{run}: no snapshot for step(s) {missing}; it has {[s for s, _ in snaps]}")
        snaps = [(s, p) for s, p in snaps if s in wanted]
    if not snaps:
        raise SystemExit(f"{run}: no model-step*.safetensors or model.safetensors")
    iters = DEFAULT_ITERATIONS.get(args.env, 10)
    report = {"run": str(run), "env": args.env, "pairs": "expert", "seed": args.seed, "episodes": args.episodes,
              "cem": {"num_samples": 300, "iterations": iters}, "precision": args.precision,
              "probe_dataset": args.probe_dataset, "points": []}
    if Path(args.out).is_file():
        old = json.loads(Path(args.out).read_text())
        same = all(old.get(k) == report[k] for k in report if k != "points")
        if not same:
            raise SystemExit(f"{args.out} holds a curve with other settings; pass another --out or delete it")
        report["points"] = old["points"]
    done = {p["step"] for p in report["points"]}
    for step, path in snaps:
        if step in done:
            continue
        t0 = time.perf_counter()
        res = evaluate(args.env, checkpoint=str(path), policy="cem", seeds=(args.seed,), num_eval=args.episodes,
                       precision=args.precision, planner_kwargs={"iterations": iters})
        point = {"step": step, "checkpoint": str(path), "success_rate": res["success_rate_mean"],
                 # distance to the goal in units of the success test (eval.goal_distance): progress below 1 success
                 "final_distance_mean": res.get("final_distance_mean"),
                 "train_pred_loss": train_loss_near(run, step), "eval_wall_s": time.perf_counter() - t0,
                 "keep_freed_memory": keep_freed}
        if args.probe_dataset:
            point["linear_probe_r2"] = linear_probe(path, args.env, args.probe_dataset, args.probe_frames)
        report["points"] = sorted(report["points"] + [point], key=lambda p: p["step"])
        print(json.dumps(point), flush=True)
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    return report


if __name__ == "__main__":
    main()
