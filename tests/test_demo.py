"""The README's main command: the demo pipeline end to end at toy sizes (collect -> train -> plan)."""
import json

import pytest

from lewm_fast import demo


def test_recipe_pipeline_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(demo.RECIPE, "tworoom", {"episodes": 4, "resolution": 32, "preset": "tiny", "batch_size": 8,
                                                 "lr": 1e-3, "max_steps": 3, "warmup_frac": 0.01})
    monkeypatch.setattr("lewm_fast.eval.DEFAULT_ITERATIONS", {"tworoom": 2})
    import lewm_fast.eval as ev
    real = ev.evaluate

    def small_eval(*a, **kw):   # toy planner settings; the demo's own flow is unchanged
        if kw.get("policy") == "cem":
            kw["planner_kwargs"] = {"iterations": 2, "num_samples": 16, "topk": 4}
        return real(*a, **kw)
    monkeypatch.setattr(ev, "evaluate", small_eval)
    report = demo.main(["--recipe", "--workdir", str(tmp_path), "--episodes", "2"])
    assert report["source"] == "cpu recipe"
    assert (tmp_path / "tworoom-tiny" / "model.safetensors").exists()
    saved = json.loads((tmp_path / "demo-tworoom.json").read_text())
    assert saved["planner"]["runs"]["42"]["episodes"] == 2 and saved["random"]["policy"] == "random"
    out = capsys.readouterr().out
    assert "| LeWM + CEM" in out and "| random |" in out


def test_unknown_checkpoint_name_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="shipped checkpoints"):
        demo.main(["--checkpoint", "no-such-model", "--workdir", str(tmp_path), "--episodes", "1"])


def test_pusht_recipe_passes_noise_snapshots_and_threads(tmp_path, monkeypatch):
    """The PushT recipe's extra settings reach collect and train: noisy expert data, snapshots, one thread."""
    import h5py
    monkeypatch.setitem(demo.RECIPE, "pusht", {**demo.RECIPE["pusht"], "episodes": 2, "resolution": 32,
                                               "preset": "tiny", "batch_size": 4, "max_steps": 4,
                                               "snapshot_every": 2})
    ckpt = demo.run_recipe("pusht", tmp_path)
    with h5py.File(tmp_path / "pusht-2ep-32px.h5") as f:
        assert f.attrs["policy_noise"] == demo.RECIPE["pusht"]["policy_noise"] and f["pixels"].shape[1] == 32
    assert ckpt.exists() and (ckpt.parent / "model-step2.safetensors").exists()


def _recipe_train_args(env, tmp_path, monkeypatch):
    """(RECIPE[env], the argument list run_recipe hands to train), with the data file present and train stubbed."""
    import lewm_fast.train
    seen = []
    monkeypatch.setattr(lewm_fast.train, "train", lambda args: seen.append(list(args)))
    r = demo.RECIPE[env]
    (tmp_path / f"{env}-{r['episodes']}ep-{r['resolution']}px.h5").touch()   # data present: no collection
    demo.run_recipe(env, tmp_path)
    return r, seen[0]


def test_reacher_recipe_passes_its_sigreg_weight_and_loader_to_train(tmp_path, monkeypatch):
    """RECIPE['reacher'] trains with its own SIGReg weight and in-process loading (what the shipped run used)."""
    r, args = _recipe_train_args("reacher", tmp_path, monkeypatch)
    assert args[args.index("--sigreg-weight") + 1] == str(r["sigreg_weight"]) and r["sigreg_weight"] != 0.09
    assert args[args.index("--workers") + 1] == "0" and args[args.index("--max-steps") + 1] == str(r["max_steps"])


@pytest.mark.parametrize("name", ["tworoom", "pusht", "reacher", "cube"])
def test_shipped_checkpoint_loads_by_name_and_plans_its_env(name):
    """Every shipped model loads by name, its card's reports exist, and it plans a frame of its own env."""
    import numpy as np

    from lewm_fast import Planner
    from lewm_fast.checkpoint import PRETRAINED_DIR, pretrained_names
    from lewm_fast.envs import make
    assert name in pretrained_names()
    planner = Planner.from_pretrained(name, num_samples=16, iterations=2, topk=4)
    card = json.loads((PRETRAINED_DIR / f"{name}.json").read_text())
    assert (PRETRAINED_DIR / f"{name}.safetensors").stat().st_size <= 40 * 2**20
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    for rep in (card.get("reports") or [e["report"] for e in card.get("evaluations", {}).values()]):
        assert (root / rep).is_file(), rep
    if name in ("reacher", "cube"):   # loading and the card are checked above; the env needs MuJoCo + headless GL
        from lewm_fast.envs.mujoco_gl import select_gl_backend
        try:
            select_gl_backend()
        except RuntimeError as err:
            pytest.skip(f"no headless GL to render {name}: {err}")
        pytest.importorskip("mujoco")
        if name == "cube":
            pytest.importorskip("ogbench", reason="ogbench not installed")
    from lewm_fast.envs import resolution_kwargs
    env = make(name, **resolution_kwargs(name, planner.cfg.image_size))
    env.reset(seed=0)
    from lewm_fast.collect import fit_frames
    frame = fit_frames(env.render()[None], planner.cfg.image_size)
    env.close()
    res = planner.plan(frame, frame)
    assert res.actions.shape == (1, 25, planner.cfg.env_action_dim) and np.isfinite(res.actions.numpy()).all()


def test_pusht_recipe_trains_with_its_inverse_dynamics_term_and_stops_at_the_shipped_step(tmp_path, monkeypatch):
    """RECIPE['pusht'] passes --idm-weight and stops at the shipped snapshot's step of its longer schedule."""
    r, args = _recipe_train_args("pusht", tmp_path, monkeypatch)
    assert args[args.index("--idm-weight") + 1] == str(r["idm_weight"]) and r["idm_weight"] > 0
    assert args[args.index("--stop-after") + 1] == str(r["stop_after"]) and r["stop_after"] < r["max_steps"]
    assert args[args.index("--max-steps") + 1] == str(r["max_steps"])
