"""Evaluation harness (spec C.4) on a small PushT dataset recorded from the env at 32x32."""
import json

import numpy as np
import pytest
import torch

from helpers import random_model
from lewm_fast.eval import evaluate, main, sample_pairs
from lewm_fast.model import LeWMConfig


@pytest.fixture(scope="module")
def pusht_file(tmp_path_factory):
    from lewm_fast.data import HDF5Writer
    from lewm_fast.envs import make

    path = tmp_path_factory.mktemp("eval") / "pusht32.h5"
    rng = np.random.default_rng(0)
    with HDF5Writer(path) as w:
        for ep in range(3):
            env = make("pusht", resolution=32)
            env.reset(seed=ep)
            px, states, acts = [], [], []
            a = np.zeros(2)
            for t in range(30):
                px.append(env.render())
                states.append(env.get_state())
                a = np.clip(0.7 * a + 0.3 * rng.uniform(-1, 1, 2), -1, 1)   # smooth pushes
                acts.append(a.copy())
                env.step(a)
            env.close()
            acts = np.asarray(acts, np.float32)
            acts[-1] = np.nan
            w.write_episode({"pixels": np.stack(px), "state": np.asarray(states), "action": acts})
    return str(path)


def test_sample_pairs_protocol():
    ep_len, ep_off = np.array([10, 3, 40]), np.array([0, 10, 13])
    starts, goals = sample_pairs(ep_len, ep_off, 20, 5, seed=42)
    valid = {off + s for n, off in zip(ep_len, ep_off) for s in range(n) if s <= n - 5 - 1}
    assert len(set(starts.tolist())) == 20 and set(starts.tolist()) <= valid
    np.testing.assert_array_equal(goals, starts + 5)
    np.testing.assert_array_equal(starts, sample_pairs(ep_len, ep_off, 20, 5, seed=42)[0])
    assert not np.array_equal(starts, sample_pairs(ep_len, ep_off, 20, 5, seed=43)[0])
    with pytest.raises(ValueError, match="need"):
        sample_pairs(ep_len, ep_off, 100, 5, seed=0)


def test_replaying_dataset_actions_reaches_the_goals(pusht_file):
    """Goal = the state goal_offset steps ahead, so executing the recorded actions must succeed: checks
    pair sampling, set_state / set_goal_state and the success bookkeeping together."""
    rep = evaluate("pusht", pusht_file, policy="replay", seeds=(42,), num_eval=6, goal_offset=5, budget=8,
                   env_kwargs={"resolution": 32})
    run = rep["runs"]["42"]
    assert run["success_rate"] == 1.0
    assert all(1 <= s <= 8 for s in run["first_success_step"])
    assert run["solves"] == 0


def test_planner_and_random_policies_run(pusht_file, tmp_path):
    from lewm_fast.checkpoint import save_checkpoint

    torch.set_num_threads(1)
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, random_model(LeWMConfig.tiny(), scale=0.3),
                    stats={"action": {"mean": np.zeros(2, np.float32), "std": np.full(2, 0.5, np.float32)}})
    rep = evaluate("pusht", pusht_file, str(ckpt), policy="cem", seeds=(1, 2), num_eval=4, goal_offset=5,
                   budget=30, device="cpu", backend="eager",
                   planner_kwargs={"num_samples": 16, "iterations": 2, "topk": 4}, env_kwargs={"resolution": 32})
    for run in rep["runs"].values():
        # 25 raw actions per plan (5 blocks x frameskip 5): a 30-step budget needs 2 batched solves
        # unless every env succeeds within the first 25 steps
        assert run["solves"] == (1 if max(run["first_success_step"]) in range(1, 26) and
                                 min(run["first_success_step"]) > 0 else 2)
        assert len(run["solve_latency_s"]) == run["solves"] and 0 <= run["success_rate"] <= 1
    assert rep["planner"]["solver"] == "cem" and 0 <= rep["success_rate_mean"] <= 1

    out = tmp_path / "random.json"
    main(["--env", "pusht", "--dataset", pusht_file, "--policy", "random", "--num-eval", "4",
          "--goal-offset", "5", "--budget", "5", "--seeds", "3", "--out", str(out)])
    rand = json.loads(out.read_text())
    assert rand["policy"] == "random" and rand["runs"]["3"]["solves"] == 0 and rand["runs"]["3"]["episodes"] == 4


def test_expert_pairs_are_deterministic_and_reachable():
    from lewm_fast.eval import expert_pairs

    a = expert_pairs("tworoom", 6, goal_offset=25, seed=3)
    b = expert_pairs("tworoom", 6, goal_offset=25, seed=3)
    c = expert_pairs("tworoom", 6, goal_offset=25, seed=4)
    for k in ("start_states", "goal_states", "goal_pixels"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["start_states"], c["start_states"])
    assert a["goal_pixels"].shape == (6, 224, 224, 3) and a["goal_pixels"].dtype == np.uint8
    assert all(len(r) == 25 for r in a["replay_actions"])
    # the goal is where the expert's own 25 actions lead: replaying them from the start reaches it exactly
    rep = evaluate("tworoom", policy="replay", seeds=(3,), num_eval=6, goal_offset=25, budget=25)
    assert rep["pairs"] == "expert" and rep["success_rate_mean"] == 1.0
    # every replay ends inside the success radius (distance in units of the test: < 1), from starts outside it
    run = rep["runs"]["3"]
    assert max(run["final_distance"]) < 1 <= min(run["start_distance"]) and rep["final_distance_mean"] < 1
    from lewm_fast.eval import goal_distance
    assert goal_distance("tworoom", np.array([16.0, 0.0]), np.zeros(2)) == 1.0
    assert goal_distance("maze", np.zeros(3), np.zeros(3)) is None


def test_planner_on_a_smaller_model_resizes_env_frames_like_collect(tmp_path):
    """A 32 px model plans on 224 px TwoRoom frames: eval resizes them with collect's resize."""
    from lewm_fast.checkpoint import save_checkpoint
    from lewm_fast.collect import resize_uint8
    from lewm_fast.collect import fit_frames

    frames = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fit_frames(frames, 32), resize_uint8(frames, 32))
    assert fit_frames(frames, 224) is frames
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, random_model(LeWMConfig.tiny()), {"action": {"mean": np.zeros(2), "std": np.ones(2)}})
    rep = evaluate("tworoom", checkpoint=str(ckpt), policy="cem", seeds=(0,), num_eval=3, budget=6,
                   planner_kwargs={"num_samples": 16, "iterations": 2, "topk": 4})
    assert rep["runs"]["0"]["solves"] >= 1 and rep["pairs"] == "expert"


def test_video_grid(tmp_path):
    from PIL import Image

    gif = tmp_path / "episodes.gif"
    rep = evaluate("tworoom", policy="replay", seeds=(5,), num_eval=3, goal_offset=10, budget=12, video=str(gif))
    with Image.open(gif) as im:
        n = im.n_frames
        w, h = im.size
        im.seek(n - 1)
        last = np.asarray(im.convert("RGB"))
    run = rep["runs"]["5"]
    assert run["success_rate"] == 1.0
    assert n == max(run["first_success_step"]) + 1    # one frame per step until all are done, + the final state
    assert (w, h) == (2 * (96 + 4), 2 * (96 + 4))                   # 3 episodes on a 2 x 2 grid
    # replayed expert actions reach every goal: all borders green in the last frame
    assert (last[0, 0] == (40, 170, 60)).all() and (last[0, 100] == (40, 170, 60)).all()


def test_each_env_keeps_its_noise_stream_as_others_finish(tmp_path):
    """run_episodes tells the planner which envs the rows are: once env 0 has succeeded, env 1's next
    solve draws from env 1's stream (its plan equals a B=1 solve of env 1 on the same inputs), not env 0's."""
    from lewm_fast.checkpoint import save_checkpoint
    from lewm_fast.eval import expert_pairs, run_episodes
    from lewm_fast.planner import Planner

    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, random_model(LeWMConfig.tiny()), {"action": {"mean": np.zeros(2), "std": np.ones(2)}})
    pairs = expert_pairs("tworoom", 2, goal_offset=25, seed=3)
    pairs["goal_states"][0] = pairs["start_states"][0]           # env 0 succeeds on its first step
    calls = []

    class Recording(Planner):
        def plan(self, obs, goal, *args, **kw):
            out = super().plan(obs, goal, *args, **kw)
            calls.append((np.array(obs), np.array(goal), list(kw.get("env_ids")), out.actions.clone()))
            return out

    kw = dict(num_samples=16, iterations=2, topk=4, seed=5, device="cpu")
    rep = run_episodes("tworoom", pairs, "cem", Recording.from_checkpoint(str(ckpt), **kw), budget=30, seed=0)
    assert rep["first_success_step"][0] == 1 and rep["first_success_step"][1] == -1
    assert [c[2] for c in calls] == [[0, 1], [1]]
    # replay env 1's two solves alone through env 1's stream of a fresh planner with the same seed
    alone = Planner.from_checkpoint(str(ckpt), **kw)
    for obs, goal, ids, actions in calls:
        row = ids.index(1)
        mine = alone.plan(obs[row:row + 1], goal[row:row + 1], env_ids=[1]).actions
        torch.testing.assert_close(mine[0], actions[row])


def test_var_scale_reaches_the_solver_and_bad_values_are_refused(pusht_file, tmp_path):
    from lewm_fast.checkpoint import save_checkpoint

    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, random_model(LeWMConfig.tiny(), scale=0.3),
                    stats={"action": {"mean": np.zeros(2, np.float32), "std": np.full(2, 0.5, np.float32)}})
    common = ["--env", "pusht", "--dataset", pusht_file, "--checkpoint", str(ckpt), "--num-eval", "2",
              "--goal-offset", "5", "--budget", "5", "--seeds", "1", "--num-samples", "8", "--topk", "2",
              "--iterations", "1", "--resolution", "32"]
    out = tmp_path / "r.json"
    main(common + ["--var-scale", "0.25", "--out", str(out)])
    assert json.loads(out.read_text())["planner"]["var_scale"] == 0.25
    for bad in ("0", "-1"):
        with pytest.raises(SystemExit, match="var-scale"):
            main(common + ["--var-scale", bad])


def test_evaluation_process_keeps_freed_memory_unless_told_not_to(pusht_file, tmp_path):
    # lewm_fast.eval turns the allocator setting (planning/allocator.py) on by default; LEWM_FAST_KEEP_FREED_MEMORY=0
    # opts out. Fresh processes: the setting is process-wide and decided once.
    import os
    import platform
    import subprocess
    import sys

    glibc = platform.libc_ver()[0] == "glibc"
    for value, expected in ((None, glibc), ("0", False), ("1", glibc)):
        env = {k: v for k, v in os.environ.items() if k != "LEWM_FAST_KEEP_FREED_MEMORY"}
        if value is not None:
            env["LEWM_FAST_KEEP_FREED_MEMORY"] = value
        out = tmp_path / f"random-{value}.json"
        run = subprocess.run([sys.executable, "-m", "lewm_fast.eval", "--env", "pusht", "--dataset", pusht_file,
                              "--policy", "random", "--num-eval", "2", "--goal-offset", "5", "--budget", "5",
                              "--seeds", "3", "--out", str(out)], env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr
        assert json.loads(out.read_text())["keep_freed_memory"] is expected, value
