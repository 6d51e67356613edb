"""The GPU check: one prepared run for a GPU machine lent for minutes, from a bare checkout.

    OUT=DIR bash bench/gpu_check.sh              # or: python -m bench.gpu_check --out DIR [--dry-run]

Needs only what the GPU machines have (torch, triton, numpy, h5py, pytest; no internet, no pymunk /
gymnasium / mujoco, no stable-worldmodel: the bench uses the reference port). Stages, in order, each
in its own process with its own time limit, all within --budget seconds (default 470 s, under the
8 minutes asked; a stage that would get < 15 s is skipped with that reason):

1. env         versions, device, whether the Triton kernels load and from where   -> env.json
2. cem-bf16    bench.cem: reference port vs eager / triton / graph, bf16, B = 1 and 50, PushT size,
               DINO-WM scale (2 iterations, extrapolated)                          -> cem-bf16.json/.md
3. cem-fp32    the same in fp32 (the parity precision), no DINO-WM                  -> cem-fp32.json/.md
4. pytest-gpu  the kernel tests (full size on the GPU) and the planner tests       -> pytest.xml
5. equality    graph vs triton plans and random streams, batch invariance, B=50 cost error -> equality.json
6. kernels     per-kernel ms at the B=50 window vs bench/roofline.py, then a launch-config
               sweep of attention and mlp (bf16)                                      -> kernels.json

Every stage writes its JSON as it measures; summary.json (status, return code, seconds, reason per
stage) is rewritten after each stage and each stage's output goes to <stage>.log. Without CUDA (or
with --dry-run) the same stages run at the tiny size on CPU (Triton interpreter), GPU-only parts
skipping with their reason: tests/test_gpu_check.py runs that in CI, so the GPU run is right first time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIN_STAGE_S = 15

CEM_GPU = ["--env", "pusht", "--backends", "graph,triton,eager", "--batches", "1,50", "--ref-solves", "3",
           "--ref-envs", "0"]
CEM_DRY = ["--env", "pusht", "--tiny", "--quick", "--backends", "graph,triton,eager", "--samples", "16",
           "--topk", "4", "--iterations", "2", "--batches", "1,2", "--reps", "1", "--ref-solves", "1",
           "--dinowm-samples", "2", "--dinowm-iterations", "1"]
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"]


def stages(out: Path, dry: bool) -> list[tuple[str, int, list[str]]]:
    """(name, time limit s, argv after the interpreter) in running order."""
    py = lambda name: ["-m", "bench.gpu_stages", name, "--out", str(out / f"{name}.json")]  # noqa: E731
    cem = CEM_DRY if dry else CEM_GPU
    tests = (["tests/kernels/test_kernel_gpu.py", "tests/test_planner.py", "-k", "cuda or graph or gpu"] if dry
             else ["tests/kernels", "tests/test_planner.py", "tests/test_noise.py"])
    return [
        ("env", 35, py("env")),
        ("cem-bf16", 140, ["-m", "bench.cem", *cem, "--precisions", "bf16", *([] if dry else ["--reps", "5",
                           "--dinowm-iterations", "2"]), "--out", str(out / "cem-bf16.json")]),
        ("cem-fp32", 90, ["-m", "bench.cem", *cem, "--precisions", "fp32", "--no-dinowm",
                          *([] if dry else ["--reps", "3"]), "--out", str(out / "cem-fp32.json")]),
        ("pytest-gpu", 80, [*PYTEST, *tests, "--junitxml", str(out / "pytest.xml")]),
        ("equality", 50, py("equality")),
        ("kernels", 60, py("kernels")),
    ]


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)                       # atomic: a killed run never leaves half a summary


def run(out: Path, dry: bool, budget: float, only: list[str] | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if dry:
        env["TRITON_INTERPRET"] = "1"           # the kernels run on CPU only through the interpreter
    summary = {"mode": "dry-run (CPU, tiny sizes)" if dry else "gpu", "budget_s": budget, "root": str(ROOT),
               "python": sys.executable, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "stages": []}
    for name, limit, argv in stages(out, dry):
        if only and name not in only:
            continue
        left = budget - (time.monotonic() - t0)
        t = int(min(limit, left))
        rec = {"stage": name, "limit_s": t, "argv": argv, "log": f"{name}.log"}
        if t < MIN_STAGE_S:
            rec.update(status="skipped", reason=f"only {left:.0f} s of the {budget:.0f} s budget left")
        else:
            start = time.monotonic()
            with open(out / f"{name}.log", "w") as log:
                try:
                    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, timeout=t)
                    rec.update(status="ok" if proc.returncode == 0 else "failed", rc=proc.returncode)
                except subprocess.TimeoutExpired:
                    rec.update(status="timeout", rc=None, reason=f"stopped after its {t} s limit")
            rec["seconds"] = round(time.monotonic() - start, 1)
            rec["tail"] = (out / f"{name}.log").read_text(errors="replace")[-1500:]
        summary["stages"].append(rec)
        summary["elapsed_s"] = round(time.monotonic() - t0, 1)
        _write_json(out / "summary.json", summary)
        print(f"[gpu_check] {name}: {rec['status']} ({rec.get('seconds', 0)} s of {t}) "
              f"{rec.get('reason', '')}", flush=True)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/lewm_gpu_check"))
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (automatic without CUDA)")
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for all stages together")
    ap.add_argument("--only", help="comma list of stages to run (default all)")
    args = ap.parse_args(argv)
    import torch

    dry = args.dry_run or not torch.cuda.is_available()
    s = run(Path(args.out), dry, args.budget, args.only.split(",") if args.only else None)
    print(f"[gpu_check] {s['mode']}: {s['elapsed_s']} s; " +
          ", ".join(f"{r['stage']}={r['status']}" for r in s["stages"]), flush=True)
    return 0 if all(r["status"] == "ok" for r in s["stages"]) else 1


if __name__ == "__main__":
    sys.exit(main())
