"""End-to-end demo: plan with LeWM and compare with a random policy, on this machine.

    python -m lewm_fast.demo                 # shipped TwoRoom checkpoint if present, else the CPU recipe
    python -m lewm_fast.demo --recipe        # always run the CPU recipe: collect -> train -> evaluate
    python -m lewm_fast.demo --env pusht     # the shipped PushT model (--recipe: its ~90 min CPU recipe)

The CPU recipe (about 6 minutes on 2 cores: results/tworoom-recipe-demo.json) collects TwoRoom expert
episodes at 64 px, trains the `small` preset (1.9 M parameters) on them, and evaluates it; the shipped
`tworoom` checkpoint is its output. Evaluation follows the paper's protocol
(goal 25 steps ahead, budget 50, replan every 5 blocks, CEM 300 x 10) on start/goal pairs made by the
env's own expert, so no dataset is needed; the random policy runs on the same pairs.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RECIPE = {  # the CPU recipe's settings, recorded in the report
    "tworoom": {"episodes": 800, "resolution": 64, "preset": "small", "batch_size": 32, "lr": 1e-3,
                "max_steps": 800, "warmup_frac": 0.01},
    # PushT (results/pusht-recipe/, results/pusht-recipe-idm/): noisy-expert data so the model sees off-expert
    # pushes, 96 px frames in 12-px patches; one torch thread in bf16 (AVX512-BF16), measured fastest on the 2-core
    # CPU. An inverse-dynamics term (idm_weight, a training-only head: action block k from embeddings k-1, k, k+1)
    # makes the latent hold the agent (linear probe 0.58 -> 0.97) and the model's cost rank plans as the true
    # distance does (Spearman 0.27 -> 0.84); the snapshot with the best validation success (seed-1000 pairs: 6% at
    # steps 3500 and 4000, 4000 nearer the goal) of the 5000-step schedule is shipped: 66 min (3937 s) of
    # training to step 4000 beside other jobs.
    "pusht": {"episodes": 2500, "resolution": 96, "preset": "pusht-cpu", "batch_size": 32, "lr": 1e-3,
              "max_steps": 5000, "stop_after": 4000, "warmup_frac": 0.02, "policy_noise": 0.1, "snapshot_every": 500,
              "idm_weight": 1.0, "precision": "bf16", "threads": 1, "workers": 0},
    # Reacher and Cube (results/reacher-recipe, results/cube-recipe): 64 px frames the envs render themselves
    # (at 128 px, resized; Cube with render-only coarse arm meshes), the mujoco-cpu preset on one thread.
    # Reacher: bf16 (native on AVX512-BF16), 2400 steps, SIGReg weight 1.0: SIGReg's statistic scales with the
    # batch (N x an ECF distance), so at batch 32 the paper's 0.09 (batch 128) presses 4x less; measured on seed-1000
    # validation pairs at step 2400, weight 0.09 / 0.36 / 1.0 planned 18% / 42% / 70% (3.0: 44% at step 1200, where
    # 1.0 had 64%; results/reacher-recipe/). In-process data loading (workers 0): one core per run.
    # Cube: fp32 (trained on a CPU without native bf16), the step-500 snapshot of 1000 steps, stopped for time.
    # Weight 1.0 did not carry over: PushT planned 0% of its validation pairs at every snapshot (0.09: 0-2%), Cube
    # 16% (= random; the shipped 0.09 model 20%): results/{pusht,cube}-recipe/ablation/, so both keep 0.09.
    "reacher": {"episodes": 502, "resolution": 64, "preset": "mujoco-cpu", "batch_size": 32, "lr": 1e-3,
                "max_steps": 2400, "warmup_frac": 0.02, "snapshot_every": 600, "sigreg_weight": 1.0,
                "precision": "bf16", "threads": 1, "workers": 0},
    "cube": {"episodes": 151, "resolution": 64, "preset": "mujoco-cpu", "batch_size": 32, "lr": 1e-3,
             "max_steps": 1000, "stop_after": 500, "warmup_frac": 0.02, "snapshot_every": 250, "precision": "fp32",
             "threads": 1, "workers": 1, "stop_on_success": False},
}


def run_recipe(env: str, workdir: Path, seed: int = 0, max_steps: int | None = None) -> Path:
    """Collect, train and return the path of the trained checkpoint (each stage skipped when its output exists)."""
    from lewm_fast.collect import collect
    from lewm_fast.train import train

    r = RECIPE[env]
    data = workdir / f"{env}-{r['episodes']}ep-{r['resolution']}px.h5"
    if not data.exists():
        print(f"[demo] collecting {r['episodes']} {env} expert episodes at {r['resolution']} px -> {data}", flush=True)
        collect(env, r["episodes"], str(data), seed=seed, workers=os.cpu_count() or 1, resolution=r["resolution"],
                policy_noise=r.get("policy_noise"), stop_on_success=r.get("stop_on_success", True))
    run = workdir / f"{env}-{r['preset']}"
    steps = max_steps or r["max_steps"]
    args = ["--data", str(data), "--out", str(run), "--preset", r["preset"], "--batch-size", str(r["batch_size"]),
            "--lr", str(r["lr"]), "--warmup-frac", str(r["warmup_frac"]), "--epochs", "100",
            "--max-steps", str(steps), "--ckpt-every", "100", "--seed", str(seed),
            "--snapshot-every", str(r.get("snapshot_every", 0))]
    if r.get("stop_after") and not max_steps:
        args += ["--stop-after", str(r["stop_after"])]   # the shipped model: this step of the longer schedule
    r = dict(r)
    from lewm_fast.planning.precision import cpu_has_native_bf16
    if r.get("precision") == "bf16" and cpu_has_native_bf16() is False:
        print("[demo] this CPU emulates bf16 (no AVX512-BF16 / AMX): training in fp32 instead", flush=True)
        r["precision"] = "fp32"
    for key in ("precision", "threads", "workers", "sigreg_weight", "idm_weight", "state_weight", "recon_weight",
                "recon_size"):
        if key in r:
            args += [f"--{key.replace('_', '-')}", str(r[key])]
    if (run / "last.pt").exists():
        args.append("--resume")   # an interrupted demo continues where it stopped
    print(f"[demo] training the {r['preset']} preset for {steps} steps -> {run}", flush=True)
    train(args)
    return run / "model.safetensors"


def main(argv=None) -> dict:
    from lewm_fast.checkpoint import atomic_write, pretrained_names
    from lewm_fast.cli import positive
    from lewm_fast.eval import DEFAULT_ITERATIONS, evaluate

    ap = argparse.ArgumentParser(prog="python -m lewm_fast.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", default="tworoom", choices=sorted(RECIPE), help="environment")
    ap.add_argument("--recipe", action="store_true", help="train a fresh model with the CPU recipe even if one is shipped")
    ap.add_argument("--checkpoint", default=None, help="evaluate this checkpoint instead (path or shipped name)")
    ap.add_argument("--workdir", default="runs/demo", help="where the recipe writes data, runs and the report")
    ap.add_argument("--episodes", type=int, default=50, help="evaluation episodes")
    ap.add_argument("--seed", type=int, default=42, help="evaluation seed (start/goal pairs and planner noise)")
    ap.add_argument("--train-steps", type=int, default=None, help="override the recipe's training steps")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"],
                    help="planner precision (bf16 is about 2x faster on CPUs with AMX)")
    args = ap.parse_args(argv)
    positive("--episodes", args.episodes)
    positive("--train-steps", args.train_steps)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.checkpoint:
        ckpt, source = args.checkpoint, "given"
    elif args.env in pretrained_names() and not args.recipe:
        ckpt, source = args.env, "shipped"
    else:
        ckpt, source = str(run_recipe(args.env, workdir, max_steps=args.train_steps)), "cpu recipe"
    print(f"[demo] evaluating {ckpt} ({source}) on {args.episodes} {args.env} episodes", flush=True)
    iters = DEFAULT_ITERATIONS.get(args.env, 10)
    common = dict(seeds=(args.seed,), num_eval=args.episodes, goal_offset=25, budget=50, receding_horizon=5)
    plan = evaluate(args.env, checkpoint=ckpt, policy="cem", planner_kwargs={"iterations": iters}, progress=True,
                    precision=args.precision, **common)
    rand = evaluate(args.env, policy="random", **common)
    run = plan["runs"][str(args.seed)]
    report = {"env": args.env, "checkpoint": str(ckpt), "source": source, "recipe": RECIPE.get(args.env),
              "planner": plan, "random": rand, "wall_time_s": time.perf_counter() - t0}
    out = workdir / f"demo-{args.env}.json"
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    print(f"\n| policy | success ({args.episodes} episodes, seed {args.seed}) |\n|---|---|")
    print(f"| LeWM + CEM ({plan['planner']['backend']}, {plan['planner']['num_samples']} x {iters}) | "
          f"{plan['success_rate_mean']:.0%} |")
    print(f"| random | {rand['success_rate_mean']:.0%} |")
    print(f"\n{run['solves']} batched solves, {run['mean_solve_latency_s']:.2f} s each; total {report['wall_time_s']:.0f} s;"
          f" report: {out}")
    return report


if __name__ == "__main__":
    import sys

    from lewm_fast.cli import run_cli
    sys.exit(run_cli(main, prog="lewm_fast.demo"))
