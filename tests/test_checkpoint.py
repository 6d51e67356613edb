import json
import re

import numpy as np
import pytest
import torch

from helpers import random_model
from lewm_fast.checkpoint import (CheckpointError, import_official, lewm_fast_to_official, load_checkpoint,
                                  official_to_lewm_fast, save_checkpoint)
from lewm_fast.model import LeWM, LeWMConfig


def _outputs(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    px = torch.randint(0, 256, (2, 1, 3, m.cfg.image_size, m.cfg.image_size), dtype=torch.uint8, generator=g)
    acts = torch.randn(2, 3, 5, m.cfg.action_dim, generator=g)
    with torch.no_grad():
        return m.rollout(acts, pixels=px)


def test_round_trip_is_bit_identical(tmp_path):
    m = random_model(LeWMConfig.tiny(history_len=2, frameskip=4, env_action_dim=3))
    stats = {"action": {"mean": np.arange(3.0), "std": np.ones(3) * 2}}
    save_checkpoint(tmp_path / "m.safetensors", m, stats, {"note": "test"})
    ck = load_checkpoint(tmp_path / "m.safetensors")
    assert ck.config == m.cfg and ck.info == {"note": "test"}
    assert torch.equal(ck.stats["action"]["std"], torch.full((3,), 2.0))
    for k, v in m.state_dict().items():
        assert torch.equal(v, ck.model.state_dict()[k]), k
    assert torch.equal(_outputs(m), _outputs(ck.model))
    assert not list(tmp_path.glob("*.tmp")), "atomic write left a temp file"


def test_bf16_checkpoint_is_close(tmp_path):
    m = random_model()
    save_checkpoint(tmp_path / "m.safetensors", m, dtype=torch.bfloat16)
    ck = load_checkpoint(tmp_path / "m.safetensors")
    torch.testing.assert_close(_outputs(ck.model), _outputs(m), rtol=0.05, atol=0.05)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="header"):
        load_checkpoint(tmp_path / "plain.safetensors")


def _spec_official_keys(depth=12, pred_depth=6):
    """The 303 keys of an official weights.pt, written out from the table in spec A.5."""
    keys = ["encoder.embeddings.cls_token", "encoder.embeddings.position_embeddings",
            "encoder.embeddings.patch_embeddings.projection.weight", "encoder.embeddings.patch_embeddings.projection.bias",
            "encoder.layernorm.weight", "encoder.layernorm.bias", "predictor.pos_embedding",
            "predictor.transformer.norm.weight", "predictor.transformer.norm.bias"]
    for i in range(depth):
        p = f"encoder.encoder.layer.{i}."
        for n in ["layernorm_before", "attention.attention.query", "attention.attention.key", "attention.attention.value",
                  "attention.output.dense", "layernorm_after", "intermediate.dense", "output.dense"]:
            keys += [p + n + ".weight", p + n + ".bias"]
    for i in range(pred_depth):
        p = f"predictor.transformer.layers.{i}."
        keys += [p + "attn.norm.weight", p + "attn.norm.bias", p + "attn.to_qkv.weight", p + "attn.to_out.0.weight",
                 p + "attn.to_out.0.bias"]
        for n in ["mlp.net.0", "mlp.net.1", "mlp.net.4", "adaLN_modulation.1"]:
            keys += [p + n + ".weight", p + n + ".bias"]
    keys += [f"action_encoder.{n}.{t}" for n in ("patch_embed", "embed.0", "embed.2") for t in ("weight", "bias")]
    for m in ("projector", "pred_proj"):
        keys += [f"{m}.net.0.weight", f"{m}.net.0.bias", f"{m}.net.3.weight", f"{m}.net.3.bias"]
        keys += [f"{m}.net.1.{t}" for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    return keys


def test_export_matches_spec_key_table():
    sd = lewm_fast_to_official(LeWM(LeWMConfig()).state_dict(), 12, naming="hf4")
    expected = _spec_official_keys()
    assert len(expected) == 303
    assert sorted(sd) == sorted(expected)
    assert tuple(sd["predictor.transformer.layers.0.attn.to_qkv.weight"].shape) == (3072, 192)
    assert tuple(sd["action_encoder.patch_embed.weight"].shape) == (10, 10, 1)
    assert tuple(sd["encoder.encoder.layer.3.intermediate.dense.weight"].shape) == (768, 192)


OFFICIAL_CONFIG = {  # the shape of an official config.json (le-wm's model config)
    "encoder": {"size": "tiny", "patch_size": 14, "image_size": 224},
    "predictor": {"_target_": "module.ARPredictor", "num_frames": 3, "input_dim": 192, "hidden_dim": 192,
                  "output_dim": 192, "depth": 6, "heads": 16, "mlp_dim": 2048, "dim_head": 64, "dropout": 0.1,
                  "emb_dropout": 0.0},
    "action_encoder": {"_target_": "module.Embedder", "input_dim": 10, "emb_dim": 192},
    "projector": {"input_dim": 192, "output_dim": 192, "hidden_dim": 2048},
    "pred_proj": {"input_dim": 192, "output_dim": 192, "hidden_dim": 2048},
}


@pytest.mark.parametrize("naming", ["hf4", "hf5"])
def test_official_layout_imports_to_identical_outputs(tmp_path, naming):
    m = random_model(LeWMConfig(), scale=0.05)
    sd = lewm_fast_to_official(m.state_dict(), 12, naming=naming)
    torch.save(sd, tmp_path / "weights.pt")
    (tmp_path / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    imported = import_official(tmp_path / "weights.pt", tmp_path / "config.json")
    assert imported.cfg == LeWMConfig()
    for k, v in m.state_dict().items():
        assert torch.equal(v, imported.state_dict()[k]), k


def test_official_import_errors_name_the_key():
    m = random_model(LeWMConfig(), scale=0.05)
    sd = lewm_fast_to_official(m.state_dict(), 12, naming="hf4")
    broken = dict(sd)
    del broken["encoder.encoder.layer.5.attention.attention.key.bias"]
    with pytest.raises(CheckpointError, match=re.escape("encoder.encoder.layer.5.attention.attention.key.bias")):
        import_official(broken, OFFICIAL_CONFIG)
    wrong = dict(sd)
    wrong["predictor.transformer.layers.2.mlp.net.1.weight"] = torch.zeros(1024, 192)
    with pytest.raises(CheckpointError, match=r"predictor\.transformer\.layers\.2\.mlp\.net\.1\.weight.*\(1024, 192\)"):
        import_official(wrong, OFFICIAL_CONFIG)
    extra = dict(sd, **{"predictor.bogus": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected keys.*predictor.bogus"):
        import_official(extra, OFFICIAL_CONFIG)
    with pytest.raises(CheckpointError, match="neither"):
        official_to_lewm_fast({"foo": torch.zeros(1)}, 12)
