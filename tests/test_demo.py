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
