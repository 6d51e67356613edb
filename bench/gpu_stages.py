"""The GPU check's own stages (bench/gpu_check.py runs each in its own process with its own timeout):

    python -m bench.gpu_stages env       --out OUT/env.json        # versions, device, kernel availability
    python -m bench.gpu_stages equality  --out OUT/equality.json   # graph vs triton plans, batch invariance
    python -m bench.gpu_stages kernels   --out OUT/kernels.json    # per-kernel ms vs bench/roofline.py

On a GPU at PushT size; on a CPU (the dry run) the same code at the tiny size through the Triton
interpreter, with what needs CUDA recorded as skipped with the reason. Each stage writes its JSON
after every measurement (atomically), so a timeout keeps what was measured.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import environment, write_report


class Results:
    """A JSON report written after every record."""

    def __init__(self, path, **header):
        self.path, self.data = Path(path), {"environment": environment(), **header, "records": [], "skipped": []}
        self.flush()

    def flush(self):
        write_report(self.path, self.data)

    def add(self, **rec):
        self.data["records"].append(rec)
        print(rec, flush=True)
        self.flush()

    def skip(self, what, reason):
        self.data["skipped"].append({"what": what, "reason": reason})
        print(f"skip {what}: {reason}", flush=True)
        self.flush()


def _device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def stage_env(out) -> int:
    import triton

    import lewm_fast
    from lewm_fast.planner import kernels_status

    dev = _device()
    ok, why = kernels_status(dev)
    r = Results(out, stage="env")
    r.data.update({
        "python": sys.version.split()[0], "torch": torch.__version__, "triton": triton.__version__,
        "cuda": torch.cuda.is_available(), "device": str(dev),
        "device_name": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        "capability": list(torch.cuda.get_device_capability()) if dev.type == "cuda" else None,
        "lewm_fast": lewm_fast.__file__, "kernels": {"available": ok, "detail": why},
        "graph_generator_registration": hasattr(torch.cuda.CUDAGraph, "register_generator_state")})
    r.flush()
    print(r.data, flush=True)
    return 0


def _model(dev, tiny):
    from bench.cem import build_model

    return build_model("pusht", None, "cpu", tiny=tiny)[0].to(dev)


def _frames(B, size, seed):
    return np.random.default_rng(seed).integers(0, 256, (B, size, size, 3), dtype=np.uint8)


def _maxdiff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


def stage_equality(out) -> int:
    """graph == triton (same kernels, captured vs launched; same streams after each call), batch
    invariance (B rows vs single-env plans), and the B=50 cost error of each path against eager fp32."""
    from lewm_fast.planner import Planner
    from lewm_fast.planning.engine import RolloutEngine

    dev = _device()
    cuda = dev.type == "cuda"
    r = Results(out, stage="equality", device=str(dev))
    model = _model(dev, tiny=not cuda)
    size = model.cfg.image_size
    n_env = 4 if cuda else 2
    obs, goal = _frames(n_env, size, 0), _frames(n_env, size, 1)
    kw = dict(device=dev, seed=7, iterations=10 if cuda else 2, num_samples=300 if cuda else 16,
              topk=30 if cuda else 4)
    for prec in ("bf16", "fp32"):
        try:
            tri = Planner(model, backend="triton", precision=prec, **kw)
            if not cuda:
                r.skip(f"graph-vs-triton {prec}", "needs CUDA (CUDA graphs); triton ran under the interpreter")
                a = Planner(model, backend="eager", precision=prec, **kw).plan(obs, goal)
                b = tri.plan(obs, goal)
                r.add(check=f"triton-vs-eager {prec}", plan_max_abs=_maxdiff(a.blocks, b.blocks),
                      cost_max_abs=_maxdiff(a.cost, b.cost), ran=b.info["predictor"])
                continue
            gra = Planner(model, backend="graph", precision=prec, **kw)
            for call in (1, 2):                       # capture + replay, then a plain replay
                a, b = tri.plan(obs, goal), gra.plan(obs, goal)
                same_rng = all(torch.equal(x.get_state(), y.get_state()) for x, y in
                               zip(tri.streams.generators(range(n_env)), gra.streams.generators(range(n_env))))
                r.add(check=f"graph-vs-triton {prec} call {call}", plan_max_abs=_maxdiff(a.blocks, b.blocks),
                      cost_max_abs=_maxdiff(a.cost, b.cost), streams_equal=same_rng,
                      ran={"triton": a.info["predictor"], "graph": b.info["predictor"]})
            fresh = Planner(model, backend="graph", precision=prec, **kw)
            batched = fresh.plan(obs, goal)
            single = [Planner(model, backend="graph", precision=prec, **kw).plan(obs[i:i + 1], goal[i:i + 1],
                                                                                 env_ids=[i]) for i in range(n_env)]
            r.add(check=f"batch-invariance graph {prec}",
                  plan_max_abs=max(_maxdiff(batched.blocks[i:i + 1], s.blocks) for i, s in enumerate(single)))
        except Exception as e:  # one failing check must not lose the others
            r.skip(f"equality {prec}", f"failed: {type(e).__name__}: {e}")
    g = torch.Generator().manual_seed(1)
    B = 50 if cuda else 2
    S = 300 if cuda else 8
    D, A = model.cfg.embed_dim, model.cfg.action_dim
    ctx, goal_e, cand = (torch.randn(*s, generator=g).to(dev) for s in ((B, 1, D), (B, D), (B, S, 5, A)))
    want = RolloutEngine(model, "fp32", "eager").costs(ctx, goal_e, cand)
    for prec in ("bf16", "fp32"):
        for be in ("eager", "triton"):
            try:
                got = RolloutEngine(model, prec, be).costs(ctx, goal_e, cand)
                rel = ((got - want).abs() / want.abs().clamp_min(1e-12)).flatten()
                r.add(check=f"cost rel err vs eager fp32, B={B}", precision=prec, predictor=be,
                      median=float(rel.median()), max=float(rel.max()))
            except Exception as e:
                r.skip(f"cost {prec}/{be}", f"failed: {type(e).__name__}: {e}")
    return 0


def stage_kernels(out) -> int:
    """Each predictor kernel at the shapes of one B=50 PushT rollout step, timed, against the roofline's
    prediction for the same launch (bench/roofline.py, today's tiles)."""
    from bench import roofline
    from bench.kernels import kernel_cases
    from lewm_fast.model import LeWMConfig

    dev = _device()
    cuda = dev.type == "cuda"
    cfg = LeWMConfig() if cuda else LeWMConfig.tiny()
    N = 50 * 300 if cuda else 32
    r = Results(out, stage="kernels", device=str(dev), rows=N, config="paper" if cuda else "tiny",
                note=None if cuda else "CPU dry run: Triton interpreter timings, meaningless as speed")
    if cuda:
        from triton.testing import do_bench

        def bench(fn):
            return do_bench(fn, warmup=10, rep=50, return_mode="median")
    else:
        def bench(fn):
            fn()
            t = time.perf_counter()
            fn()
            return 1e3 * (time.perf_counter() - t)
    for prec in ("bf16", "fp32"):
        for T in (1, 3):
            for name, kernel, opts, fn in kernel_cases(cfg, N, T, prec, dev):
                try:
                    ms = bench(fn)
                    pred = None
                    if kernel is not None:
                        lc = roofline.launch(kernel, cfg, N, T, prec, path="kv_cache_today", **opts)
                        pred = lc.ms(prec, graph=False)
                    r.add(kernel=name, precision=prec, T=T, measured_ms=ms, roofline_ms=pred,
                          measured_over_roofline=None if pred is None else ms / pred)
                except Exception as e:
                    r.skip(f"{name} {prec} T={T}", f"failed: {type(e).__name__}: {e}")
    _sweep(r, cfg, N, dev, bench, cuda)
    return 0


# launch configurations to time on the first GPU run (bf16, the B=50 full window): the bf16 autotune list
# of each kernel for that shape, lead config first (the tuner picks one per shape but does not report the
# others' times); offline sm_90 compiles say which spill, only a GPU which is fastest
def _attention_sweep() -> list[dict]:
    from lewm_fast.kernels.attention import GPU_CONFIGS

    return [dict(block_n=c["BLOCK_N"], block_k=c["BLOCK_K"], num_warps=c["num_warps"], num_stages=c["num_stages"])
            for c in GPU_CONFIGS["bf16", "window"]]


def _mlp_sweep() -> list[dict]:
    from lewm_fast.kernels.mlp import GPU_CONFIGS

    return [dict(block_m=c["BLOCK_M"], block_h=c["BLOCK_H"], num_warps=c["num_warps"], num_stages=c["num_stages"])
            for c in GPU_CONFIGS["bf16"]]


def _sweep(r, cfg, N, dev, bench, cuda):
    from bench.kernels import kernel_cases

    cases = {name: fn for name, _, _, fn in kernel_cases(cfg, N, 3, "bf16", dev)}
    for kernel, configs in dict(attention=_attention_sweep(), mlp=_mlp_sweep()).items():
        base = None
        for opts in (configs if cuda else configs[:1]):
            try:
                out = cases[kernel](**opts)
                base = out if base is None else base
                r.add(sweep=kernel, precision="bf16", T=3, options=opts, measured_ms=bench(lambda: cases[kernel](**opts)),
                      max_abs_vs_default=float((out.float() - base.float()).abs().max()))
            except Exception as e:
                r.skip(f"sweep {kernel} {opts}", f"failed: {type(e).__name__}: {e}")


STAGES = {"env": stage_env, "equality": stage_equality, "kernels": stage_kernels}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=sorted(STAGES))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    with torch.no_grad():       # not inference_mode: models built under it hold inference tensors
        return STAGES[args.stage](args.out)


if __name__ == "__main__":
    sys.exit(main())
