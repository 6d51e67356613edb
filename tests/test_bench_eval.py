"""bench.eval end to end at a tiny size: several lewm_fast loops and the reference loop in one run, the stage
split of each loop, the report after every loop and --resume."""
import json

import pytest


def test_bench_eval_variants_stages_and_resume(tmp_path, request, monkeypatch):
    pytest.importorskip("pymunk")
    request.getfixturevalue("reference")      # skips, with the reason, when the package cannot be imported
    import bench.eval as be

    out = tmp_path / "e.json"
    monkeypatch.setattr(be.tempfile, "gettempdir", lambda: str(tmp_path))
    writes = []
    real_write = be.write_report
    monkeypatch.setattr(be, "write_report", lambda path, payload: writes.append(
        (sorted(payload["variants"]), "reference_style" in payload)) or real_write(path, payload))
    common = ["--env", "pusht", "--threads", "1", "--num-eval", "2", "--num-samples", "32", "--iterations", "2",
              "--out", str(out)]
    be.main(common + ["--variants", "eager:fp32", "--skip-reference"])
    first = json.loads(out.read_text())["variants"]["eager:fp32"]
    st = first["stage_time_s"]
    # the five stages account for the wall time exactly; search and encode are the planner's own timings
    assert sum(st[k] for k in ("render", "encode", "search", "step", "other")) == pytest.approx(first["wall_time_s"])
    assert min(st[k] for k in ("render", "encode", "search", "step")) > 0
    assert st["encode"] + st["search"] <= first["solve_time_s"] + 1e-9
    assert sum(st["fraction"].values()) == pytest.approx(1.0)
    assert first["solve_calls"] == 2 and first["planner"]["precision"] == "fp32"  # budget 50 = 2 plans of 25

    writes.clear()
    be.main(common + ["--variants", "eager:fp32,eager:bf16", "--resume"])
    r = json.loads(out.read_text())
    assert r["variants"]["eager:fp32"]["wall_time_s"] == first["wall_time_s"]     # kept, not timed again
    assert r["variants"]["eager:bf16"]["planner"]["precision"] == "bf16"
    assert writes == [(["eager:bf16", "eager:fp32"], False), (["eager:bf16", "eager:fp32"], True),
                      (["eager:bf16", "eager:fp32"], True)]   # after each loop, then the final report
    ref = r["reference_style"]
    assert ref["solve_calls"] == 2 and ref["episodes"] == 2
    for v in r["variants"].values():
        assert v["speedup_vs_reference"] == pytest.approx(ref["wall_time_s"] / v["wall_time_s"])
    assert r["speedup"] == max(v["speedup_vs_reference"] for v in r["variants"].values())
    # floor and peak measured in the run; each loop's search held against them, and its ceiling
    from bench.flops import lewm_solve_flops
    from lewm_fast.checkpoint import load_checkpoint
    floor = r["floor_flops_per_env_solve"]
    assert floor == lewm_solve_flops(load_checkpoint(r["checkpoint"]).model.cfg, num_samples=32, iterations=2)["total"]
    assert set(r["matmul_peak"]) == {"fp32", "bf16"}
    for v in r["variants"].values():
        n = v["env_solves"]     # 2 episodes, 2 plans each unless one succeeds within the first 25 steps
        assert v["solve_calls"] <= n <= 2 * v["solve_calls"]
        pk = r["matmul_peak"][v["planner"]["precision"]]["tflops"] * 1e12
        assert v["search_fraction_of_matmul_peak"] == pytest.approx(n * floor / v["stage_time_s"]["search"] / pk)
        assert v["speedup_ceiling_at_peak"] == pytest.approx(ref["wall_time_s"] * pk / (n * floor))
    assert ref["solve_calls"] <= ref["env_solves"] <= 2 * ref["solve_calls"]
    assert out.with_suffix(".md").read_text().count("| lewm_fast.eval (eager:") == 2

    with pytest.raises(SystemExit):       # other settings: refuse to mix timings
        be.main([*common[:6], "3", *common[7:], "--resume"])


def test_bench_eval_rejects_bad_variants():
    from bench.eval import parse_variants

    assert parse_variants("eager:bf16, compile:fp32") == [("eager:bf16", "eager", "bf16", False),
                                                         ("compile:fp32", "eager", "fp32", True)]
    for bad in ("foo:bf16", "eager:fp16", "eager", ",", "eager:bf16,eager:bf16"):
        with pytest.raises(ValueError):
            parse_variants(bad)
