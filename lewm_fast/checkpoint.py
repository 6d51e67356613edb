"""Self-describing checkpoints and the importer for official LeWM weights.

A lewm_fast checkpoint is one safetensors file: the model's tensors, the normalisation statistics as
`stats.<column>.{mean,std}` tensors, and a JSON header (safetensors metadata key `lewm_fast`) with the
model config (which carries history length, frameskip, image size and action dimensions), a format
version and free-form info (training recipe, dataset, measured results). Loading never unpickles.

Official checkpoints (`weights.pt` + `config.json` from the LeWM Hugging Face repos) use HuggingFace
ViT key names, in the transformers 4.x or 5.x spelling (spec A.5); `import_official` maps both onto
this package's layout with strict key and shape checks whose errors name the offending key.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .model import LeWM, LeWMConfig
from .validate import check_stats, parse_json, read_json

FORMAT_VERSION = 1
_META_KEY = "lewm_fast"
_STATS_PREFIX = "stats."


@dataclass
class Checkpoint:
    model: LeWM
    stats: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # column -> {"mean", "std"}
    info: dict = field(default_factory=dict)

    @property
    def config(self) -> LeWMConfig:
        return self.model.cfg


class CheckpointError(ValueError):
    pass


def atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Call write_fn(tmp_path) then rename over `path`, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write_fn(tmp)
        # mkstemp creates 0600 (and some writers, safetensors among them, recreate the file): give the
        # finished file the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | os.PathLike, model: LeWM, stats: dict | None = None, info: dict | None = None,
                    dtype: torch.dtype | None = None) -> None:
    """Write model weights, config, normalisation stats and info to one safetensors file (atomically).
    dtype=torch.bfloat16 halves the size (floating tensors only; BatchNorm counters stay integer)."""
    from safetensors.torch import save_file

    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    for col, s in (stats or {}).items():
        for which in ("mean", "std"):
            tensors[f"{_STATS_PREFIX}{col}.{which}"] = torch.as_tensor(s[which], dtype=torch.float32).cpu().contiguous()
    header = {"format_version": FORMAT_VERSION, "config": model.cfg.to_dict(), "info": info or {}}
    meta = {_META_KEY: json.dumps(header)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def pretrained_names() -> list[str]:
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.safetensors"))


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# The official LeWM repos (spec A.5) and the env each was trained on: their files do not record it.
HUB_ENVS = {"quentinll/lewm-pusht": "pusht", "quentinll/lewm-cube": "cube", "quentinll/lewm-tworooms": "tworoom",
            "quentinll/lewm-reacher": "reacher"}
# env_action_dim of each env (their action_space; tests/test_robust_checkpoints.py checks this table)
ENV_ACTION_DIMS = {"pusht": 2, "tworoom": 2, "reacher": 2, "cube": 5}


def is_hub_id(name) -> bool:
    return isinstance(name, str) and bool(_HUB_ID.match(name)) and not Path(name).exists()


def resolve_checkpoint(path_or_name: str | os.PathLike) -> Path:
    """A checkpoint path as given, or the shipped checkpoint of that name (lewm_fast/pretrained/NAME.safetensors)."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a directory; give the .safetensors file "
                              f"(e.g. {path / 'model.safetensors'})")
    shipped = PRETRAINED_DIR / f"{path_or_name}.safetensors"
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(f"checkpoint not found: {path} (shipped checkpoints: {pretrained_names() or 'none'}; "
                            "Hugging Face Hub ids look like quentinll/lewm-pusht)")


def load_from_hub(repo_id: str, device: str | torch.device = "cpu", revision: str | None = None,
                  cache_dir: str | os.PathLike | None = None) -> Checkpoint:
    """An official checkpoint by Hub id (`weights.pt` + `config.json`, fetched with huggingface_hub, an
    optional dependency; HF_HUB_OFFLINE=1 uses the local cache only). Official files carry no
    normalisation statistics; the env is known for the official repos (HUB_ENVS)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ImportError(f"loading {repo_id!r} from the Hugging Face Hub needs huggingface_hub: "
                          "pip install huggingface_hub") from None
    files = {}
    for name in ("weights.pt", "config.json"):
        try:
            files[name] = hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir)
        except Exception as e:   # offline without a cached copy, no network, unknown repo, HTTP errors
            raise CheckpointError(
                f"cannot get {name} of {repo_id!r} from the Hugging Face Hub ({type(e).__name__}: "
                f"{' '.join(str(e).split())[:200]}). Without network, download weights.pt and config.json "
                "elsewhere and use lewm_fast.checkpoint.import_official, or point HF_HUB_CACHE at a cache "
                "that holds them") from None
    model = import_official(files["weights.pt"], files["config.json"])
    info = {"source": f"hf://{repo_id}", "official": True}
    if repo_id in HUB_ENVS:
        info["env"] = {"name": HUB_ENVS[repo_id], "action_dim": model.cfg.env_action_dim,
                       "image_size": [model.cfg.image_size] * 2, "from": "official repo name"}
    return Checkpoint(model.to(device).eval(), {}, info)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a lewm_fast safetensors checkpoint (a path, a shipped name such as "tworoom", or an official
    Hugging Face Hub id such as "quentinll/lewm-pusht"); the model is returned in eval mode, in float32."""
    from safetensors import safe_open

    if not Path(path).is_file() and not (PRETRAINED_DIR / f"{path}.safetensors").is_file() and is_hub_id(str(path)):
        return load_from_hub(str(path), device)
    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from e
    if _META_KEY not in meta:
        raise CheckpointError(f"{path}: safetensors file has no '{_META_KEY}' header; not a lewm_fast checkpoint "
                              "(for official weights.pt + config.json use import_official)")
    header = parse_json(meta[_META_KEY], f"{path}: '{_META_KEY}' header")
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {header['format_version']} is newer than this "
                              f"lewm_fast understands ({FORMAT_VERSION}); upgrade lewm_fast")
    cfg = LeWMConfig.from_dict(header["config"])
    stats: dict[str, dict[str, torch.Tensor]] = {}
    weights = {}
    for k, v in tensors.items():
        if k.startswith(_STATS_PREFIX):
            col, which = k[len(_STATS_PREFIX):].rsplit(".", 1)
            stats.setdefault(col, {})[which] = v
        else:
            weights[k] = v.float() if v.is_floating_point() else v
    for col, s in stats.items():
        try:
            check_stats(f"stats[{col!r}]", s)
        except ValueError as e:
            raise CheckpointError(f"{path}: normalisation {e}") from None
    model = LeWM(cfg)
    load_state_dict_strict(model, weights, source=str(path))
    info = header.get("info", {})
    if "env" not in info and path.parent == PRETRAINED_DIR and path.with_suffix(".json").is_file():
        env = read_json(path.with_suffix(".json"), "shipped checkpoint description").get("env")
        if env:   # checkpoints shipped before training recorded it: the JSON beside them says
            info["env"] = {"name": env, "action_dim": cfg.env_action_dim, "image_size": [cfg.image_size] * 2}
    return Checkpoint(model.to(device).eval(), stats, info)


_warned_no_env: set[str] = set()


def check_env(ckpt: Checkpoint, env: str, source) -> None:
    """Refuse a checkpoint trained on another env (naming both) or with the wrong action width for it;
    a checkpoint that records no env warns once per source."""
    import warnings

    env = env.lower()
    recorded = (ckpt.info.get("env") or {}).get("name")
    if recorded is None:
        if str(source) not in _warned_no_env:
            _warned_no_env.add(str(source))
            warnings.warn(f"checkpoint {source} records no environment (an official import or an older file); "
                          f"cannot check that it was trained on {env!r}", stacklevel=3)
    elif recorded.lower() != env:
        raise CheckpointError(f"checkpoint {source} was trained on env {recorded!r}, not {env!r}; "
                              f"use a {env} checkpoint (or --env {recorded})")
    want = ENV_ACTION_DIMS.get(env)
    if want is not None and ckpt.config.env_action_dim != want:
        raise CheckpointError(f"checkpoint {source} takes {ckpt.config.env_action_dim}-d actions; env {env!r} "
                              f"has {want}-d actions")


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """load_state_dict with errors that name every missing/unexpected key and every shape mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if wrong:
        problems.append(f"shape mismatches: {wrong}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))
    not_float = [f"{k} ({state[k].dtype})" for k, v in expected.items()
                 if v.is_floating_point() and not state[k].is_floating_point()]
    if not_float:
        raise CheckpointError(f"{source}: tensors that must be floating point are stored as {not_float[:5]}"
                              f"{' and more' if len(not_float) > 5 else ''}; refusing to cast them")
    non_finite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if non_finite:
        raise CheckpointError(f"{source}: weights contain NaN or inf in {non_finite[:5]}"
                              f"{f' and {len(non_finite) - 5} more' if len(non_finite) > 5 else ''}")
    model.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected}, strict=True)


# ----------------------------------------------------------------------------------------------
# Official weights (HuggingFace ViT naming, spec A.5)
# ----------------------------------------------------------------------------------------------
# Our ViT block keys <-> HF keys, per layer. The HF layouts keep q, k, v separate; ours fuses them.
_HF4 = {"prefix": "encoder.encoder.layer.{i}.", "q": "attention.attention.query", "k": "attention.attention.key",
        "v": "attention.attention.value", "proj": "attention.output.dense", "fc1": "intermediate.dense",
        "fc2": "output.dense"}
_HF5 = {"prefix": "encoder.layers.{i}.", "q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
        "proj": "attention.o_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
_ENC_TOP = {  # ours -> official (same in both spellings)
    "encoder.cls_token": "encoder.embeddings.cls_token",
    "encoder.pos_embed": "encoder.embeddings.position_embeddings",
    "encoder.patch_embed.weight": "encoder.embeddings.patch_embeddings.projection.weight",
    "encoder.patch_embed.bias": "encoder.embeddings.patch_embeddings.projection.bias",
    "encoder.norm.weight": "encoder.layernorm.weight",
    "encoder.norm.bias": "encoder.layernorm.bias",
}
_VIT_SIZES = {"tiny": (192, 12, 3, 768), "small": (384, 12, 6, 1536), "base": (768, 12, 12, 3072)}


def _detect_naming(state: dict) -> dict:
    if any(k.startswith("encoder.encoder.layer.") for k in state):
        return _HF4
    if any(k.startswith("encoder.layers.") for k in state):
        return _HF5
    raise CheckpointError("state dict has neither 'encoder.encoder.layer.*' (transformers 4.x) nor "
                          "'encoder.layers.*' (transformers 5.x) ViT keys; not an official LeWM state dict")


def official_to_lewm_fast(state: dict[str, torch.Tensor], enc_depth: int) -> dict[str, torch.Tensor]:
    """Rename an official state dict (either ViT spelling) into this package's keys."""
    names = _detect_naming(state)
    src = dict(state)
    out = {}

    def take(key):
        if key not in src:
            raise CheckpointError(f"official state dict is missing key '{key}'")
        return src.pop(key)

    for ours, theirs in _ENC_TOP.items():
        out[ours] = take(theirs)
    for i in range(enc_depth):
        p = names["prefix"].format(i=i)
        o = f"encoder.blocks.{i}."
        for t in ("weight", "bias"):
            out[o + f"norm1.{t}"] = take(p + f"layernorm_before.{t}")
            out[o + f"norm2.{t}"] = take(p + f"layernorm_after.{t}")
            out[o + f"qkv.{t}"] = torch.cat([take(p + f"{names[n]}.{t}") for n in ("q", "k", "v")], 0)
            for ours_n in ("proj", "fc1", "fc2"):
                out[o + f"{ours_n}.{t}"] = take(p + f"{names[ours_n]}.{t}")
    leftover_enc = [k for k in src if k.startswith("encoder.")]
    if leftover_enc:
        raise CheckpointError(f"unexpected encoder keys in official state dict (more layers than enc_depth="
                              f"{enc_depth}?): {leftover_enc[:5]}")
    out.update(src)  # predictor / action_encoder / projector / pred_proj already use our names
    return out


def lewm_fast_to_official(state: dict[str, torch.Tensor], enc_depth: int, naming: str = "hf4") -> dict:
    """Inverse of official_to_lewm_fast: export to the official layout ('hf4' or 'hf5' ViT keys)."""
    names = {"hf4": _HF4, "hf5": _HF5}[naming]
    src = dict(state)
    out = {theirs: src.pop(ours) for ours, theirs in _ENC_TOP.items()}
    for i in range(enc_depth):
        p = names["prefix"].format(i=i)
        o = f"encoder.blocks.{i}."
        for t in ("weight", "bias"):
            out[p + f"layernorm_before.{t}"] = src.pop(o + f"norm1.{t}")
            out[p + f"layernorm_after.{t}"] = src.pop(o + f"norm2.{t}")
            for n, chunk in zip(("q", "k", "v"), src.pop(o + f"qkv.{t}").chunk(3, 0)):
                out[p + f"{names[n]}.{t}"] = chunk.clone()
            for ours_n in ("proj", "fc1", "fc2"):
                out[p + f"{names[ours_n]}.{t}"] = src.pop(o + f"{ours_n}.{t}")
    out.update(src)
    return out


def config_from_official(cfg: dict, **overrides) -> LeWMConfig:
    """LeWMConfig from an official config.json dict (sections encoder, predictor, action_encoder,
    projector, pred_proj). The env action dim and frameskip are not in that file: the action encoder's
    input width is frameskip x env_action_dim, so pass frameskip (default 5) when it is not 5."""
    try:
        enc, pred, act, proj = cfg["encoder"], cfg["predictor"], cfg["action_encoder"], cfg["projector"]
    except KeyError as e:
        raise CheckpointError(f"official config.json lacks section {e}") from e
    size = enc.get("size", "tiny")
    if size not in _VIT_SIZES:
        raise CheckpointError(f"unknown ViT size {size!r} in config.json; known: {sorted(_VIT_SIZES)}")
    width, depth, heads, mlp = _VIT_SIZES[size]
    frameskip = overrides.pop("frameskip", 5)
    a_in = int(act["input_dim"])
    if a_in % frameskip:
        raise CheckpointError(f"action_encoder.input_dim {a_in} is not a multiple of frameskip {frameskip}")
    fields = dict(
        image_size=int(enc.get("image_size", 224)), patch_size=int(enc.get("patch_size", 14)),
        embed_dim=width, enc_depth=depth, enc_heads=heads, enc_mlp_dim=mlp,
        proj_hidden_dim=int(proj.get("hidden_dim", 2048)),
        env_action_dim=a_in // frameskip, frameskip=frameskip,
        act_smoothed_dim=int(act.get("smoothed_dim", 10)), act_mlp_scale=int(act.get("mlp_scale", 4)),
        num_frames=int(pred.get("num_frames", 3)), pred_depth=int(pred.get("depth", 6)),
        pred_heads=int(pred.get("heads", 16)), pred_dim_head=int(pred.get("dim_head", 64)),
        pred_mlp_dim=int(pred.get("mlp_dim", 2048)), pred_dropout=float(pred.get("dropout", 0.1)),
    )
    fields.update(overrides)
    return LeWMConfig(**fields)


def import_official(weights: str | os.PathLike | dict, config: str | os.PathLike | dict, **overrides) -> LeWM:
    """Build a LeWM from official `weights.pt` (or a state dict) + `config.json` (or its dict).

    weights.pt is read with torch.load(weights_only=True): a plain state dict needs no unpickling of code.
    """
    if not isinstance(config, dict):
        config = read_json(config, "official config.json")
    cfg = config_from_official(config, **overrides)
    if not isinstance(weights, dict):
        source = weights
        try:
            weights = torch.load(weights, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:   # pickle / zip errors of a truncated or foreign file, or code in the pickle
            raise CheckpointError(f"{source}: not a loadable weights.pt state dict ({' '.join(str(e).split())[:300]})") from None
        if not isinstance(weights, dict):
            raise CheckpointError(f"{source}: expected a state dict, got {type(weights).__name__}")
        for wrapper in ("state_dict", "model"):
            if isinstance(weights.get(wrapper), dict):
                weights = weights[wrapper]
    state = official_to_lewm_fast(weights, cfg.enc_depth)
    model = LeWM(cfg)
    load_state_dict_strict(model, state, source="official state dict")
    return model.eval()

