"""The benchmark tools: FLOP counts against torch's FlopCounterMode, and bench.cem end to end at a tiny size."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from helpers import random_model
from lewm_fast.model import LeWMConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.dinowm import DinoWMConfig, DinoWMReferenceCEM, random_dinowm  # noqa: E402
from bench.flops import dinowm_solve_flops, lewm_solve_flops  # noqa: E402
from bench.reference_port import ReferencePortCEM  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def _counted(fn) -> int:
    # the math SDPA backend runs attention as matmuls, which the counter sees (the CPU flash kernel it does not)
    with FlopCounterMode(display=False) as fc, sdpa_kernel(SDPBackend.MATH):
        fn()
    return fc.get_total_flops()


@pytest.mark.parametrize("overrides", [{}, {"env_action_dim": 5, "num_frames": 2}, {"num_frames": 4}])
def test_reference_flops_match_flop_counter(overrides):
    cfg = LeWMConfig.tiny(**overrides)
    port = ReferencePortCEM(random_model(cfg, scale=0.3), num_samples=16, n_steps=3, topk=4)
    x = torch.randn(1, 1, 3, 32, 32)
    assert _counted(lambda: port.solve(x, x)) == lewm_solve_flops(cfg, num_samples=16, iterations=3,
                                                                  mode="reference")["total"]


def test_floor_is_targets_number():
    """targets.md: 9 token passes x 6 layers x ~1.8 M parameters x 300 x 30 ~ 1.75 TFLOP per PushT solve."""
    f = lewm_solve_flops(LeWMConfig())
    assert f["token_passes_per_candidate"] == 9
    assert f["predictor_linear"] == pytest.approx(1.75e12, rel=0.01)
    r = lewm_solve_flops(LeWMConfig(), mode="reference")
    assert r["token_passes_per_candidate"] == 12
    assert r["predictor_linear"] == pytest.approx(f["predictor_linear"] * 12 / 9)


def test_dinowm_flops_match_flop_counter():
    cfg = DinoWMConfig.small()
    planner = DinoWMReferenceCEM(random_dinowm(cfg), num_samples=8, iterations=2, topk=3)
    x, p = torch.randn(1, 3, 32, 32), torch.randn(1, cfg.proprio_dim)
    assert _counted(lambda: planner.solve(x, p, x, p)) == dinowm_solve_flops(cfg, num_samples=8, iterations=2)["total"]


def test_dinowm_full_size_matches_spec():
    """Spec F: 196 patch tokens x 384 per frame; predictor width 404, ~19 M parameters."""
    cfg = DinoWMConfig()
    assert cfg.patches == 196 and cfg.enc_dim == 384 and cfg.pred_width == 404
    from bench.dinowm import derivation

    d = derivation(cfg)
    assert "224 px frames to 196 px" in d["frames"] and "= 196 patch tokens of 384" in d["frames"]
    assert d["width"].endswith("= 404") and "588 predictor tokens" in d["tokens"]
    m = random_dinowm(cfg)
    n = sum(p.numel() for p in m.pred_blocks.parameters())
    assert 18e6 < n < 21e6
    assert m.encode_pixels(torch.randn(1, 3, 196, 196)).shape == (1, 196, 384)


@pytest.mark.parametrize("port", [False, True], ids=["package", "port"])
def test_bench_cem_tiny_end_to_end(tmp_path, request, monkeypatch, port):
    """The whole script at a tiny size, with the package and with the port that stands in for it on GPUs
    (the port variant runs without the package too). The report is written after every measurement.
    (The triton backend under the CPU interpreter is exercised by the GPU check's dry run: test_gpu_check.py.)"""
    import bench.cem as bc

    if not port:
        request.getfixturevalue("reference")     # skips, with the reason, when the package cannot be imported
    out = tmp_path / "cem.json"
    writes = []
    real_write = bc.write_report
    monkeypatch.setattr(bc, "write_report", lambda path, payload: writes.append(
        (payload["complete"], len(payload["variants"]))) or real_write(path, payload))
    bc.main(["--env", "pusht", "--tiny", "--iterations", "3", "--samples", "64", "--topk", "8", "--batches", "1,3",
             "--reps", "2", "--ref-solves", "2", "--dinowm-samples", "2", "--backends", "eager,graph",
             "--out", str(out)] + (["--reference-port"] if port else []))
    # reference, then each of the 4 variants, then the final complete report
    assert writes[0] == (False, 0) and writes[-1] == (True, 4)
    assert [n for c, n in writes if not c][:5] == [0, 1, 2, 3, 4]
    r = json.loads(out.read_text())
    assert r["reference"]["implementation"].startswith("port" if port else "package")
    assert r["environment"]["torch"] == torch.__version__
    got = {(v["backend"], v["precision"], v["B"]) for v in r["variants"]}
    assert got == {("eager", p, b) for p in ("fp32", "bf16") for b in (1, 3)}
    fp32 = next(v for v in r["variants"] if v["precision"] == "fp32" and v["B"] == 1)
    assert fp32["agreement"]["max_abs_action_diff"] <= 1e-4        # same seed, same plan as the reference
    assert len(fp32["raw_s"]) == 2 and fp32["median_s"] > 0
    assert {s["backend"] for s in r["skipped"]} == {"graph"}     # CPU: say why, don't crash
    assert all(v["ran"] == {"kernels": "torch", "cuda_graph": False, "predictor": "EagerPredictor"}
               for v in r["variants"])
    assert r["complete"] is True
    assert r["dinowm"]["extrapolated"] is True and "EXTRAPOLATED" in r["dinowm"]["note"]
    assert set(r["dinowm"]["derivation"]) == {"frames", "width", "tokens", "kernels"}
    assert (tmp_path / "cem.md").read_text().count("| eager") == 4
    # the ceiling: the reference's time over the floor's FLOPs at the precision's measured peak
    for v in r["variants"]:
        floor_s = r["flops_per_env_solve"]["floor"]["total"] / (r["matmul_peak"][v["precision"]]["tflops"] * 1e12)
        assert v["speedup_ceiling_at_peak"] == pytest.approx(r["reference"]["B1"]["median_s"] / floor_s)
        # consistent with the two figures beside it: speed-up / fraction of peak
        assert v["speedup_ceiling_at_peak"] == pytest.approx(v["speedup_vs_reference"] / v["fraction_of_matmul_peak"])


def test_collect_bench_reports_throughput(monkeypatch, tmp_path):
    import bench.collect as bc

    written = {}
    monkeypatch.setattr(bc, "write_report", lambda path, payload: written.update(payload) or path)
    res = bc.main(["--env", "tworoom", "--episodes", "3", "--workers", "1"])
    assert res["episodes"] == 3 and res["frames"] >= 3 and res["episodes_per_min"] > 0
    assert written["result"] == res and written["environment"]["torch"]


def test_render_mujoco_bench_measures_each_way(monkeypatch, tmp_path):
    from lewm_fast.envs.mujoco_gl import select_gl_backend
    try:
        select_gl_backend()   # before mujoco is imported
    except RuntimeError as err:
        pytest.skip(f"no headless GL: {err}")
    pytest.importorskip("mujoco")
    import bench.render_mujoco as br

    written = {}
    monkeypatch.setattr(br, "write_report", lambda path, payload: written.update(payload) or path)
    png = tmp_path / "pair.png"
    rows = br.main(["--env", "reacher", "--resolution", "32", "--states", "2", "--passes", "1", "--frames-png", str(png)])
    bound = rows.pop("collection")
    assert set(rows) == {"reference", "224-resized", "native", "env", "env-no-shadows"} and written["result"] == rows
    assert rows["native"]["render_size"] == 32 and rows["env"]["render_size"] == rows["env-no-shadows"]["render_size"] == 64
    # the shadow pass off changes the picture (the reference draws shadows), so it lies further from it
    assert rows["env-no-shadows"]["mean_abs_diff_grey"] > rows["env"]["mean_abs_diff_grey"]
    # one collected frame = one physics + policy step and one env frame
    assert written["collection"] == bound and bound["physics_policy_ms_per_step"] > 0
    assert bound["collect_bound_frames_per_s"] == pytest.approx(
        1e3 / (bound["physics_policy_ms_per_step"] + rows["env"]["render_ms"]))
    for way in ("224-resized", "native", "env"):
        assert rows[way]["render_ms"] > 0 and 0 <= rows[way]["mean_abs_diff_grey"] < 10
    # a 224 px render with the fast settings, resized, is the closest to the reference's resized picture
    assert rows["224-resized"]["mean_abs_diff_grey"] <= rows["env"]["mean_abs_diff_grey"] <= rows["native"]["mean_abs_diff_grey"]
    assert png.stat().st_size > 0


def test_cost_ranking_replays_the_expert_exactly():
    """bench.cost_ranking on the shipped TwoRoom model: the expert's own actions replayed from the start state
    reach the goal exactly (the env is deterministic), and the report's ranks and correlations are in range."""
    from bench.cost_ranking import rank_pairs, true_distance
    rep = rank_pairs("lewm_fast/pretrained/tworoom.safetensors", "tworoom", num_pairs=2, num_candidates=6,
                     progress=False)
    for row in rep["per_pair"]:
        assert row["expert_true"] < 1e-6
        assert 0 <= row["expert_rank_planned"] < 6 and -1 <= row["spearman_planned"] <= 1
    s, g = np.array([10.0, 20, 30, 40, 0.0]), np.array([10.0, 20, 30, 52, np.pi / 9])
    assert true_distance("pusht", s, g) == pytest.approx(np.hypot(12 / 20, 1.0))
    # Reacher: joint distance in units of the 0.05 rad test; velocities do not count
    assert true_distance("reacher", np.array([0.03, -0.04, 5.0, 5.0]), np.zeros(4)) == pytest.approx(1.0)


def test_profile_cem_accounts_for_the_wall_time(tmp_path):
    # bench.profile_cem: category shares plus time outside ops make up the profiled wall time, and
    # every GEMM's FLOPs follow from its recorded shape.
    from bench import profile_cem

    out = tmp_path / "p.json"
    r = profile_cem.main(["--env", "tworoom", "--tiny", "--precision", "fp32", "--samples", "16",
                          "--iterations", "2", "--topk", "4", "--out", str(out)])
    assert out.exists() and out.with_suffix(".md").exists()
    assert abs(sum(r["share_of_wall"].values()) - 1.0) < 1e-6
    assert 0 < r["op_self_s_total"] <= r["wall_s"] * 1.05
    assert r["gemms"] and all(g["batch_rows_inner_width"] and g["calls"] > 0 for g in r["gemms"])
    assert profile_cem.category("aten::addmm") == "gemm" and profile_cem.category("aten::copy_") == "copies / allocation"


def test_oracle_reacher_rollout_matches_env_steps():
    # bench.oracle_plan simulates Reacher candidates through mujoco.rollout: the final states must be
    # exactly what ReacherEnv.step reaches from the same state with the same actions
    from lewm_fast.envs.mujoco_gl import select_gl_backend
    try:
        select_gl_backend()
    except RuntimeError as err:
        pytest.skip(f"no headless GL: {err}")
    pytest.importorskip("mujoco")
    from bench.oracle_plan import _reacher_final_states
    from lewm_fast.envs import make

    env = make("reacher", resolution=32)
    env.reset(seed=3)
    for a in np.random.default_rng(1).uniform(-1, 1, (7, 2)):
        env.step(a)
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 10, 2))
    finals, start = _reacher_final_states(env, actions), env.get_state()
    for seq, final in zip(actions, finals):
        env.set_state(start)
        for a in seq:
            env.step(a)
        np.testing.assert_array_equal(env.get_state(), final)
    env.close()


def test_oracle_planner_scores_by_the_simulator_and_reaches_goals():
    # SimulatorPlanner's cost is the true distance of the state each candidate reaches, and CEM over it
    # reaches TwoRoom goals the random policy mostly misses on the same expert pairs
    from bench.cost_ranking import true_distance
    from bench.oracle_plan import SimulatorPlanner
    from lewm_fast.envs import make
    from lewm_fast.eval import expert_pairs, run_episodes

    stats = {"mean": [0.0, 0.0], "std": [1.0, 1.0]}
    planner = SimulatorPlanner("tworoom", stats, num_samples=48, iterations=4, topk=8, seed=0)
    pairs = expert_pairs("tworoom", 6, 25, seed=1000)
    env = make("tworoom")
    env.reset(seed=0)
    env.set_state(pairs["start_states"][0])
    actions = np.random.default_rng(0).uniform(-1, 1, (2, 25, 2))
    finals = planner.simulate(env, actions)
    for seq, final in zip(actions, finals):
        env.set_state(pairs["start_states"][0])
        for a in seq:
            env.step(a)
        np.testing.assert_allclose(env.get_state(), final)
        assert true_distance("tworoom", final, pairs["goal_states"][0]) >= 0
    ours = run_episodes("tworoom", pairs, "cem", planner, seed=0)
    rand = run_episodes("tworoom", pairs, "random", seed=0)
    assert ours["solves"] >= 1 and ours["success_rate"] >= 5 / 6 and ours["success_rate"] > rand["success_rate"]


def test_model_card_training_time_skips_interruptions():
    from bench.model_card import INTERRUPTION_S, training_wall_time
    steps = [{"step": i + 1, "time": t} for i, t in enumerate([100.0, 101.5, 103.0, 103.0 + INTERRUPTION_S + 50, 104.5 + INTERRUPTION_S + 50])]
    assert training_wall_time(steps) == pytest.approx(1.5 + 1.5 + 1.5)
    assert training_wall_time([{"step": 1}, {"step": 2}]) is None       # logs from before the clock


def test_parity_scores_both_precisions_with_the_fp32_model(tmp_path):
    # bench.parity: each precision's plans scored by one fp32 rollout; the gaps follow from those scores,
    # and on the tiny model bf16 plans cost within a few percent of fp32 plans
    from bench import parity

    r = parity.main(["--tiny", "--env", "tworoom", "--envs", "3", "--samples", "32", "--iterations", "3",
                     "--topk", "4", "--out", str(tmp_path / "p.json")])
    f, b = np.array(r["fp32_scored_cost"]["fp32"]), np.array(r["fp32_scored_cost"]["bf16"])
    np.testing.assert_allclose(r["rel_gap_per_pair"], (b - f) / f, rtol=1e-6)
    assert r["pairs"] == 3 and abs(r["rel_gap_mean"]) < 0.05 and r["max_abs_plan_diff"] > 0
    assert json.loads((tmp_path / "p.json").read_text())["rel_gap_mean"] == r["rel_gap_mean"]


def test_model_card_reads_rates_from_reports_and_names_datasets_by_file(tmp_path, monkeypatch):
    # the card's success rates are the reports' own, and datasets are named by file, not by where they lay
    import lewm_fast.checkpoint as ck
    from bench import model_card
    from helpers import random_model
    from lewm_fast.model import LeWMConfig

    cfg = LeWMConfig.tiny()
    src = tmp_path / "run" / "model.safetensors"
    src.parent.mkdir()
    ck.save_checkpoint(src, random_model(cfg), info={"data": "/somewhere/data/train.h5", "env": {
        "name": "tworoom", "action_dim": cfg.env_action_dim, "image_size": [cfg.image_size] * 2}})
    rep = {"policy": "cem", "pairs": "dataset", "dataset": "/somewhere/data/heldout.h5", "protocol": {"seeds": [1, 2]},
           "planner": None, "success_rate_mean": 0.5, "success_rate_std": 0.1,
           "runs": {"1": {"success_rate": 0.4}, "2": {"success_rate": 0.6}}}
    (tmp_path / "eval.json").write_text(json.dumps(rep))
    monkeypatch.setattr(ck, "PRETRAINED_DIR", tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    card = model_card.main(["--name", "demo", "--env", "tworoom", "--checkpoint", str(src), "--recipe", "r",
                            "--report", f"ds={tmp_path / 'eval.json'}", "--wall-time", "train=12.5"])
    ev = card["evaluations"]["ds"]
    assert ev["success_rate_mean"] == 0.5 and ev["per_seed"] == {"1": 0.4, "2": 0.6}
    assert ev["dataset"] == "heldout.h5" and card["info"]["data"] == "train.h5" and card["wall_time_s"] == {"train": 12.5}
    assert json.loads((tmp_path / "shipped" / "demo.json").read_text()) == json.loads(json.dumps(card))
    assert ck.load_checkpoint(tmp_path / "shipped" / "demo.safetensors").info["env"]["name"] == "tworoom"


def test_cost_ranking_scores_cems_own_plan_against_the_experts():
    # --cem: one CEM solve's plan joins the candidates; with the shipped TwoRoom model (which plans) it ends
    # within a few success radii of the goal, and the expert/random statistics are unchanged by it
    from bench.cost_ranking import rank_pairs
    kw = dict(num_pairs=3, num_candidates=6, progress=False)
    base = rank_pairs("lewm_fast/pretrained/tworoom.safetensors", "tworoom", **kw)
    rep = rank_pairs("lewm_fast/pretrained/tworoom.safetensors", "tworoom", cem=(64, 5), **kw)
    assert rep["cem"]["cem_true_mean"] < 3 and 0 <= rep["cem"]["cem_scored_below_expert"] <= 3
    for a, b in zip(base["per_pair"], rep["per_pair"]):
        assert 0 <= b["cem_rank_planned"] <= 6 and b["expert_planned"] > 0
        assert a["spearman_planned"] == pytest.approx(b["spearman_planned"], abs=1e-6)
        assert a["expert_rank_planned"] == b["expert_rank_planned"]


@pytest.mark.parametrize("bad", ["300", "0,5", "a,b", "300,30,1"])
def test_cost_ranking_refuses_a_malformed_cem(bad):
    from bench import cost_ranking
    with pytest.raises(SystemExit):
        cost_ranking.main(["--checkpoint", "tworoom", "--env", "tworoom", "--cem", bad])


def test_encoder_ceiling_learns_what_the_frames_show(tmp_path):
    """bench.encoder_ceiling: the checkpoint's architecture, trained on the state, exposes the moving square's
    position to the same probes far better than it starts (its loss falls; probed R^2 is high)."""
    from bench.encoder_ceiling import main as ceiling
    from lewm_fast.checkpoint import save_checkpoint
    from lewm_fast.model import LeWMConfig
    from tests.helpers import random_model, write_synthetic

    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, random_model(LeWMConfig.tiny(), seed=5))
    train = write_synthetic(tmp_path / "train.h5", n_episodes=60, length=30, seed=0)
    held = write_synthetic(tmp_path / "held.h5", n_episodes=30, length=20, seed=1)   # 6 test episodes
    rep = ceiling(["--env", "synthetic", "--checkpoint", str(ckpt), "--data", train, "--probe-dataset", held,
                   "--steps", "400", "--batch-size", "32", "--lr", "1e-3", "--precision", "fp32", "--max-frames", "600",
                   "--mlp-steps", "100", "--out", str(tmp_path / "out"), "--no-progress"])
    first, last = rep["supervised"]["loss_first_last_tenth"]
    assert last < 0.5 * first
    sup = rep["probe_r2"]["supervised"]
    assert set(sup) == {"state_0", "state_1"} and set(rep["probe_r2"]["jepa"]) == set(sup)
    jepa = rep["probe_r2"]["jepa"]   # the random-weight checkpoint, probed the same way
    assert all(sup[q]["linear"] > 0.7 and sup[q]["linear"] > jepa[q]["linear"] + 0.3 for q in sup), (sup, jepa)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["probe_r2"] == json.loads(json.dumps(rep["probe_r2"]))


def test_pixel_moments_of_a_drawn_rectangle_and_of_the_rendered_agent():
    """bench.pixel_moments: centroid and principal axis of a rotated rectangle match the geometry; the agent
    mask the renderer draws is centred on the agent's state position (scaled from the 512 px canvas)."""
    from bench.pixel_moments import moments, object_mask
    yy, xx = np.mgrid[0:200, 0:200].astype(np.float64)
    phi = 0.3                                          # long axis of a 120 x 20 bar at angle phi, centred (90, 110)
    u = (xx - 90) * np.cos(phi) + (yy - 110) * np.sin(phi)
    v = -(xx - 90) * np.sin(phi) + (yy - 110) * np.cos(phi)
    m = moments(((np.abs(u) <= 60) & (np.abs(v) <= 10))[None])
    assert m["cx"][0] == pytest.approx(90, abs=0.05) and m["cy"][0] == pytest.approx(110, abs=0.05)
    assert m["axis_cos2"][0] == pytest.approx(np.cos(2 * phi), abs=2e-3)
    assert m["axis_sin2"][0] == pytest.approx(np.sin(2 * phi), abs=2e-3)
    states = np.array([[100.0, 300.0, 256.0, 256.0, 0.5, 0, 0], [400.0, 150.0, 200.0, 300.0, 2.0, 0, 0]])
    agent = moments(object_mask(states, 96, "agent"))
    np.testing.assert_allclose(agent["cx"], states[:, 0] * 96 / 512 - 0.5, atol=0.3)
    np.testing.assert_allclose(agent["cy"], states[:, 1] * 96 / 512 - 0.5, atol=0.3)
    block = moments(object_mask(states, 96, "block"))
    assert block["pixels"].min() > 5 * agent["pixels"].max()    # the T is the larger object
    with pytest.raises(ValueError, match="no pixel"):
        moments(np.zeros((1, 8, 8), bool))


def test_model_card_of_a_snapshot_counts_training_up_to_its_step(tmp_path, monkeypatch):
    # a snapshot shipped from the middle of a longer run: steps, final losses and wall time stop at its step
    import lewm_fast.checkpoint as ck
    from bench import model_card
    from helpers import random_model
    from lewm_fast.model import LeWMConfig

    cfg = LeWMConfig.tiny()
    src = tmp_path / "model-step3.safetensors"
    ck.save_checkpoint(src, random_model(cfg), info={"step": 3, "env": {
        "name": "tworoom", "action_dim": cfg.env_action_dim, "image_size": [cfg.image_size] * 2}})
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s, "pred_loss": 1.0 / s, "sigreg": 2.0 * s, "time": 100.0 + 10 * s}) + "\n"
                           for s in range(1, 6)))
    monkeypatch.setattr(ck, "PRETRAINED_DIR", tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    card = model_card.main(["--name", "snap", "--env", "tworoom", "--checkpoint", str(src), "--recipe", "r",
                            "--train-log", str(log)])
    assert card["training"]["steps"] == 3 and card["training"]["final_pred_loss"] == pytest.approx(1 / 3)
    assert card["training"]["final_sigreg"] == 6.0 and card["training"]["wall_time_s"] == pytest.approx(20.0)
