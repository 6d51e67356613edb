"""Checkpoints know their environment: training records it, eval / surprise / probe / Planner refuse a
mismatch naming both, files without it warn once, and official checkpoints load by Hub id (offline,
from a local Hub cache built here)."""
import json
import sys
import warnings

import numpy as np
import pytest
import torch

from helpers import random_model, write_synthetic
from lewm_fast import Planner
from lewm_fast.checkpoint import (ENV_ACTION_DIMS, CheckpointError, lewm_fast_to_official, load_checkpoint,
                                  save_checkpoint)
from lewm_fast.model import LeWMConfig
from lewm_fast.train import train

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = dict(num_samples=8, iterations=1, topk=2, device="cpu", backend="eager")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("envrun")
    data = write_synthetic(d / "syn.h5", n_episodes=6, length=30, size=48)   # env "synthetic", 48 px frames
    train(["--data", data, "--out", str(d / "run"), "--preset", "tiny", "--batch-size", "4", "--max-steps", "1",
           "--workers", "0", "--no-progress", "--threads", "1"])
    return d / "run" / "model.safetensors", data


def test_training_records_env_action_dims_and_image_size(trained):
    info = load_checkpoint(trained[0]).info
    assert info["env"] == {"name": "synthetic", "action_dim": 2, "image_size": [48, 48]}


def test_consumers_refuse_a_checkpoint_of_another_env(trained, tmp_path):
    from lewm_fast import eval as ev, probe, surprise
    ckpt, data = trained
    msg = r"trained on env 'synthetic', not 'pusht'"
    with pytest.raises(CheckpointError, match=msg):
        Planner.from_checkpoint(ckpt, env="pusht", **SMALL)
    assert Planner.from_checkpoint(ckpt, env="synthetic", **SMALL).cfg.env_action_dim == 2
    with pytest.raises(CheckpointError, match=msg):
        ev.evaluate("pusht", checkpoint=str(ckpt), num_eval=1)
    with pytest.raises(CheckpointError, match=msg):
        surprise.main(["--env", "pusht", "--checkpoint", str(ckpt), "--dataset", data, "--out", str(tmp_path)])
    with pytest.raises(CheckpointError, match=msg):
        probe.main(["--env", "pusht", "--checkpoint", str(ckpt), "--dataset", data, "--out", str(tmp_path)])


def test_action_width_mismatch_and_warn_once_without_metadata(tmp_path):
    p = tmp_path / "cube-like.safetensors"
    save_checkpoint(p, random_model(LeWMConfig.tiny(env_action_dim=5)))   # no info: no env recorded
    with pytest.warns(UserWarning, match="records no environment"):
        with pytest.raises(CheckpointError, match="takes 5-d actions; env 'pusht' has 2-d actions"):
            Planner.from_checkpoint(p, env="pusht", **SMALL)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        Planner.from_checkpoint(p, env="cube", **SMALL)
        Planner.from_checkpoint(p, env="cube", **SMALL)
    assert [str(x.message) for x in w if "records no environment" in str(x.message)] == []   # warned once already


def test_shipped_checkpoint_knows_its_env_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Planner.from_pretrained("tworoom", env="tworoom", **SMALL).cfg.image_size == 64
    with pytest.raises(CheckpointError, match="trained on env 'tworoom', not 'pusht'"):
        Planner.from_pretrained("tworoom", env="pusht", **SMALL)


@pytest.mark.parametrize("env", ["pusht", "tworoom"])
def test_action_dim_table_matches_the_envs(env):
    from lewm_fast.envs import make
    assert ENV_ACTION_DIMS[env] == make(env).action_space.shape[0]


HUB_CONFIG = {"encoder": {"size": "tiny", "patch_size": 14, "image_size": 56},
              "predictor": {"num_frames": 3, "depth": 1, "heads": 2, "dim_head": 16, "mlp_dim": 64},
              "action_encoder": {"input_dim": 10, "smoothed_dim": 10, "mlp_scale": 4},
              "projector": {"hidden_dim": 64}, "pred_proj": {"hidden_dim": 64}}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A local Hugging Face Hub cache holding quentinll/lewm-pusht (weights.pt + config.json), offline."""
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants
    cfg = LeWMConfig(image_size=56, patch_size=14, pred_depth=1, pred_heads=2, pred_dim_head=16, pred_mlp_dim=64,
                     proj_hidden_dim=64)
    model = random_model(cfg, scale=0.05)
    snap = tmp_path / "hub" / "models--quentinll--lewm-pusht" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    torch.save(lewm_fast_to_official(model.state_dict(), cfg.enc_depth), snap / "weights.pt")
    (snap / "config.json").write_text(json.dumps(HUB_CONFIG))
    (tmp_path / "hub" / "models--quentinll--lewm-pusht" / "refs").mkdir()
    (tmp_path / "hub" / "models--quentinll--lewm-pusht" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return model, hub


def test_from_pretrained_by_hub_id_offline(hub_cache):
    model, _ = hub_cache
    with pytest.warns(UserWarning, match="carry no action statistics"):
        p = Planner.from_pretrained("quentinll/lewm-pusht", env="pusht", **SMALL)
    for k, v in model.state_dict().items():
        assert torch.equal(v, p.model.state_dict()[k]), k
    frames = np.zeros((1, 56, 56, 3), np.uint8)
    assert p.plan(frames, frames).actions.shape == (1, 25, 2)
    stats = {"mean": np.array([1.0, -1.0]), "std": np.array([2.0, 3.0])}
    p2 = Planner.from_pretrained("quentinll/lewm-pusht", action_stats=stats, **SMALL)
    r = p2.plan(frames, frames)
    torch.testing.assert_close(r.actions, r.blocks.view(1, -1, 2) * torch.tensor([2.0, 3.0]) + torch.tensor([1.0, -1.0]))
    with pytest.raises(CheckpointError, match="trained on env 'pusht', not 'tworoom'"):
        Planner.from_pretrained("quentinll/lewm-pusht", env="tworoom", action_stats=stats, **SMALL)


def test_hub_without_network_or_package_is_a_clear_error(hub_cache, monkeypatch):
    with pytest.raises(CheckpointError, match="cannot get weights.pt of 'quentinll/lewm-cube' from the Hugging Face Hub"):
        Planner.from_pretrained("quentinll/lewm-cube", **SMALL)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match="needs huggingface_hub: pip install huggingface_hub"):
        Planner.from_pretrained("quentinll/lewm-pusht", **SMALL)
