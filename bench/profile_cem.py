"""Where one CEM solve spends its time on this machine: a torch.profiler breakdown.

    python -m bench.profile_cem --env pusht --precision bf16          # full size, 300 x 30 x H5, B=1
    python -m bench.profile_cem --env pusht --precision fp32 --batch 4

Runs one warm-up solve, then profiles one solve of the eager planner (the same `Planner` bench.cem times)
and writes bench/reports/profile-cem-<env>-<precision>-cpu.json (+ .md): wall time, the share of each op
category in the ops' self time (GEMMs, attention, norms / elementwise, sampling / top-k, copies /
allocation, other), what is left outside any op (Python and dispatch), and every GEMM shape
(rows x inner x width) with its calls, time and achieved GFLOP/s against the matmul peak measured in
the same run (bench.cem.matmul_peak). Categories are assigned from aten op names (CATEGORIES below).
"""
from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from bench.cem import ENVS, build_model, make_frames, matmul_peak
from bench.common import REPORTS, environment, write_report
from bench.flops import lewm_solve_flops
from lewm_fast.checkpoint import atomic_write
from lewm_fast.eval import DEFAULT_ITERATIONS

GEMMS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_linear",
         "aten::_mkldnn_linear", "mkldnn::_linear_pointwise"}
CATEGORIES = [  # (category, exact op names); first match wins; only self time is counted
    ("gemm", GEMMS),
    ("attention", {"aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math",
                   "aten::_softmax", "aten::softmax", "aten::_safe_softmax"}),
    ("norm / elementwise", {"aten::native_layer_norm", "aten::layer_norm", "aten::add", "aten::add_", "aten::mul",
                            "aten::mul_", "aten::sub", "aten::div", "aten::gelu", "aten::silu", "aten::addcmul",
                            "aten::pow", "aten::mean", "aten::sum", "aten::sqrt", "aten::rsqrt", "aten::neg",
                            "aten::clamp", "aten::where", "aten::exp", "aten::tanh", "aten::std", "aten::var",
                            "aten::sub_", "aten::div_", "aten::lerp_", "aten::addcmul_", "aten::abs"}),
    ("sampling / top-k", {"aten::normal_", "aten::randn", "aten::topk", "aten::sort", "aten::gather",
                          "aten::index_select", "aten::index", "aten::argsort", "aten::uniform_"}),
    ("copies / allocation", {"aten::copy_", "aten::empty", "aten::empty_strided", "aten::zeros", "aten::clone",
                             "aten::contiguous", "aten::cat", "aten::stack", "aten::to", "aten::_to_copy",
                             "aten::fill_", "aten::zero_", "aten::repeat", "aten::expand", "aten::resize_",
                             "aten::_reshape_alias", "aten::view", "aten::reshape", "aten::transpose",
                             "aten::permute", "aten::slice", "aten::select", "aten::unsqueeze", "aten::t",
                             "aten::as_strided", "aten::narrow", "aten::unbind", "aten::split", "aten::chunk"}),
]


def category(name: str) -> str:
    for cat, names in CATEGORIES:
        if name in names:
            return cat
    return "other"


def gemm_shape(name: str, shapes) -> tuple[int, int, int, int] | None:
    """(batch, rows, inner, width) of a GEMM from its recorded input shapes."""
    try:
        if name == "aten::addmm":
            (m, k), (_, n) = shapes[1], shapes[2]
            return 1, m, k, n
        if name == "aten::mm":
            (m, k), (_, n) = shapes[0], shapes[1]
            return 1, m, k, n
        if name in ("aten::bmm", "aten::baddbmm"):
            a, b = (shapes[0], shapes[1]) if name == "aten::bmm" else (shapes[1], shapes[2])
            return a[0], a[1], a[2], b[2]
        x, w = shapes[0], shapes[1]          # linear-like: x (..., k), w (n, k)
        return 1, int(np.prod(x[:-1])), x[-1], w[0]
    except (IndexError, TypeError, ValueError):
        return None


def profile(args) -> dict:
    torch.set_num_threads(args.threads)
    model, source = build_model(args.env, args.checkpoint, torch.device("cpu"), tiny=args.tiny)
    iters = args.iterations or DEFAULT_ITERATIONS.get(args.env, 10)
    obs, goal, frames = make_frames(args.env, args.batch, model.cfg.image_size)
    from lewm_fast.planner import Planner

    planner = Planner(model, device="cpu", backend="eager", precision=args.precision, seed=0,
                      num_samples=args.samples, iterations=iters, topk=args.topk)
    t = time.perf_counter()
    planner.plan(obs, goal)                                      # warm-up: weights packed, allocator primed
    warm_s = time.perf_counter() - t
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        t = time.perf_counter()
        res = planner.plan(obs, goal)
        wall = time.perf_counter() - t
    events = prof.key_averages(group_by_input_shape=True)
    by_cat, ops, gemms = defaultdict(float), defaultdict(lambda: [0, 0.0]), []
    for ev in events:
        s = ev.self_cpu_time_total / 1e6
        by_cat[category(ev.key)] += s
        ops[ev.key][0] += ev.count
        ops[ev.key][1] += s
        if ev.key in GEMMS:
            shp = gemm_shape(ev.key, ev.input_shapes)
            flop = 2 * np.prod(shp) * ev.count if shp else None
            gemms.append({"op": ev.key, "batch_rows_inner_width": list(map(int, shp)) if shp else None,
                          "calls": ev.count, "self_s": s,
                          "gflops": float(flop / s / 1e9) if flop and s > 0 else None})
    op_total = sum(by_cat.values())
    outside = wall - op_total            # Python, dispatch, profiler bookkeeping
    peak = matmul_peak(torch.device("cpu"), sorted({args.precision, "fp32"}), n=256 if args.tiny else None)
    pk = peak[args.precision]["tflops"] * 1e3
    for g in gemms:
        g["fraction_of_matmul_peak"] = g["gflops"] / pk if g["gflops"] else None
    gemms.sort(key=lambda g: -g["self_s"])
    floor = lewm_solve_flops(model.cfg, num_samples=args.samples, iterations=iters)["total"] * args.batch
    return {"what": "torch.profiler breakdown of one eager CEM solve (self CPU time per op)",
            "env": args.env, "model": source, "frames": frames, "precision": args.precision,
            "settings": {"samples": args.samples, "iterations": iters, "topk": args.topk, "horizon": 5,
                         "batch": args.batch, "threads": args.threads},
            "environment": environment(), "matmul_peak": peak,
            # other work on the cores inflates wall time and memory-bound ops: recorded, not hidden
            "load_average_1min_after": os.getloadavg()[0],
            "wall_s": wall, "warm_up_wall_s": warm_s, "solve_s": res.timing.get("solve_s"),
            "floor_flops": floor, "floor_tflops_achieved": floor / wall / 1e12,
            "fraction_of_matmul_peak_on_floor": floor / wall / 1e12 / peak[args.precision]["tflops"],
            "op_self_s_total": op_total,
            "outside_ops_s": outside,
            "share_of_wall": {**{k: v / wall for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
                              "python / dispatch (outside ops)": outside / wall},
            "top_ops": [{"op": k, "calls": c, "self_s": s}
                        for k, (c, s) in sorted(ops.items(), key=lambda kv: -kv[1][1])[:25]],
            "gemms": gemms}


def markdown(r: dict) -> str:
    e = r["environment"]
    lines = [f"### Profile of one eager CEM solve, {r['env']} {r['precision']}: {e['cpu']} "
             f"(torch {e['torch']}, commit {e['git_commit']})", "",
             f"{r['settings']['samples']} x {r['settings']['iterations']} x H5, B={r['settings']['batch']}, "
             f"{r['settings']['threads']} thread(s); wall {r['wall_s']:.2f} s (profiled); floor "
             f"{r['floor_flops'] / 1e12:.3f} TFLOP = {100 * r['fraction_of_matmul_peak_on_floor']:.1f}% of the "
             f"{r['precision']} matmul peak measured in this run ({r['matmul_peak'][r['precision']]['tflops']:.3f} "
             "TFLOP/s).", "", "| category | share of wall |", "|---|---|"]
    lines += [f"| {k} | {100 * v:.1f}% |" for k, v in r["share_of_wall"].items()]
    lines += ["", "| GEMM | batch x rows x inner x width | calls | self s | GFLOP/s | % peak |", "|---|---|---|---|---|---|"]
    for g in r["gemms"][:15]:
        shp = " x ".join(map(str, g["batch_rows_inner_width"] or []))
        lines.append(f"| {g['op']} | {shp} | {g['calls']} | {g['self_s']:.3f} | {g['gflops'] or 0:.1f} | "
                     f"{100 * (g['fraction_of_matmul_peak'] or 0):.1f}% |")
    lines += ["", "| top op | calls | self s |", "|---|---|---|"]
    lines += [f"| {o['op']} | {o['calls']} | {o['self_s']:.3f} |" for o in r["top_ops"][:12]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="pusht", choices=sorted(ENVS))
    ap.add_argument("--checkpoint", help="lewm_fast checkpoint (default: random weights at the paper's size)")
    ap.add_argument("--tiny", action="store_true", help="tiny LeWM config (tests of this script)")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--iterations", type=int, help="default: as lewm_fast.eval (30 on pusht)")
    ap.add_argument("--topk", type=int, default=30)
    ap.add_argument("--batch", type=int, default=1, help="environments per solve")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="JSON path (default bench/reports/profile-cem-<env>-<precision>-cpu.json)")
    args = ap.parse_args(argv)
    r = profile(args)
    out = Path(args.out or REPORTS / f"profile-cem-{args.env}-{args.precision}-cpu.json")
    write_report(out, r)
    md = markdown(r)
    atomic_write(out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(md))
    print(md)
    return r


if __name__ == "__main__":
    main()
