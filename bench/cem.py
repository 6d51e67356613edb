"""One CEM planning solve: lewm_fast against the reference and against a DINO-WM-scale model.

    python -m bench.cem --env pusht              # the full comparison on whatever device is present
    python -m bench.cem --env cube --quick       # a smoke run (3 iterations, fewer repeats)

Measured in one run, on one device, with the same LeWM weights (--checkpoint, or random weights):
- reference: stable-worldmodel 0.1.1's CEMSolver with its LeWM (one environment at a time), or where
  the package cannot be imported the port in bench/reference_port.py (proven equal by
  tests/test_reference_port.py); the report says which;
- lewm_fast `Planner`: backends eager / compile (eager through torch.compile) / triton / graph x
  precisions fp32 / bf16 x B = 1 and B = 50
  environments per call (what the device cannot run is skipped with the reason);
- DINO-WM at its published size (bench/dinowm.py) planned the reference way; on CPU at reduced samples
  and iterations, extrapolated (labelled so in the JSON);
- agreement of every backend's plan with the reference's for the same seed (B = 1);
- latency (median, p90), env-solves per second, peak GPU memory, achieved TFLOP/s against the
  arithmetic floor (bench/flops.py) and against a matmul peak measured in the same run, and each
  variant's ceiling: the speed-up its floor FLOPs would give at that peak with nothing else in the way.

Writes bench/reports/cem-<env>-<device>.json (raw timings; bench/common.py) and .md; prints the table last.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from bench.common import REPORTS, device_tag, environment, write_report
from bench.flops import dinowm_solve_flops, lewm_solve_flops
from lewm_fast.eval import DEFAULT_ITERATIONS

ROOT = Path(__file__).resolve().parents[1]
# env -> env action dim; frameskip (action block) 5 everywhere; CEM iterations as lewm_fast.eval (spec C.3)
ENVS = {"pusht": 2, "tworoom": 2, "reacher": 2, "cube": 5}
FRAMESKIP = 5


def log(msg: str) -> None:
    print(f"[bench.cem {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CPU_SECONDS: list[float] = []     # process CPU time of every timed() call, in order (robust on busy CPUs)


def timed(fn, device):
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    CPU_SECONDS.append(time.process_time() - c)
    return out, time.perf_counter() - t


def stats(times: list[float], envs: int) -> dict:
    a = np.asarray(times)
    med = float(np.median(a))
    return {"n": len(a), "median_s": med, "p90_s": float(np.percentile(a, 90)), "min_s": float(a.min()),
            "mean_s": float(a.mean()), "env_solves_per_s": envs / med, "per_env_solve_s": med / envs}


# ---------------------------------------------------------------------------------------------------
def build_model(env: str, checkpoint: str | None, device, seed: int = 0, tiny: bool = False):
    """The LeWM every variant plans with: a checkpoint, or the paper's size (tiny: LeWMConfig.tiny, for
    tests) with random weights whose AdaLN linears get the default Linear init (AdaLN-zero would make
    every candidate cost the same)."""
    from lewm_fast.model import LeWM, LeWMConfig

    if checkpoint:
        from lewm_fast.checkpoint import load_checkpoint

        return load_checkpoint(checkpoint, device="cpu").model.eval(), f"checkpoint {checkpoint}"
    torch.manual_seed(seed)
    make_cfg = LeWMConfig.tiny if tiny else LeWMConfig
    model = LeWM(make_cfg(env_action_dim=ENVS[env], frameskip=FRAMESKIP))
    for blk in model.predictor.transformer.layers:
        blk.adaLN_modulation[1].reset_parameters()
    return model.eval(), f"random weights{' (tiny config)' if tiny else ''} (seed {seed}; AdaLN linears re-initialised)"


def make_frames(env: str, n: int, size: int, seed: int = 0):
    """(obs, goal) uint8 (n, size, size, 3): env renders (goal after 25 random steps) when the env can be
    built here, else random pixels; returns the source too."""
    try:
        from lewm_fast.envs import make

        obs, goal = [], []
        for i in range(n):
            e = make(env, **({"resolution": size} if env in ("pusht", "reacher", "cube") else {}))
            e.reset(seed=seed + i)
            obs.append(e.render())
            rng = np.random.default_rng(seed + i)
            for _ in range(25):
                e.step(rng.uniform(-1, 1, e.action_space.shape))
            goal.append(e.render())
            e.close()
        obs, goal = np.stack(obs), np.stack(goal)
        if obs.shape[1:3] != (size, size):
            raise ValueError(f"env renders {obs.shape[1:3]}, model takes {size}")
        return obs, goal, f"{env} env renders"
    except Exception as e:  # no pymunk / MuJoCo on this machine: timing does not depend on the pixels
        rng = np.random.default_rng(seed)
        return (rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), f"random pixels ({type(e).__name__}: {e})")


class Reference:
    """The reference planner: the package when importable, else the port. `solve(n_envs)` -> (actions, costs)."""

    def __init__(self, model, device, env_action_dim, samples, iterations, topk, force_port=False):
        sys.path.insert(0, str(ROOT / "tests"))
        import reference_compat
        from reference_compat import import_reference

        self.device, self.E = device, env_action_dim
        self.kw = dict(num_samples=samples, n_steps=iterations, topk=topk, var_scale=1.0)
        self.model = model
        swm = None if force_port else import_reference()
        if swm is not None:
            from reference_compat import reference_from_ours

            self.kind = "package stable-worldmodel==0.1.1 (CEMSolver + LeWM)"
            self.ref_model = reference_from_ours(model).to(device)
        else:
            self.kind = ("port bench/reference_port.py (package not importable: "
                         f"{'--reference-port given' if force_port else reference_compat.REFERENCE_ERROR})")
            self.ref_model = None

    def solver(self, seed: int, n_envs: int):
        if self.ref_model is None:
            from bench.reference_port import ReferencePortCEM

            port = ReferencePortCEM(self.model, device=self.device, seed=seed, **self.kw)
            return lambda px, goal: port.solve(px, goal)
        from gymnasium.spaces import Box
        from stable_worldmodel.solver import CEMSolver

        s = CEMSolver(self.ref_model, device=self.device, seed=seed, **self.kw)
        s.configure(action_space=Box(-1.0, 1.0, shape=(n_envs, self.E)), n_envs=n_envs,
                    config=types.SimpleNamespace(horizon=5, action_block=FRAMESKIP))

        def run(px, goal):
            with contextlib.redirect_stdout(io.StringIO()):   # it prints its own solve time
                return s({"pixels": px, "goal": goal, "action": torch.zeros(px.shape[0], 1, self.E * FRAMESKIP)})
        return run


def matmul_peak(device, precisions, n=None, reps=None) -> dict:
    """Dense matmul TFLOP/s on this device per precision (the ceiling the solve's TFLOP/s is held against):
    the fastest of `reps` timed products, so a busy moment on a shared machine does not lower it."""
    out = {}
    n = n or (8192 if device.type == "cuda" else 2048)
    reps = reps or (20 if device.type == "cuda" else 5)
    for prec in precisions:
        dtype = torch.bfloat16 if prec == "bf16" else torch.float32
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = prec == "tf32"
        try:
            a @ b
            times = [timed(lambda: a @ b, device)[1] for _ in range(reps)]
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
        out[prec] = {"n": n, "reps": reps, "raw_s": times, "tflops": 2 * n ** 3 / min(times) / 1e12}
    return out


# ---------------------------------------------------------------------------------------------------
def run(args, emit=lambda report: None) -> dict:
    """The whole comparison; `emit(report)` is called with the report so far after every measurement
    (main writes it to disk each time, so a run killed by a stage timeout keeps what it measured)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = device.type == "cpu"
    E, default_iters = ENVS[args.env], DEFAULT_ITERATIONS.get(args.env, 10)
    iters = args.iterations or (3 if args.quick else default_iters)
    S, K = args.samples, args.topk
    batches = [int(b) for b in (args.batches or ("1,8" if args.quick else "1,4" if cpu else "1,50")).split(",")]
    reps = args.reps or (1 if args.quick else (2 if cpu else 10))
    ref_solves = args.ref_solves or (1 if args.quick else (2 if cpu else 5))
    ref_envs = args.ref_envs if args.ref_envs is not None else (0 if cpu or args.quick else max(batches))
    model, model_source = build_model(args.env, args.checkpoint, device, tiny=args.tiny)
    cfg = model.cfg
    if cfg.env_action_dim != E:
        log(f"note: checkpoint env_action_dim {cfg.env_action_dim} != {args.env}'s {E}; using the checkpoint's")
    model = model.to(device)
    flops = {"floor": lewm_solve_flops(cfg, num_samples=S, iterations=iters),
             "reference": lewm_solve_flops(cfg, num_samples=S, iterations=iters, mode="reference")}
    floor = flops["floor"]["total"]
    obs, goal, frames_src = make_frames(args.env, max(batches + [ref_envs, 1]), cfg.image_size)
    with torch.no_grad():
        norm = lambda f: model.normalize_pixels(torch.from_numpy(f).permute(0, 3, 1, 2).to(device))[:, None]  # noqa: E731
        ref_px, ref_goal = norm(obs), norm(goal)
    log(f"device {device}, env {args.env}: {S} samples x {iters} iterations, top {K}, horizon 5; frames: {frames_src}")

    precisions = args.precisions.split(",")
    log("matmul peak ...")
    peak = matmul_peak(device, sorted(set(precisions) | {"fp32"}), n=256 if args.tiny else None)
    report = {"what": "one CEM solve per environment (spec C.3)", "env": args.env, "device": str(device),
              "settings": {"samples": S, "iterations": iters, "topk": K, "horizon": 5, "history": 1,
                           "action_block": FRAMESKIP, "env_action_dim": cfg.env_action_dim,
                           "batches": batches, "reps": reps, "ref_solves": ref_solves, "ref_envs": ref_envs,
                           "quick": args.quick, "seed": args.seed},
              "model": model_source, "frames": frames_src, "flops_per_env_solve": flops, "matmul_peak": peak,
              "variants": [], "skipped": []}

    # -- reference ---------------------------------------------------------------------------------
    ref = Reference(model, device, cfg.env_action_dim, S, iters, K, force_port=args.reference_port)
    report["reference"] = {"implementation": ref.kind}
    log(f"reference: {ref.kind}")
    solve = ref.solver(args.seed, 1)
    ref_out = solve(ref_px[:1], ref_goal[:1])            # fresh seed: the agreement target; also the warm-up
    times = []
    mem = _reset_peak(device)
    for i in range(ref_solves):
        _, t = timed(lambda: solve(ref_px[:1], ref_goal[:1]), device)
        times.append(t)
        log(f"reference B=1 solve {i + 1}/{ref_solves}: {t:.3f} s")
    ref_single = stats(times, 1)
    ref_single["raw_cpu_s"] = CPU_SECONDS[-ref_solves:]
    ref_single["peak_mem_mib"] = _peak(device, mem)
    report["reference"].update({"B1": {"raw_s": times, **ref_single,
                                       "tflops_floor": floor / ref_single["median_s"] / 1e12},
                                "plan_seed": args.seed, "plan": ref_out["actions"][0].tolist(),
                                "cost": ref_out["costs"][0]})
    if ref_envs:
        mem = _reset_peak(device)
        out, t = timed(lambda: ref.solver(args.seed, ref_envs)(ref_px[:ref_envs], ref_goal[:ref_envs]), device)
        report["reference"]["multi_env"] = {"envs": ref_envs, "raw_s": [t], "per_env_solve_s": t / ref_envs,
                                            "mean_final_cost": float(np.mean(out["costs"])),
                                            "peak_mem_mib": _peak(device, mem), "measured": True}
        log(f"reference {ref_envs} envs (one after another): {t:.2f} s")
    else:
        report["reference"]["multi_env"] = {"envs": max(batches), "measured": False,
                                            "extrapolated_s": max(batches) * ref_single["median_s"],
                                            "note": "EXTRAPOLATED: envs x median single-env solve (the reference "
                                                    "solves environments one after another)"}
    ref_per_env = ref_single["median_s"]
    emit(report)

    # -- lewm_fast -----------------------------------------------------------------------------------
    from lewm_fast.planner import Planner

    for backend in args.backends.split(","):
        for prec in precisions:
            reason = _cannot_run(backend, prec, device, tiny=args.tiny)
            if reason:
                report["skipped"].append({"backend": backend, "precision": prec, "reason": reason})
                log(f"skip {backend}/{prec}: {reason}")
                continue
            try:
                # "compile": the torch kernels' step through torch.compile (Planner(compile=True))
                make = lambda seed: Planner(model, device=device, precision=prec, seed=seed,  # noqa: E731
                                            backend="eager" if backend == "compile" else backend,
                                            compile=backend == "compile", num_samples=S, iterations=iters, topk=K)
                planner = make(args.seed)
                agree = planner.plan(obs[:1], goal[:1])      # fresh seed, as the reference's; also the warm-up
                ref_plan, ref_cost = ref_out["actions"][0], ref_out["costs"][0]
                agreement = {"max_abs_action_diff": float((agree.blocks[0] - ref_plan).abs().max()),
                             "reference_plan_max_abs": float(ref_plan.abs().max()),
                             "cost": float(agree.cost[0]), "reference_cost": ref_cost,
                             "cost_gap": float(agree.cost[0]) - ref_cost,
                             "cost_rel_gap": (float(agree.cost[0]) - ref_cost) / max(abs(ref_cost), 1e-12)}
                for B in batches:
                    if B > 1 and (device.type == "cuda" or backend == "compile"):
                        planner.plan(obs[:B], goal[:B])           # warm-up / graph capture / compile per shape
                    mem = _reset_peak(device)
                    times, cpu_s, solve_s, costs = [], [], [], None
                    for i in range(reps):
                        res, t = timed(lambda: planner.plan(obs[:B], goal[:B]), device)
                        times.append(t)
                        cpu_s.append(CPU_SECONDS[-1])
                        solve_s.append(res.timing["solve_s"])
                        costs = res.cost
                        log(f"{backend}/{prec} B={B} rep {i + 1}/{reps}: {t:.3f} s")
                    st = stats(times, B)
                    tf = floor * B / st["median_s"] / 1e12
                    pk = peak.get(prec, peak["fp32"])["tflops"]
                    v = {"backend": backend, "precision": prec, "B": B,
                         # what actually ran (never a silent fallback: the planner raises instead)
                         "ran": {k: res.info[k] for k in ("kernels", "cuda_graph", "predictor")},
                         "raw_s": times, "raw_solve_only_s": solve_s,
                         "raw_cpu_s": cpu_s,
                         # process CPU time: robust on a busy CPU; meaningless for GPU work
                         "speedup_vs_reference_cpu_time": None if not cpu else
                         float(np.median(ref_single["raw_cpu_s"]) / (np.median(cpu_s) / B)),
                         **st, "speedup_vs_reference": ref_per_env / st["per_env_solve_s"],
                         "tflops_floor": tf, "fraction_of_matmul_peak": tf / pk,
                         # what this variant would reach with its floor FLOPs at the measured matmul peak of
                         # its precision and nothing else: the ceiling a faster implementation could not pass
                         "speedup_ceiling_at_peak": ref_per_env / (floor / (pk * 1e12)),
                         "peak_mem_mib": _peak(device, mem), "mean_final_cost": float(costs.mean())}
                    if B == 1:
                        v["agreement"] = agreement
                    report["variants"].append(v)
                    emit(report)
            except Exception as e:  # a backend failing must not lose the rest of the report
                report["skipped"].append({"backend": backend, "precision": prec,
                                          "reason": f"failed: {type(e).__name__}: {e}"})
                log(f"{backend}/{prec} FAILED: {type(e).__name__}: {e}")
                emit(report)

    # -- DINO-WM -------------------------------------------------------------------------------------
    if not args.no_dinowm:
        report["dinowm"] = run_dinowm(args, device, cfg, ref_per_env, report["variants"], iters)
    return report


def _cannot_run(backend, prec, device, tiny: bool = False) -> str | None:
    if backend not in ("eager", "compile", "triton", "graph"):
        return f"unknown backend {backend!r}"
    if backend == "graph" and device.type != "cuda":
        return f"backend 'graph' needs a CUDA GPU (CUDA graphs); device is {device}"
    if backend == "triton" and device.type != "cuda":
        from lewm_fast.planner import kernels_status

        ok, why = kernels_status(device)
        if not (ok and tiny):   # the interpreter runs tiny models (dry runs, tests), far too slow beyond
            return (f"backend 'triton' needs a CUDA GPU here ({why})" if not ok else
                    "backend 'triton' on CPU runs the Triton interpreter: --tiny only")
    if prec == "tf32" and device.type != "cuda":
        return "tf32 is a CUDA matmul mode"
    return None


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return None


def _peak(device, base):
    if device.type != "cuda":
        return None
    return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20


def run_dinowm(args, device, lewm_cfg, ref_per_env, variants, it_full: int) -> dict:
    from bench.dinowm import DinoWMConfig, DinoWMReferenceCEM, derivation, random_dinowm

    cpu = device.type == "cpu"
    dcfg = (DinoWMConfig.small if args.tiny else DinoWMConfig)(action_dim=lewm_cfg.action_dim)
    S_full = args.samples                        # the same CEM size as the LeWM runs it is compared with
    S = max(2, args.dinowm_samples or (2 if cpu or args.quick else S_full))   # 2: the elite std needs two
    it = args.dinowm_iterations or (1 if cpu or args.quick else it_full)
    log(f"DINO-WM-scale: {S} samples x {it} iterations (full: {S_full} x {it_full}) ...")
    model = random_dinowm(dcfg, device=device)
    planner = DinoWMReferenceCEM(model, num_samples=S, iterations=it, topk=max(2, min(args.topk, S)), seed=args.seed,
                                 candidates_per_pass=args.dinowm_chunk)
    g = torch.Generator().manual_seed(0)
    px = torch.randn(1, 3, dcfg.image_size, dcfg.image_size, generator=g).to(device)
    gpx = torch.randn(1, 3, dcfg.image_size, dcfg.image_size, generator=g).to(device)
    pr, gpr = torch.randn(1, dcfg.proprio_dim, generator=g).to(device), torch.randn(1, dcfg.proprio_dim, generator=g).to(device)
    if not cpu:
        planner.solve(px, pr, gpx, gpr, iterations=1)              # warm-up (cuBLAS, allocator)
    mem = _reset_peak(device)
    _, t = timed(lambda: planner.solve(px, pr, gpx, gpr), device)
    measured_full = S == S_full and it == it_full
    solve_s = t if measured_full else t / (S * it) * S_full * it_full
    flops = dinowm_solve_flops(dcfg, num_samples=S_full, iterations=it_full)["total"]
    best = min(variants, key=lambda v: v["per_env_solve_s"]) if variants else None
    out = {"config": dcfg.__dict__, "derivation": derivation(dcfg), "predictor_params": sum(p.numel() for p in model.pred_blocks.parameters()),
           "measured": {"samples": S, "iterations": it, "seconds": t}, "peak_mem_mib": _peak(device, mem),
           "solve_s": solve_s, "extrapolated": not measured_full,
           "note": ("measured at full size" if measured_full else
                    f"EXTRAPOLATED: {t:.2f} s measured for {S} samples x {it} iterations, scaled linearly to "
                    f"{S_full} x {it_full}"),
           "flops_per_solve": flops, "tflops": flops / solve_s / 1e12,
           "ratio_vs_reference_lewm": solve_s / ref_per_env, "paper_ratio": 48.0,
           "ratio_vs_lewm_fast": {f"{v['backend']}/{v['precision']}/B{v['B']}": solve_s / v["per_env_solve_s"]
                                  for v in variants},
           "best_lewm_fast": None if best is None else f"{best['backend']}/{best['precision']}/B{best['B']}"}
    log(f"DINO-WM-scale solve: {solve_s:.1f} s ({'extrapolated' if out['extrapolated'] else 'measured'}); "
        f"{out['ratio_vs_reference_lewm']:.1f}x the reference LeWM solve")
    return out


# ---------------------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    env = report["environment"]
    st = report["settings"]
    ref = report["reference"]
    lines = [f"### CEM solve, {report['env']}: {env['device_name']} (torch {env['torch']}, triton {env['triton']}, "
             f"commit {env['git_commit']})", "",
             f"{st['samples']} samples x {st['iterations']} iterations, top {st['topk']}, horizon 5, history 1; "
             f"floor {report['flops_per_env_solve']['floor']['total'] / 1e12:.3f} TFLOP per env-solve; "
             f"model: {report['model']}; reference: {ref['implementation']}.", "",
             "| variant | B | median s/call | p90 s | env-solves/s | speed-up vs ref | TFLOP/s (floor) | "
             "% matmul peak | ceiling at peak | peak MiB | max abs action diff vs ref | cost gap |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    r1 = ref["B1"]
    lines.append(f"| reference | 1 | {r1['median_s']:.3f} | {r1['p90_s']:.3f} | {r1['env_solves_per_s']:.3f} | 1.00x | "
                 f"{r1['tflops_floor']:.3f} | {100 * r1['tflops_floor'] / report['matmul_peak']['fp32']['tflops']:.1f} "
                 f"| - | {_fmt(r1.get('peak_mem_mib'))} | 0 | 0 |")
    me = ref["multi_env"]
    if me.get("measured"):
        lines.append(f"| reference | {me['envs']} (sequential) | {me['raw_s'][0]:.3f} | - | "
                     f"{me['envs'] / me['raw_s'][0]:.3f} | {r1['median_s'] / me['per_env_solve_s']:.2f}x | - | - | - | "
                     f"{_fmt(me['peak_mem_mib'])} | - | - |")
    else:
        lines.append(f"| reference | {me['envs']} (extrapolated) | {me['extrapolated_s']:.1f} | - | - | 1.00x | - | - | - | - | - | - |")
    for v in report["variants"]:
        a = v.get("agreement")
        lines.append(f"| {v['backend']} {v['precision']} | {v['B']} | {v['median_s']:.3f} | {v['p90_s']:.3f} | "
                     f"{v['env_solves_per_s']:.2f} | {v['speedup_vs_reference']:.2f}x | {v['tflops_floor']:.3f} | "
                     f"{100 * v['fraction_of_matmul_peak']:.1f} | {_ceiling(v)} | {_fmt(v['peak_mem_mib'])} | "
                     f"{'-' if a is None else format(a['max_abs_action_diff'], '.2e')} | "
                     f"{'-' if a is None else format(a['cost_gap'], '+.2e')} |")
    d = report.get("dinowm")
    if d:
        lines.append(f"| DINO-WM-scale{' (extrapolated)' if d['extrapolated'] else ''} | 1 | {d['solve_s']:.1f} | - | "
                     f"{1 / d['solve_s']:.4f} | {1 / d['ratio_vs_reference_lewm']:.3f}x | {d['tflops']:.3f} | - | - | "
                     f"{_fmt(d['peak_mem_mib'])} | - | - |")
        best = d["best_lewm_fast"]
        lines += ["", "DINO-WM scale: " + "; ".join(d["derivation"].values()) + "."]
        lines += ["", f"DINO-WM-scale / reference LeWM = {d['ratio_vs_reference_lewm']:.1f}x (paper: 48x); "
                      f"DINO-WM-scale / best lewm_fast ({best}) = "
                      f"{d['ratio_vs_lewm_fast'][best]:.0f}x per env-solve." if best else ""]
    for s in report["skipped"]:
        lines.append(f"- skipped {s['backend']}/{s['precision']}: {s['reason']}")
    return "\n".join(lines) + "\n"


def _ceiling(v: dict) -> str:
    c = v.get("speedup_ceiling_at_peak")     # absent in reports written before it was recorded
    return "-" if c is None else f"{c:.2f}x"


def _fmt(x):
    return "-" if x is None else f"{x:.0f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="pusht", choices=sorted(ENVS))
    ap.add_argument("--checkpoint", help="lewm_fast checkpoint (default: random weights at the paper's size)")
    ap.add_argument("--device", help="cpu / cuda / cuda:1 (default: cuda if present)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 iterations, B=1,8, 1 repeat, tiny DINO-WM run")
    ap.add_argument("--tiny", action="store_true", help="tiny LeWM and DINO-WM configs (tests of this script)")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--iterations", type=int, help="CEM iterations (default: 30 on pusht, 10 elsewhere)")
    ap.add_argument("--topk", type=int, default=30)
    ap.add_argument("--batches", help="environments per call, comma list (default 1,50 on GPU; 1,4 on CPU)")
    ap.add_argument("--backends", default="eager,compile,triton,graph",
                    help="comma list of eager, compile (eager + torch.compile), triton, graph")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, tf32, bf16")
    ap.add_argument("--reps", type=int, help="timed calls per variant (default: 10 on GPU, 2 on CPU)")
    ap.add_argument("--ref-solves", type=int, help="timed single-env reference solves (default: 5 GPU, 2 CPU)")
    ap.add_argument("--ref-envs", type=int, help="also time one reference call over this many envs "
                                                 "(default: max batch on GPU, 0 = extrapolate on CPU)")
    ap.add_argument("--reference-port", action="store_true", help="use the port even if the package imports")
    ap.add_argument("--dinowm-samples", type=int, help="default: all on GPU, 2 on CPU (extrapolated)")
    ap.add_argument("--dinowm-iterations", type=int, help="default: all on GPU, 1 on CPU (extrapolated)")
    ap.add_argument("--dinowm-chunk", type=int, help="candidates per DINO-WM forward pass (memory)")
    ap.add_argument("--no-dinowm", action="store_true")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--out", help="JSON path (default bench/reports/cem-<env>-<device>.json; .md beside it)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else REPORTS / f"cem-{args.env}-{device_tag()}{'-quick' if args.quick else ''}.json"
    env = environment()
    report = run(args, emit=lambda r: write_report(out, {"environment": env, **r, "complete": False}))
    report = {"environment": env, **report, "complete": True}
    write_report(out, report)
    table = markdown(report)
    from lewm_fast.checkpoint import atomic_write
    atomic_write(out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(table))
    log(f"wrote {out} and {out.with_suffix('.md')}")
    print(table)


if __name__ == "__main__":
    import sys

    from lewm_fast.cli import run_cli
    sys.exit(run_cli(main, prog="bench.cem"))
