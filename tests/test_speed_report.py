"""CI speed report: lewm_fast's planner against the reference, timed in the same run on this CPU.

Size (reduced to stay well under ~90 s on 2 shared cores): the paper's full-size LeWM (random weights),
300 samples, 1 CEM iteration (of 30), 2 environments: the reference (stable-worldmodel 0.1.1, or the
port proven equal in test_reference_port.py) solves them one after another; lewm_fast plans both in
one call (eager backend, fp32 and bf16).

Timing: one torch thread and process CPU time (time.process_time), best of 3 (reference) / 5 rounds: other jobs on
the shared machine change wall time a lot but CPU time little. The report (bench/reports/ci-speed-cpu.json,
written atomically) is printed; the test fails when lewm_fast/bf16 is less than FLOOR_BF16 times as fast
as the reference. fp32 is reported, not gated: at history 1 the reference recomputes 12 token passes
where lewm_fast needs 9, so on a CPU fp32 gains only ~1.2-1.8x, too close to 1 for a noise-proof floor.

FLOOR_BF16 was set from 11 runs on the project's 2-core Xeon (AMX) at load average 4-7 (other jobs
running), Nov 2026: bf16 speed-up 1.94-3.16 (worst 1.94), fp32 1.19-1.80. The floor, 1.4, is ~28% under
the worst observation; a regression to reference speed (ratio ~1) fails it.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lewm_fast.planning.precision import cpu_has_native_bf16
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLOOR_BF16 = 1.4
SAMPLES, ITERATIONS, ENVS = 300, 1, 2
ROUNDS = {"reference": 3, "lewm_fast_eager_fp32": 5, "lewm_fast_eager_bf16": 5}   # best-of: ours is cheap
RESULTS: dict[str, dict] = {}


def _has_fast_bf16() -> bool:
    return bool(cpu_has_native_bf16())   # unknown (not Linux) counts as no


@pytest.fixture(scope="module")
def setup():
    from bench.cem import Reference, build_model

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    model, source = build_model("pusht", None, "cpu")
    ref = Reference(model, torch.device("cpu"), model.cfg.env_action_dim, SAMPLES, ITERATIONS, 30)
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (ENVS, 224, 224, 3), dtype=np.uint8)
    goal = rng.integers(0, 256, (ENVS, 224, 224, 3), dtype=np.uint8)
    with torch.no_grad():
        norm = lambda f: model.normalize_pixels(torch.from_numpy(f).permute(0, 3, 1, 2))[:, None]  # noqa: E731
        px, gx = norm(obs), norm(goal)
    yield {"model": model, "source": source, "ref": ref, "obs": obs, "goal": goal, "px": px, "gx": gx}
    torch.set_num_threads(n)


def _solver(setup, variant):
    from lewm_fast.planner import Planner

    if variant == "reference":
        solve = setup["ref"].solver(0, ENVS)
        return lambda: solve(setup["px"], setup["gx"])
    planner = Planner(setup["model"], backend="eager", precision=variant.split("_")[-1], num_samples=SAMPLES,
                      iterations=ITERATIONS, seed=0)
    return lambda: planner.plan(setup["obs"], setup["goal"])


def _measure(setup, variant, benchmark=None) -> dict:
    """Best-of-ROUNDS process CPU seconds (pytest-benchmark's stats when it ran, else timed here)."""
    fn = _solver(setup, variant)
    walls, cpus = [], []

    def once():
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)

    if benchmark is not None:
        benchmark.pedantic(once, rounds=ROUNDS[variant], iterations=1, warmup_rounds=0)
    while len(cpus) < ROUNDS[variant]:          # --benchmark-disable runs the function once only
        once()
    RESULTS[variant] = {"cpu_s": cpus, "wall_s": walls, "best_cpu_s": min(cpus), "best_wall_s": min(walls)}
    return RESULTS[variant]


@pytest.mark.benchmark(group="cem-cpu", timer=time.process_time)
@pytest.mark.parametrize("variant", ["reference", "lewm_fast_eager_fp32", "lewm_fast_eager_bf16"])
def test_solve_speed(setup, variant, benchmark):
    r = _measure(setup, variant, benchmark)
    assert r["best_cpu_s"] > 0


def test_speed_report_and_floor(setup):
    from bench.common import REPORTS, environment, write_report

    for variant in ("reference", "lewm_fast_eager_fp32", "lewm_fast_eager_bf16"):
        if variant not in RESULTS:          # this test run alone
            _measure(setup, variant)
    ref = RESULTS["reference"]["best_cpu_s"]
    ratios = {v: ref / RESULTS[v]["best_cpu_s"] for v in RESULTS if v != "reference"}
    report = {"environment": environment(), "what": "CEM solve CPU seconds, reduced size (tests/test_speed_report.py)",
              "settings": {"samples": SAMPLES, "iterations": ITERATIONS, "envs": ENVS, "rounds": ROUNDS,
                           "threads": torch.get_num_threads(), "timer": "time.process_time (best of rounds)"},
              "reference": setup["ref"].kind, "model": setup["source"], "results": RESULTS,
              "speedup_vs_reference_cpu_time": ratios, "floor_bf16": FLOOR_BF16,
              "bf16_gated": _has_fast_bf16()}
    path = write_report(REPORTS / "ci-speed-cpu.json", report)
    print(f"\nCI speed report ({path}):")
    for v, r in RESULTS.items():
        print(f"  {v:24s} best CPU {r['best_cpu_s']:.3f} s  wall {r['best_wall_s']:.3f} s"
              + ("" if v == "reference" else f"  speed-up {ratios[v]:.2f}x"))
    if not _has_fast_bf16():
        pytest.skip("CPU without AMX/AVX512-BF16: bf16 is not a fast path here, the floor does not apply")
    assert ratios["lewm_fast_eager_bf16"] >= FLOOR_BF16, (
        f"lewm_fast bf16 is only {ratios['lewm_fast_eager_bf16']:.2f}x the reference (floor {FLOOR_BF16})")
