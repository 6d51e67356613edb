"""Roofline model of one batched PushT CEM solve on an H200: FLOPs, bytes and launches per kernel.

    python -m bench.roofline            # writes bench/reports/roofline-pusht-h200.json, prints the table

So the first GPU run is checked against a prediction (bench/gpu_check.py compares its per-kernel
timings with `launch()` at the same shapes). Three Triton paths are modelled, at bf16 and exact fp32:

- "whole_window": the Triton path before issue 14 (a whole-window predictor forward per step, since
  removed): every rollout step recomputes its whole window (12 token passes per candidate at horizon
  5), the fp32 AdaLN modulation is recomputed and written for every window, no last_only, 16-32 rows
  per program (each program re-reads its weight tiles through L2);
- "kv_cache_today": today's TritonPredictor: keys/values kept while the window grows (9 token
  passes), last_only in the last block, modulation once per iteration stored in the matmul dtype,
  the lead configs of the autotune lists: 64-row programs for mlp and adaln_modulation (128-row mlp
  tiles spill) and for attention's one-token steps, 32 sequences per attention program for the full
  3-token window (64 spill there), in exact fp32 attention 32 / 16 (FMA dots spill at more);
- "kv_cache_split": today's step with TritonPredictor(split_window=True): each uncached 2-3 token
  window (every block but the last of the slid windows) as one-token launches of 64 sequences per
  program (wgmma), which re-read the weights per token and write / read the window's keys and values;
- "kv_cache": the design issue 14 asks for: the same step with >= 128 rows per program.

Programs of fewer than 64 rows per program lower to mma.sync, which on Hopper does not reach the wgmma
peak: their bf16 FLOPs count at PEAKS["mma_sync_fraction"] of it (an assumption, stated in the JSON).

Per launch: time = max(FLOPs / peak, DRAM bytes / bandwidth, L2 bytes / L2 bandwidth) + launch cost.
DRAM bytes count activations read and written plus each weight once; L2 bytes count weight tiles per
program. Peaks: bf16 dense 790 TFLOP/s and 4.3 TB/s are the H200's measured figures the issue gives;
the fp32 FMA peak (67 TFLOP/s), L2 bandwidth (10 TB/s) and launch costs are data-sheet / rule-of-thumb
assumptions, stated in the JSON so a measurement can correct them.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

from bench.flops import _windows

PEAKS = {"bf16_tflops": 790.0, "fp32_fma_tflops": 67.0, "dram_tbps": 4.3, "l2_tbps": 10.0,
         "launch_us_graph": 1.0, "launch_us_eager": 8.0, "mma_sync_fraction": 0.6}
SOURCES = {"bf16_tflops": "measured (issue 14)", "dram_tbps": "measured (issue 14)",
           "fp32_fma_tflops": "H200 data sheet, non-tensor fp32", "l2_tbps": "assumption",
           "launch_us_graph": "assumption (CUDA graph node)", "launch_us_eager": "assumption (Python + launch)",
           "mma_sync_fraction": "assumption: share of the bf16 peak that mma.sync (programs < 64 rows) reaches on "
                                "Hopper, where only wgmma reaches the full peak (microbenchmarks such as arXiv "
                                "2501.12084 measure mma.sync well below wgmma); a GPU run corrects it"}
# attention's per (precision, output kind): "one" output token (the cached steps, last_only) or a
# "window" of 2-3 (kernels/attention.py output_kind); today's are the lead configs of its autotune lists
ROWS_PER_PROGRAM = {"whole_window": {"attention": {"bf16/one": 16, "bf16/window": 16, "fp32/one": 16,
                                                   "fp32/window": 16},
                                     "mlp": 32, "adaln_modulation": 32},
                    "kv_cache_today": {"attention": {"bf16/one": 64, "bf16/window": 32, "fp32/one": 32,
                                                     "fp32/window": 16},
                                       "mlp": 64, "adaln_modulation": 64},
                    "kv_cache_split": {"attention": {"bf16/one": 64, "bf16/window": None, "fp32/one": 32,
                                                     "fp32/window": None},
                                       "mlp": 64, "adaln_modulation": 64},
                    "kv_cache": {"attention": {"bf16/one": 128, "bf16/window": 128, "fp32/one": 128,
                                               "fp32/window": 128},
                                 "mlp": 128, "adaln_modulation": 128}}
PATHS = tuple(ROWS_PER_PROGRAM)


@dataclass
class Launch:
    kernel: str
    flops: float = 0.0
    dram_bytes: float = 0.0
    l2_bytes: float = 0.0
    count: int = 1
    mma_sync: bool = False            # programs below 64 rows: mma.sync, not wgmma (bf16)
    predicted: dict = field(default_factory=dict)   # merged entries: {graph: ms summed over their launches}

    def ms(self, precision: str, graph: bool = True) -> float:
        peak = PEAKS["bf16_tflops" if precision == "bf16" else "fp32_fma_tflops"] * 1e12
        if precision == "bf16" and self.mma_sync:
            peak *= PEAKS["mma_sync_fraction"]
        t = max(self.flops / peak, self.dram_bytes / (PEAKS["dram_tbps"] * 1e12),
                self.l2_bytes / (PEAKS["l2_tbps"] * 1e12))
        return 1e3 * (t + PEAKS["launch_us_graph" if graph else "launch_us_eager"] * 1e-6)


def launch(kernel: str, cfg, rows: int, tokens: int, precision: str, path: str = "kv_cache",
           new: int | None = None, last_only: bool = False, store_kv: bool | None = None) -> Launch:
    """One launch of a predictor kernel over `rows` sequences of `tokens` window tokens (`new` of them
    computed, the rest read from the KV cache; last_only: only the last token gets a query / MLP;
    store_kv: whether the new tokens' keys/values are written, default: when cached and not last_only)."""
    D, inner, M = cfg.embed_dim, cfg.pred_heads * cfg.pred_dim_head, cfg.pred_mlp_dim
    new = tokens if new is None else new
    wb = 2 if precision == "bf16" else 4                # matmul weight bytes
    ab = 4                                              # residual stream stays fp32
    mb = 4 if path == "whole_window" else wb            # modulation storage: fp32 before, matmul dtype now
    cached = path != "whole_window"
    per_prog = ROWS_PER_PROGRAM[path]
    if kernel == "adaln_modulation":                    # all blocks' 6 vectors of `tokens` action tokens
        n, out = rows * tokens, cfg.pred_depth * 6 * D
        w = out * D * wb
        return Launch(kernel, 2 * n * D * out, n * D * ab + w + n * out * mb,
                      math.ceil(n / per_prog["adaln_modulation"]) * w, mma_sync=per_prog["adaln_modulation"] < 64)
    if kernel == "norm_modulate":
        n = rows * new
        return Launch(kernel, 0, n * D * (2 * ab + 2 * mb))
    if kernel == "attention":
        q_rows = rows * (1 if last_only else new)
        n = rows * new
        w = 3 * inner * D * wb + D * inner * wb
        kv_cached = rows * (tokens - new) * 2 * inner * ab if cached else 0
        store_kv = cached and not last_only if store_kv is None else store_kv
        kv_written = rows * new * 2 * inner * ab if store_kv else 0
        pairs = rows * sum(range(tokens - (1 if last_only else new) + 1, tokens + 1))
        flops = 2 * n * D * 2 * inner + 2 * q_rows * D * inner + 4 * pairs * inner + 2 * q_rows * inner * D
        dram = n * D * ab + q_rows * D * (ab + mb + ab) + w + kv_cached + kv_written
        kind = "one" if last_only or new == 1 else "window"      # output tokens accumulated per program
        per = per_prog["attention"][f"{precision}/{kind}"]
        if per is None:
            raise ValueError(f"path {path!r} launches no {kind!r} attention (split into one-token launches)")
        return Launch(kernel, flops, dram, math.ceil(rows / per) * w, mma_sync=per < 64)
    if kernel == "mlp":
        n = rows * (1 if last_only else new)
        w = 2 * M * D * wb
        return Launch(kernel, 4 * n * D * M, n * D * (2 * ab + 3 * mb) + w, math.ceil(n / per_prog["mlp"]) * w,
                      mma_sync=per_prog["mlp"] < 64)
    if kernel == "final_norm":
        return Launch(kernel, 0, rows * (1 if last_only else tokens) * D * 2 * ab)
    raise ValueError(f"unknown kernel {kernel!r}")


def solve_launches(cfg, B: int = 50, S: int = 300, iterations: int = 30, horizon: int = 5, history: int = 1,
                   precision: str = "bf16", path: str = "kv_cache") -> list[Launch]:
    """Every launch of one solve, merged per kernel (counts and totals)."""
    N, D, P, A = B * S, cfg.embed_dim, cfg.proj_hidden_dim, cfg.action_dim
    wb = 2 if precision == "bf16" else 4
    per_iter: list[Launch] = []
    L = history - 1 + horizon
    act_flops = 2 * A * cfg.act_smoothed_dim + 2 * cfg.act_smoothed_dim * cfg.act_mlp_scale * D \
        + 2 * cfg.act_mlp_scale * D * D
    per_iter.append(Launch("action_embedder(torch, 4 launches)", N * L * act_flops,
                           N * L * (A + 2 * cfg.act_mlp_scale * D + D) * 4, count=4))
    cached = path != "whole_window"
    if cached:
        per_iter.append(launch("adaln_modulation", cfg, N, L, precision, path))
    steps = _windows(history, horizon, cfg.num_frames)
    for t, (n, new) in enumerate(steps):
        if path == "whole_window":
            new = n
            per_iter.append(launch("adaln_modulation", cfg, N, n, precision, path))
        per_iter.append(Launch("window stack + pos add (torch, 2 launches)", 0, N * new * D * 4 * 3, count=2))
        last_block = cfg.pred_depth - 1
        for li in range(cfg.pred_depth):
            lo = cached and li == last_block
            per_iter.append(launch("norm_modulate", cfg, N, n, precision, path, new=new))
            # keys/values are stored only where the next step grows this window (engine.py's keep_cache)
            keep = cached and t + 1 < len(steps) and steps[t + 1] == (n + 1, 1)
            if path == "kv_cache_split" and new >= 2 and not lo:    # one-token launches, keys/values via kv
                per_iter.extend(launch("attention", cfg, N, j + 1, precision, path, new=1,
                                       store_kv=keep or j < new - 1) for j in range(new))
            else:
                per_iter.append(launch("attention", cfg, N, n, precision, path, new=new, last_only=lo,
                                       store_kv=keep))
            per_iter.append(launch("mlp", cfg, N, n, precision, path, new=new, last_only=lo))
        per_iter.append(launch("final_norm", cfg, N, n, precision, path, last_only=cached))
        per_iter.append(Launch("pred_proj(torch, 4 launches)", 2 * 2 * N * D * P,
                               N * (D * 4 + P * 4 * 3 + D * 4) + 2 * P * D * wb, count=4))
    per_iter.append(Launch("cost + CEM refit (torch: randn per env, topk, gather, mean/std; ~12 + B launches)",
                           0, N * horizon * A * 4 * 6, count=12 + B))
    merged: dict[str, Launch] = {}
    for lc in per_iter:
        m = merged.setdefault(lc.kernel, Launch(lc.kernel, count=0))
        m.flops += lc.flops * iterations
        m.dram_bytes += lc.dram_bytes * iterations
        m.l2_bytes += lc.l2_bytes * iterations
        m.count += lc.count * iterations
        # each launch is timed on its own (its own bound, its own MMA kind), then summed
        for graph in (True, False):
            one = Launch(lc.kernel, lc.flops / lc.count, lc.dram_bytes / lc.count, lc.l2_bytes / lc.count,
                         mma_sync=lc.mma_sync)
            m.predicted[graph] = m.predicted.get(graph, 0.0) + one.ms(precision, graph) * lc.count * iterations
    return list(merged.values())


def predicted_ms(lc: Launch, precision: str, graph: bool = True) -> float:
    """A merged entry's time: the sum of its launches' times, each with its own launch cost."""
    return lc.predicted[graph]


def model(cfg=None, B: int = 50, S: int = 300, iterations: int = 30) -> dict:
    from lewm_fast.model import LeWMConfig

    cfg = cfg or LeWMConfig()
    out = {"what": f"one {B}-env PushT CEM solve ({S} samples x {iterations} iterations, horizon 5, history 1)",
           "peaks": PEAKS, "peak_sources": SOURCES, "rows_per_program": ROWS_PER_PROGRAM, "target_ms": 250.0,
           "paths": {}}
    for path in PATHS:
        for prec in ("bf16", "fp32"):
            rows = []
            for lc in solve_launches(cfg, B, S, iterations, precision=prec, path=path):
                rows.append({"kernel": lc.kernel, "launches": lc.count, "gflop": lc.flops / 1e9,
                             "dram_gb": lc.dram_bytes / 1e9, "l2_gb": lc.l2_bytes / 1e9,
                             "predicted_ms_graph": predicted_ms(lc, prec, True),
                             "predicted_ms_eager": predicted_ms(lc, prec, False)})
            out["paths"][f"{path}/{prec}"] = {
                "kernels": rows, "launches": sum(r["launches"] for r in rows),
                "tflop": sum(r["gflop"] for r in rows) / 1e3, "dram_gb": sum(r["dram_gb"] for r in rows),
                "l2_gb": sum(r["l2_gb"] for r in rows),
                "predicted_ms_graph": sum(r["predicted_ms_graph"] for r in rows),
                "predicted_ms_eager": sum(r["predicted_ms_eager"] for r in rows)}
    return out


def markdown(m: dict) -> str:
    lines = [f"### Roofline: {m['what']}, H200", "",
             "| path / precision | launches | TFLOP | DRAM GB | L2 GB | predicted ms (graph) | (eager launches) |",
             "|---|---|---|---|---|---|---|"]
    for name, p in m["paths"].items():
        lines.append(f"| {name} | {p['launches']} | {p['tflop']:.2f} | {p['dram_gb']:.1f} | {p['l2_gb']:.0f} | "
                     f"{p['predicted_ms_graph']:.0f} | {p['predicted_ms_eager']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from bench.common import REPORTS, write_report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--out", default=str(REPORTS / "roofline-pusht-h200.json"))
    args = ap.parse_args(argv)
    m = model(B=args.batch)
    write_report(args.out, m)
    print(markdown(m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
