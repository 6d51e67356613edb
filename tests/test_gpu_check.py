"""The GPU check's CPU dry run (issue 14, item 5): every stage runs its CPU-capable code at the tiny
size, as the GPU machine will at full size, from the bare tree and with the packages the GPU
machines lack made unimportable (a sitecustomize that blocks them, the native extension included).
GPU-only parts must skip with their reason, never fail."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import gpu_check  # noqa: E402

MISSING_ON_GPU_MACHINES = ["pymunk", "gymnasium", "mujoco", "dm_control", "ogbench", "stable_worldmodel",
                           "transformers", "pygame", "shapely", "cv2", "lewm_fast._native"]
BLOCKER = f"""
import importlib.abc, sys
BLOCK = {MISSING_ON_GPU_MACHINES!r}
class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCK):
            raise ImportError(f"No module named {{name!r}} (not on the GPU machines)")
sys.meta_path.insert(0, _Missing())
"""


@pytest.mark.slow
def test_dry_run_runs_every_stage(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=str(tmp_path / "site"), OUT=str(tmp_path / "out"), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    status = {s["stage"]: s["status"] for s in summary["stages"]}
    assert status == {name: "ok" for name, _, _ in gpu_check.stages(out, True)}, \
        proc.stdout + "".join(s.get("tail", "") for s in summary["stages"] if s["status"] != "ok")
    assert proc.returncode == 0 and summary["elapsed_s"] <= summary["budget_s"]

    envj = json.loads((out / "env.json").read_text())
    assert envj["kernels"]["available"] and str(ROOT / "kernels") in envj["kernels"]["detail"]
    for prec in ("bf16", "fp32"):
        cem = json.loads((out / f"cem-{prec}.json").read_text())
        assert cem["complete"] and cem["reference"]["implementation"].startswith("port")
        assert "No module named" in cem["reference"]["implementation"]        # the package was really absent
        ran = {(v["backend"], v["B"]): v["ran"]["predictor"] for v in cem["variants"]}
        assert ran == {("triton", 1): "TritonPredictor", ("triton", 2): "TritonPredictor",
                       ("eager", 1): "EagerPredictor", ("eager", 2): "EagerPredictor"}
        assert [s["backend"] for s in cem["skipped"]] == ["graph"] and "CUDA" in cem["skipped"][0]["reason"]
    eq = json.loads((out / "equality.json").read_text())
    fp32 = next(r for r in eq["records"] if r["check"] == "triton-vs-eager fp32")
    assert fp32["plan_max_abs"] <= 1e-4 and fp32["ran"] == "TritonPredictor"
    assert {s["what"] for s in eq["skipped"]} == {"graph-vs-triton bf16", "graph-vs-triton fp32"}
    kern = json.loads((out / "kernels.json").read_text())
    timed = [r for r in kern["records"] if "kernel" in r]
    assert not kern["skipped"] and len(timed) == 2 * (6 + 9)       # T = 1 and 3 (+ cached, split) x 2 precisions
    no_row = ("predictor step (whole window)", "predictor step (whole window, split_window)",
              "attention(window as one-token launches)")
    assert all(r["roofline_ms"] > 0 for r in timed if r["kernel"] not in no_row)
    assert all(r["roofline_ms"] is None for r in timed if r["kernel"] in no_row)
    sweep = [r for r in kern["records"] if "sweep" in r]                # CPU: the default config of each
    assert [r["sweep"] for r in sweep] == ["attention", "mlp"] and all(r["max_abs_vs_default"] == 0 for r in sweep)
    assert "skipped" in (out / "pytest-gpu.log").read_text()                 # GPU tests skip with a reason


def test_budget_skips_stages_with_the_reason(tmp_path):
    s = gpu_check.run(tmp_path, dry=True, budget=5)
    assert [r["status"] for r in s["stages"]] == ["skipped"] * 6
    assert all("budget" in r["reason"] for r in s["stages"])
    assert json.loads((tmp_path / "summary.json").read_text())["stages"][-1]["stage"] == "kernels"


def test_gpu_stage_limits_fit_eight_minutes(tmp_path):
    assert sum(limit for _, limit, _ in gpu_check.stages(tmp_path, False)) <= 480
    cem = [argv for name, _, argv in gpu_check.stages(tmp_path, False) if name.startswith("cem")]
    for argv in cem:      # the essential table: reference vs eager / triton / graph, B = 1 and 50, full size
        assert "--tiny" not in argv and argv[argv.index("--batches") + 1] == "1,50"
        assert set(argv[argv.index("--backends") + 1].split(",")) == {"eager", "triton", "graph"}
