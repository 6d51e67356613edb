"""Wall time of a whole goal-reaching evaluation (spec C.4): a reference-style loop vs `lewm_fast.eval`.

    python -m bench.eval --env pusht --checkpoint pusht.safetensors --dataset pusht.h5
    python -m bench.eval --env pusht                 # no files: a small collected dataset + random weights

Both runs use the same checkpoint, the same start/goal pairs (`lewm_fast.eval.sample_pairs`, seed 42) and
the same lewm_fast environments, so only the pipeline differs:
- reference-style: what stable-worldmodel 0.1.1's `WorldModelPolicy` + `CEMSolver` do each env step:
  every env is rendered and every frame (and goal frame) is preprocessed one by one in Python, every
  step; environments that need a plan are solved one after another (the package's CEMSolver, or the
  port bench/reference_port.py where the package cannot be imported), fp32; plans are un-normalised
  and buffered per env (receding horizon 5 blocks = 25 raw actions);
- lewm_fast: `lewm_fast.eval.evaluate` (all replanning envs in one batched planner call).
Timed: the whole loop (env stepping, rendering, preprocessing, encoding, planning), not loading.
On CPU the default is 4 episodes (a full reference evaluation is ~100 solves of ~10 s); say
--num-eval 50 for the full protocol. --variants times several lewm_fast pipelines in the same run (e.g.
'eager:bf16,compile:bf16'), each with the split of its wall time (render, encode, search, step, other).
Writes bench/reports/eval-<env>-<device>.json (after every loop, so --resume can finish an interrupted run)
and .md beside it, and prints the table.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.cem import matmul_peak
from bench.common import REPORTS, device_tag, environment, write_report
from bench.flops import lewm_solve_flops


ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[bench.eval {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def synthetic_inputs(env: str, workdir: Path, episodes: int = 4, steps: int = 80) -> tuple[str, str]:
    """A small dataset collected with the env's scripted policy and a random-weight checkpoint
    (paper size, AdaLN linears re-initialised) with the dataset's action statistics."""
    from bench.cem import build_model
    from lewm_fast.checkpoint import save_checkpoint
    from lewm_fast.collect import collect
    from lewm_fast.data import EpisodeDataset

    data = workdir / f"{env}-bench.h5"
    collect(env, episodes, str(data), seed=0, max_steps=steps, stop_on_success=False, progress=True)
    act = EpisodeDataset(str(data)).cache["action"]
    act = act[np.isfinite(act).all(1)]
    model, _ = build_model(env, None, "cpu")
    ckpt = workdir / f"{env}-random.safetensors"
    save_checkpoint(ckpt, model, stats={"action": {"mean": act.mean(0), "std": act.std(0) + 1e-6}},
                    info={"note": "random weights, bench.eval synthetic", "env": {"name": env}})
    return str(ckpt), str(data)


def reference_style_eval(env_name, ckpt, ds, starts, goals, device, num_samples, iterations, budget=50,
                         receding_horizon=5, seed=42, force_port=False) -> dict:
    from bench.cem import Reference
    from lewm_fast.envs import make

    model = ckpt.model.to(device).eval()
    cfg = model.cfg
    ref = Reference(model, device, cfg.env_action_dim, num_samples, iterations, 30, force_port=force_port)
    n = len(starts)
    solve = ref.solver(seed, n)
    stats = ckpt.stats.get("action")
    a_mean = np.asarray(stats["mean"], np.float64) if stats else 0.0
    a_std = np.asarray(stats["std"], np.float64) if stats else 1.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def transform(frame: np.ndarray) -> torch.Tensor:      # one frame at a time, as the reference's transform
        x = torch.from_numpy(frame).permute(2, 0, 1).float() / 255.0
        if x.shape[-1] != cfg.image_size:
            x = F.interpolate(x[None], size=(cfg.image_size,) * 2, mode="bilinear", antialias=True)[0]
        return (x - mean) / std

    envs = [make(env_name) for _ in range(n)]
    states = ds.cache["state"]
    goal_px = ds.pixels(goals)
    for i, e in enumerate(envs):
        e.reset(seed=seed + i)
        e.set_state(states[starts[i]])
        e.set_goal_state(states[goals[i]])
    success = np.zeros(n, bool)
    buffers = [[] for _ in range(n)]
    solves, env_solves, solve_time = 0, 0, 0.0
    t0 = time.perf_counter()
    for step in range(budget):
        active = np.flatnonzero(~success)
        if len(active) == 0:
            break
        # the reference's policy preprocesses every env's observation and goal every step
        pixels = torch.stack([transform(envs[i].render()) for i in range(n)])[:, None]
        goal = torch.stack([transform(g) for g in goal_px])[:, None]
        need = [i for i in active if not buffers[i]]
        if need:
            ts = time.perf_counter()
            out = solve(pixels[need].to(device), goal[need].to(device))
            solve_time += time.perf_counter() - ts
            solves += 1
            env_solves += len(need)
            # a full-size CPU reference solve of 50 envs takes tens of minutes: say where the loop is
            log(f"reference-style: solve {solves} ({len(need)} envs) at env step {step}: "
                f"{time.perf_counter() - ts:.1f} s")
            plan = out["actions"][:, :receding_horizon].reshape(len(need), -1, cfg.env_action_dim).numpy()
            for row, i in enumerate(need):
                buffers[i] = list(plan[row].astype(np.float64) * a_std + a_mean)
        for i in active:
            _, _, _, _, info = envs[i].step(buffers[i].pop(0))
            success[i] |= bool(info["success"])
    wall = time.perf_counter() - t0
    for e in envs:
        e.close()
    return {"implementation": ref.kind, "wall_time_s": wall, "solve_calls": solves, "env_solves": env_solves,
            "solve_time_s": solve_time,
            "success_rate": float(success.mean()), "successes": int(success.sum()), "episodes": n}


VARIANT_BACKENDS = {"eager": ("eager", False), "compile": ("eager", True), "triton": ("triton", False),
                    "graph": ("graph", False), "auto": ("auto", False)}


def parse_variants(text: str) -> list[tuple[str, str, str, bool]]:
    """'eager:bf16,compile:bf16' -> [(name, backend, precision, compile)]; 'compile' is the eager predictor
    step through torch.compile (Planner(compile=True))."""
    from lewm_fast.planning import PRECISIONS

    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        kind, _, prec = item.partition(":")
        if kind not in VARIANT_BACKENDS or prec not in PRECISIONS:
            raise ValueError(f"variant {item!r}: want BACKEND:PRECISION with BACKEND in {sorted(VARIANT_BACKENDS)} "
                             f"and PRECISION in {list(PRECISIONS)}")
        backend, compiled = VARIANT_BACKENDS[kind]
        out.append((f"{kind}:{prec}", backend, prec, compiled))
    if not out:
        raise ValueError("--variants names no variant")
    if len({v[0] for v in out}) != len(out):
        raise ValueError(f"--variants repeats a variant: {text!r}")
    return out


def peak_tflops(report: dict, loop: dict) -> float:
    """The matmul peak (TFLOP/s, measured in the run) a loop's search is held against: its precision's."""
    peaks = report["matmul_peak"]
    return peaks.get(loop["planner"]["precision"], peaks["fp32"])["tflops"]


def stage_split(run: dict) -> dict:
    """Seconds per stage of one lewm_fast evaluation, and what is left (Python, buffers, plan bookkeeping)."""
    stages = dict(run["stage_time_s"])
    stages["other"] = run["wall_time_s"] - sum(stages.values())
    stages["fraction"] = {k: v / run["wall_time_s"] for k, v in stages.items() if k != "fraction"}
    return stages


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="pusht")
    ap.add_argument("--checkpoint", help="lewm_fast checkpoint (default: random weights, with --dataset absent too)")
    ap.add_argument("--dataset", help="HDF5 episodes with state + pixels (default: collect a small one)")
    ap.add_argument("--num-eval", type=int, help="episodes (default 50 on GPU, 4 on CPU)")
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--goal-offset", type=int, default=25)
    ap.add_argument("--num-samples", type=int, default=300)
    ap.add_argument("--iterations", type=int, help="CEM iterations (default: 30 on pusht, 10 elsewhere)")
    ap.add_argument("--device")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--variants", help="lewm_fast pipelines timed one after another in this run, e.g. "
                                       "'eager:bf16,compile:bf16' (BACKEND:PRECISION; BACKEND eager, compile = eager "
                                       "through torch.compile, triton, graph, auto); default: --backend:--precision")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 on a shared, busy machine)")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--reference-port", action="store_true", help="use the port even if the package imports")
    ap.add_argument("--resume", action="store_true",
                    help="keep the loops an earlier run of the same settings already wrote to --out (the report is "
                         "written after each loop), time only the missing ones")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    from lewm_fast.checkpoint import load_checkpoint
    from lewm_fast.data import EpisodeDataset
    from lewm_fast.eval import evaluate, sample_pairs

    try:
        variants = parse_variants(args.variants or f"{args.backend}:{args.precision}")
    except ValueError as e:
        ap.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    num_eval = args.num_eval or (4 if device.type == "cpu" else 50)
    iterations = args.iterations or (30 if args.env == "pusht" else 10)
    out = Path(args.out) if args.out else REPORTS / f"eval-{args.env}-{device_tag()}.json"
    protocol = {"num_eval": num_eval, "goal_offset": args.goal_offset, "budget": args.budget,
                "receding_horizon": 5, "num_samples": args.num_samples, "iterations": iterations, "seed": args.seed}
    previous = None
    if args.resume and out.exists():
        previous = json.loads(out.read_text())
        if previous.get("protocol") != protocol or previous.get("threads") != torch.get_num_threads():
            ap.error(f"--resume: {out} was written with other settings (protocol {previous.get('protocol')}, "
                     f"threads {previous.get('threads')}); remove it or drop --resume")
    ckpt_path, data_path = args.checkpoint, args.dataset
    inputs = "given"
    if previous is not None and not (ckpt_path and data_path):
        ckpt_path, data_path = previous["checkpoint"], previous["dataset"]   # the same synthetic inputs
        if not (Path(ckpt_path).exists() and Path(data_path).exists()):
            ap.error(f"--resume: the earlier run's inputs {ckpt_path}, {data_path} are gone")
        inputs = previous["inputs"]
    if not (ckpt_path and data_path):
        # a fixed folder named after the report (not a fresh temp dir), so --resume finds the same inputs
        work = Path(tempfile.gettempdir()) / f"bench-eval-{out.stem}-inputs"
        work.mkdir(parents=True, exist_ok=True)
        log(f"no --checkpoint/--dataset: collecting a small {args.env} dataset and a random checkpoint in {work}")
        c, d = synthetic_inputs(args.env, work, episodes=max(4, num_eval // 5))
        ckpt_path, data_path = ckpt_path or c, data_path or d
        inputs = "synthetic (collected episodes; random weights unless --checkpoint)"
    ds = EpisodeDataset(data_path, columns=("state",))
    starts, goals = sample_pairs(ds.ep_len, ds.ep_offset, num_eval, args.goal_offset, args.seed)
    report = {"environment": environment(), "env": args.env, "device": str(device), "threads": torch.get_num_threads(),
              "inputs": inputs, "checkpoint": ckpt_path, "dataset": data_path, "protocol": protocol,
              "start_rows": starts.tolist(), "goal_rows": goals.tolist(), "variants": {}}
    # the arithmetic a solve cannot avoid and what the device can do, measured in this run: every loop's
    # search time is held against them, and the speed-up no implementation of the same arithmetic passes
    ckpt = load_checkpoint(ckpt_path)
    report["floor_flops_per_env_solve"] = lewm_solve_flops(ckpt.model.cfg, num_samples=args.num_samples,
                                                           iterations=iterations)["total"]
    report["matmul_peak"] = matmul_peak(device, sorted({v[2] for v in variants} | {"fp32"}))
    if previous is not None:
        if previous["start_rows"] != report["start_rows"]:
            ap.error(f"--resume: {out} used other start rows")
        report["variants"] = previous.get("variants", {})
        if "reference_style" in previous:
            report["reference_style"] = previous["reference_style"]
        report["resumed_from"] = previous["environment"]

    def finish():   # speed-ups of every timed loop, written after each so a crash loses nothing
        ref = report.get("reference_style")
        floor = report["floor_flops_per_env_solve"]
        for v in report["variants"].values():
            if ref:
                v["speedup_vs_reference"] = ref["wall_time_s"] / v["wall_time_s"]
            n = v.get("env_solves")      # absent in loops kept from reports written before it was recorded
            if n:
                peak = peak_tflops(report, v) * 1e12
                v["search_fraction_of_matmul_peak"] = n * floor / v["stage_time_s"]["search"] / peak
                if ref:   # the whole loop reduced to its floor FLOPs at the peak: nothing else in the way
                    v["speedup_ceiling_at_peak"] = ref["wall_time_s"] / (n * floor / peak)
        if report["variants"]:
            best = min(report["variants"], key=lambda k: report["variants"][k]["wall_time_s"])
            report["lewm_fast"] = {"variant": best, **report["variants"][best]}
            if ref:
                report["speedup"] = ref["wall_time_s"] / report["lewm_fast"]["wall_time_s"]
        write_report(out, report)

    for name, backend, precision, compiled in variants:
        if name in report["variants"]:
            log(f"{name}: kept from {out}")
            continue
        log(f"lewm_fast.eval [{name}]: {num_eval} episodes, {args.num_samples} x {iterations} CEM ...")
        t = time.perf_counter()
        ours = evaluate(args.env, data_path, ckpt_path, "cem", (args.seed,), num_eval, args.goal_offset, args.budget,
                        5, str(device), backend, precision,
                        {"num_samples": args.num_samples, "iterations": iterations,
                         **({"compile": True} if compiled else {})})
        total = time.perf_counter() - t
        run = ours["runs"][str(args.seed)]
        assert run["start_rows"] == starts.tolist(), "lewm_fast.eval drew other start rows"
        report["variants"][name] = {
            "planner": ours["planner"], "wall_time_s": run["wall_time_s"], "with_setup_s": total,
            "solve_calls": run["solves"], "env_solves": run["env_solves"],
            "solve_time_s": float(np.sum(run["solve_latency_s"])),
            "solve_latency_s": run["solve_latency_s"], "env_time_s": run["env_time_s"],
            "stage_time_s": stage_split(run), "success_rate": run["success_rate"]}
        finish()
        log(f"lewm_fast [{name}]: {run['wall_time_s']:.1f} s, success {run['success_rate']:.2f}")
    if not args.skip_reference and "reference_style" not in report:
        log(f"reference-style loop: {num_eval} episodes ...")
        with contextlib.redirect_stdout(io.StringIO()):
            ref = reference_style_eval(args.env, ckpt, ds, starts, goals, device, args.num_samples, iterations,
                                       args.budget, 5, args.seed, args.reference_port)
        report["reference_style"] = ref
        finish()
        log(f"reference-style: {ref['wall_time_s']:.1f} s, success {ref['success_rate']:.2f}")
    finish()
    table = markdown(report)
    from lewm_fast.checkpoint import atomic_write
    atomic_write(out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(table + "\n"))
    log(f"wrote {out} and {out.with_suffix('.md').name}")
    print(table)


def markdown(report: dict) -> str:
    """The report as a table: one row per loop, then each lewm_fast loop's stage split."""
    p = report["protocol"]
    lines = [f"### Evaluation wall time, {report['env']}, {p['num_eval']} episodes, CEM {p['num_samples']} x "
             f"{p['iterations']}: {report['environment']['device_name']} ({report['threads']} thread(s))", "",
             "| loop | wall s | solve calls | solve s | success | speed-up vs reference |", "|---|---|---|---|---|---|"]
    for name, v in report["variants"].items():
        sp = v.get("speedup_vs_reference")
        lines.append(f"| lewm_fast.eval ({name}) | {v['wall_time_s']:.1f} | {v['solve_calls']} | "
                     f"{v['solve_time_s']:.1f} | {v['success_rate']:.2f} | {'-' if sp is None else f'{sp:.2f}x'} |")
    if "reference_style" in report:
        r = report["reference_style"]
        lines.append(f"| reference-style ({r['implementation'].split(' (')[0]}) | {r['wall_time_s']:.1f} | "
                     f"{r['solve_calls']} | {r['solve_time_s']:.1f} | {r['success_rate']:.2f} | 1.00x |")
    for name, v in report["variants"].items():
        if "search_fraction_of_matmul_peak" in v:
            c = v.get("speedup_ceiling_at_peak")
            lines.append(f"\n{name}: search at {100 * v['search_fraction_of_matmul_peak']:.1f}% of the "
                         f"{v['planner']['precision']} matmul peak measured in this run "
                         f"({peak_tflops(report, v):.3f} TFLOP/s) on the floor's FLOPs of {v['env_solves']} "
                         "env-solves" + ("" if c is None else f"; ceiling {c:.2f}x (the reference loop over those "
                                                               "FLOPs at that peak)"))
    stages = ("render", "encode", "search", "step", "other")
    lines += ["", "| lewm_fast loop | " + " | ".join(f"{s} s (%)" for s in stages) + " |",
              "|---|" + "---|" * len(stages)]
    for name, v in report["variants"].items():
        st = v["stage_time_s"]
        lines.append(f"| {name} | " + " | ".join(f"{st[s]:.1f} ({100 * st['fraction'][s]:.1f}%)" for s in stages)
                     + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    from lewm_fast.cli import run_cli
    sys.exit(run_cli(main, prog="bench.eval"))
