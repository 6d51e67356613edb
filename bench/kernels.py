"""Benchmark the predictor's Triton kernels against their torch references: `python -m bench.kernels`.

Times (triton.testing.do_bench, median, ms) each kernel and the planner's predictor step
(TritonPredictor.window against EagerPredictor.window: a window of T new tokens, and for T > 1 its last
token from the KV cache of the others) at planner sizes (300 candidates x 1 or 50 environments, windows
of T = 1 and 3 frames, D = 192) in four modes: fp32 with exact products ("ieee"; torch with TF32 off),
fp32 with TF32 (torch with TF32 on), the planner's bf16 (bf16 matmul operands, fp32 activations) and a
model stored in bf16 (kernels only: the predictor step keeps fp32 activations). Writes
bench/reports/kernels-<device>-<time>.json atomically. Needs CUDA: on a CPU it says so and exits 0 (the
interpreter's timings would say nothing about GPU speed; correctness is covered by tests/kernels).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bench.common import REPORTS, device_tag, environment, write_report

# mode -> (activation dtype, predictor precision). "bf16-weights" is the planner's bf16: fp32 residual
# stream/norms/softmax, bf16 matmul operands; "bf16" is a model stored in bf16 throughout.
MODES = {"fp32-ieee": (torch.float32, "ieee"), "fp32-tf32": (torch.float32, "tf32"),
         "bf16-weights": (torch.float32, "bf16"), "bf16": (torch.bfloat16, "ieee")}


def step_cases(triton, eager, emb, act) -> dict:
    """name -> (Triton step, eager step) launches: the window's T tokens from position 0, and (T > 1) its
    last token from the KV cache of the others, as the growing window's steps run."""
    T = emb.shape[1]

    def prepared(step):
        step.begin(act)
        cache = step.window(emb[:, :T - 1], 0, 0, None, keep_cache=True)[1] if T > 1 else None
        return (lambda: step.window(emb, 0, 0, None, False),
                lambda: step.window(emb[:, T - 1:], 0, T - 1, cache, False))

    (t_full, t_cached), (e_full, e_cached) = prepared(triton), prepared(eager)
    cases = {f"predictor step({T} new)": (t_full, e_full)}
    if T > 1:
        cases[f"predictor step(1 new, {T - 1} cached)"] = (t_cached, e_cached)
    return cases


def bench_case(N: int, T: int, mode: str, model, do_bench, dev: str = "cuda") -> list[dict]:
    from lewm_fast.kernels.adaln_modulation import adaln_modulation, adaln_modulation_ref
    from lewm_fast.kernels.attention import attention, attention_ref
    from lewm_fast.kernels.mlp import mlp, mlp_ref
    from lewm_fast.kernels.norm_modulate import norm_modulate, norm_modulate_ref
    from lewm_fast.model import pack_predictor
    from lewm_fast.planning.backends import EagerPredictor, TritonPredictor

    dtype, precision = MODES[mode]
    kp = "tf32" if precision == "tf32" else "ieee"
    # the torch side gets the matching fp32 matmul mode, so "ieee" compares exact with exact; for
    # "bf16-weights" it runs in bf16 (kernels: pure bf16 refs; predictor step: EagerPredictor in "bf16")
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    D = 192
    packed = pack_predictor(model.predictor, precision=precision, dtype=dtype)
    blk = packed.blocks[0]
    ref_dtype = torch.bfloat16 if precision == "bf16" else dtype
    w = lambda t: t.to(ref_dtype)  # noqa: E731
    g = torch.Generator(device=dev).manual_seed(0)
    r = lambda *s, dt=dtype: torch.randn(*s, generator=g, device=dev).to(dt)  # noqa: E731
    emb, act, x = r(N, T, D), r(N, T, D), r(N, T, D)
    mod = r(N, T, 6 * D)
    shift, scale, gate = mod[..., :D], mod[..., D:2 * D], mod[..., 2 * D:3 * D]
    rx, rmod = x.to(ref_dtype), mod.to(ref_dtype)
    rshift, rscale, rgate = rmod[..., :D], rmod[..., D:2 * D], rmod[..., 2 * D:3 * D]
    xn = norm_modulate_ref(x, shift, scale, blk.attn_ln_w, blk.attn_ln_b)
    rxn = xn.to(ref_dtype)
    mlp_args = (x, shift, scale, gate, blk.mlp_ln_w, blk.mlp_ln_b, blk.w1, blk.b1, blk.w2, blk.b2)
    rmlp_args = (rx, rshift, rscale, rgate) + tuple(w(t) for t in mlp_args[4:])
    cases = {
        "adaln_modulation(all 6 blocks)": (lambda: adaln_modulation(act, packed.mod_w, packed.mod_b, precision=kp),
                                           lambda: adaln_modulation_ref(act.to(ref_dtype), w(packed.mod_w),
                                                                        w(packed.mod_b))),
        "norm_modulate": (lambda: norm_modulate(x, shift, scale, blk.attn_ln_w, blk.attn_ln_b),
                          lambda: norm_modulate_ref(x, shift, scale, blk.attn_ln_w, blk.attn_ln_b)),
        "attention(qkv+attn+out+residual)": (
            lambda: attention(xn, blk.w_qkv, blk.w_out, blk.b_out, x, gate, packed.heads, precision=kp),
            lambda: attention_ref(rxn, w(blk.w_qkv), w(blk.w_out), w(blk.b_out), rx, rgate, packed.heads)),
        "mlp(norms+mlp+residual)": (lambda: mlp(*mlp_args, precision=kp), lambda: mlp_ref(*rmlp_args)),
    }
    if dtype == torch.float32:     # the planner's steps: fp32 activations in every precision
        step_precision = "fp32" if precision == "ieee" else precision
        cases.update(step_cases(TritonPredictor(model, step_precision), EagerPredictor(model, step_precision),
                                emb, act))
    rows = []
    with torch.inference_mode():
        for name, (fast, ref) in cases.items():
            t_fast = do_bench(fast, warmup=25, rep=200, return_mode="median")
            t_ref = do_bench(ref, warmup=25, rep=200, return_mode="median")
            rows.append(dict(kernel=name, N=N, T=T, mode=mode, triton_ms=t_fast, torch_ms=t_ref,
                             speedup=t_ref / t_fast))
            print(f"{name:34s} N={N:5d} T={T} {mode:12s} triton {t_fast:8.4f} ms  torch {t_ref:8.4f} ms  "
                  f"x{t_ref / t_fast:5.2f}", flush=True)
    return rows


def random_model(cfg):
    """A LeWM of the config's size whose predictor has non-zero AdaLN weights, so no path is skipped by
    zero gates (the predictor steps take the model)."""
    from lewm_fast.model import LeWM

    torch.manual_seed(0)
    model = LeWM(cfg).eval()
    with torch.no_grad():
        for p in model.predictor.parameters():
            p.normal_(0.0, 0.02)
    return model


def kernel_cases(cfg, N: int, T: int, precision: str, dev) -> list[tuple]:
    """(name, roofline kernel name or None, its roofline.launch options, zero-argument launch) per kernel
    at one rollout step's shapes (N sequences of T tokens), with the planner's precision ("bf16": bf16
    matmul weights, fp32 activations; "fp32": exact products) and random weights of the config's size.
    The GPU check times these against bench/roofline.py's prediction for the same launch.
    The attention and mlp launches also take launch-config keywords (block sizes, warps, stages)."""
    from lewm_fast.kernels.adaln_modulation import adaln_modulation
    from lewm_fast.kernels.attention import attention, attention_by_token
    from lewm_fast.kernels.mlp import mlp
    from lewm_fast.kernels.norm_modulate import norm_modulate
    from lewm_fast.planning.backends import TritonPredictor

    model = random_model(cfg).to(dev)
    kp_prec = "bf16" if precision == "bf16" else "ieee"
    step = TritonPredictor(model, kp_prec)
    packed = step.packed              # the weights as the step packed them (one pack, not two)
    blk = packed.blocks[0]
    D = cfg.embed_dim
    g = torch.Generator(device=dev).manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, device=dev)  # noqa: E731
    emb, act, x, xn = r(N, T, D), r(N, T, D), r(N, T, D), r(N, T, D)
    step.begin(act)
    mod = r(N, T, 6 * D)
    shift, scale, gate = mod[..., :D], mod[..., D:2 * D], mod[..., 2 * D:3 * D]
    kv = r(N, 3, 2, cfg.pred_heads * cfg.pred_dim_head)
    # the uncached window as TritonPredictor(split_window=True) launches it: one one-token launch per
    # token through a scratch KV window (no roofline row of its own: bench/roofline.py's kv_cache_split)
    split_kv = torch.empty(N, T, 2, cfg.pred_heads * cfg.pred_dim_head, device=dev)
    split_step = TritonPredictor(model, kp_prec, split_window=True)
    split_step.begin(act)
    split = [] if T < 2 else [
        ("attention(window as one-token launches)", None, {},
         lambda: attention_by_token(xn, blk.w_qkv, blk.w_out, blk.b_out, x, gate, packed.heads, precision="ieee",
                                    kv_cache=split_kv)),
        ("predictor step (whole window, split_window)", None, {}, lambda: split_step.window(emb, 0, 0, None, False))]
    cached = [] if T < 3 else [        # the growing window's last step: 2 cached tokens, last row only
        ("attention(2 cached, last_only)", "attention", dict(new=1, last_only=True),
         lambda: attention(xn[:, -1:].contiguous(), blk.w_qkv, blk.w_out, blk.b_out, x[:, -1:], gate[:, -1:],
                           packed.heads, precision="ieee", last_only=True, kv_cache=kv, cached=2))]
    return cached + [
        ("adaln_modulation(all blocks)", "adaln_modulation", {},
         lambda: adaln_modulation(act, packed.mod_w, packed.mod_b, precision="ieee")),
        ("norm_modulate", "norm_modulate", {}, lambda: norm_modulate(x, shift, scale, blk.attn_ln_w, blk.attn_ln_b)),
        ("attention", "attention", {},
         lambda **o: attention(xn, blk.w_qkv, blk.w_out, blk.b_out, x, gate, packed.heads, precision="ieee", **o)),
        ("attention(last_only)", "attention", dict(last_only=True),
         lambda: attention(xn, blk.w_qkv, blk.w_out, blk.b_out, x, gate, packed.heads, precision="ieee",
                           last_only=True)),
        ("mlp", "mlp", {}, lambda **o: mlp(x, shift, scale, gate, blk.mlp_ln_w, blk.mlp_ln_b, blk.w1, blk.b1,
                                              blk.w2, blk.b2, precision="ieee", **o)),
        ("predictor step (whole window)", None, {}, lambda: step.window(emb, 0, 0, None, False)),
    ] + split


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[300, 300 * 50], help="windows per forward (N)")
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 3], help="window lengths T (1..3)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--out", type=Path, default=None, help="report path (default bench/reports/kernels-*.json)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench.kernels: CUDA is required to time the Triton kernels; none here, nothing measured. "
              "(Correctness runs on CPU under TRITON_INTERPRET=1: pytest tests/kernels.)")
        return 0
    from triton.testing import do_bench

    from lewm_fast.model import LeWMConfig

    model = random_model(LeWMConfig()).cuda()
    rows = []
    for mode in args.modes:
        for N in args.batch:
            for T in args.tokens:
                rows.extend(bench_case(N, T, mode, model, do_bench))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = write_report(args.out or REPORTS / f"kernels-{device_tag()}-{stamp}.json",
                       dict(environment=environment(), timing="triton.testing.do_bench median, ms", results=rows))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    import sys

    from lewm_fast.cli import run_cli
    sys.exit(run_cli(main, prog="bench.kernels"))
