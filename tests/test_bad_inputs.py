"""A table of bad inputs walked through the public entry points: each must fail with the stated error
class and a message that names the problem (regex), before doing any harm."""
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from helpers import moving_square_episode, random_model, write_synthetic
from lewm_fast import Planner
from lewm_fast.checkpoint import CheckpointError, import_official, lewm_fast_to_official, load_checkpoint, save_checkpoint
from lewm_fast.data import DatasetError, EpisodeFile, HDF5Writer, WriteError
from lewm_fast.model import LeWMConfig

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = dict(num_samples=8, iterations=1, topk=2, device="cpu", backend="eager")
OFFICIAL_CONFIG = {"encoder": {"size": "tiny", "patch_size": 14, "image_size": 28},
                   "predictor": {"depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 32},
                   "action_encoder": {"input_dim": 10}, "projector": {"hidden_dim": 32}, "pred_proj": {"hidden_dim": 32}}


def _frames(B, size=32):
    return np.random.default_rng(0).integers(0, 256, (B, size, size, 3), dtype=np.uint8)


def _copy_h5(src, dst, **edits):
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        for k in f:
            f.copy(k, g)
        for k, v in f.attrs.items():
            g.attrs[k] = v
        for k, fn in edits.items():
            fn(g[k])
    return dst


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    c = {"dir": d, "model": random_model(LeWMConfig.tiny(), scale=0.3)}
    c["data"] = write_synthetic(d / "syn.h5", n_episodes=6, length=30)
    c["ckpt"] = d / "m.safetensors"
    save_checkpoint(c["ckpt"], c["model"], {"action": {"mean": np.zeros(2), "std": np.ones(2)}},
                    {"env": {"name": "synthetic", "action_dim": 2, "image_size": [32, 32]}})
    from lewm_fast.train import train
    c["train"] = ["--data", c["data"], "--preset", "tiny", "--batch-size", "4", "--workers", "0", "--no-progress",
                  "--threads", "1", "--max-steps", "1"]
    c["run"] = d / "run"
    train([*c["train"], "--out", str(c["run"])])
    cfg = LeWMConfig(image_size=28, patch_size=14, pred_depth=1, pred_heads=2, pred_dim_head=8, pred_mlp_dim=32,
                     proj_hidden_dim=32)
    c["official"] = lewm_fast_to_official(random_model(cfg, scale=0.05).state_dict(), cfg.enc_depth)
    return c


def _planner(ctx, **kw):
    return Planner(ctx["model"], **{**FAST, **kw})


def _write(path, text):
    path.write_text(text)
    return path


def _bad_header(ctx):
    from safetensors.torch import save_file
    p = ctx["dir"] / "badheader.safetensors"
    save_file({"x": torch.zeros(1)}, str(p), metadata={"lewm_fast": "{not json"})
    return load_checkpoint(p)


def _nan_weights(ctx):
    m = random_model(LeWMConfig.tiny())
    with torch.no_grad():
        m.encoder.cls_token.fill_(float("nan"))
    save_checkpoint(ctx["dir"] / "nan.safetensors", m)
    return load_checkpoint(ctx["dir"] / "nan.safetensors")


def _int_official(ctx):
    sd = dict(ctx["official"])
    sd["projector.net.0.weight"] = sd["projector.net.0.weight"].round().to(torch.int64)
    return import_official(sd, OFFICIAL_CONFIG)


def _train(ctx, *extra, out=None):
    from lewm_fast.train import train
    return train([*ctx["train"], "--out", str(out or ctx["dir"] / "run-x"), *extra])


def _resume_copy(ctx, *extra):
    run = ctx["dir"] / "run-resume"
    if not run.exists():
        shutil.copytree(ctx["run"], run)
    return _train(ctx, "--resume", *extra, out=run)


def _locked_train(ctx):
    from lewm_fast.data import PathLock
    out = ctx["dir"] / "run-locked"
    out.mkdir(exist_ok=True)
    lock = PathLock(out / "train", "training run")   # another run holds this --out
    try:
        _train(ctx, out=out)
    finally:
        lock.release()


def _eval_main(*argv):
    from lewm_fast.eval import main
    return main(list(argv))


def _surprise(ctx, *argv):
    from lewm_fast.surprise import main
    return main(["--env", "pusht", "--checkpoint", str(ctx["ckpt"]), "--out", str(ctx["dir"] / "s"), *argv])


def _probe(ctx, *argv):
    from lewm_fast.probe import main
    return main(["--env", "synthetic", "--checkpoint", str(ctx["ckpt"]), "--dataset", ctx["data"],
                 "--out", str(ctx["dir"] / "p"), *argv])


def _held_writer(ctx):
    p = ctx["dir"] / "held.h5"
    w = HDF5Writer(p)
    try:
        HDF5Writer(p, mode="a")
    finally:
        w.close()


def _incomplete(ctx):
    w = HDF5Writer(ctx["dir"] / "inc.h5", mode="a")
    w.write_episode(moving_square_episode(np.random.default_rng(0), 10))
    w.f.close()   # crash: never closed cleanly
    w.f = None
    w._lock.release()
    return EpisodeFile(ctx["dir"] / "inc.h5")


def _nan_state_episode(ctx):
    ep = moving_square_episode(np.random.default_rng(0), 10)
    ep["state"][4, 1] = np.inf
    with HDF5Writer(ctx["dir"] / "nanstate.h5") as w:
        w.write_episode(ep)


CASES = [
    # Planner construction
    ("var_scale NaN", lambda c: _planner(c, var_scale=float("nan")), ValueError, r"var_scale must be finite"),
    ("var_scale 0", lambda c: _planner(c, var_scale=0.0), ValueError, r"var_scale must be > 0"),
    ("MPPI temperature NaN", lambda c: _planner(c, solver="mppi", temperature=float("nan")), ValueError,
     r"temperature must be finite"),
    ("MPPI temperature < 0", lambda c: _planner(c, solver="mppi", temperature=-1.0), ValueError, r"temperature must be > 0"),
    ("iCEM alpha > 1", lambda c: _planner(c, solver="icem", alpha=2.0), ValueError, r"alpha must be <= 1"),
    ("num_samples 0", lambda c: _planner(c, num_samples=0), ValueError, r"num_samples must be an integer >= 1"),
    ("topk above num_samples", lambda c: _planner(c, num_samples=8, topk=30), ValueError,
     r"topk \(30\) must not exceed num_samples \(8\)"),
    ("iterations 0", lambda c: _planner(c, iterations=0), ValueError, r"iterations must be an integer >= 1"),
    ("horizon 0", lambda c: _planner(c, horizon=0), ValueError, r"horizon must be >= 1"),
    ("action stats mean NaN", lambda c: _planner(c, action_stats={"mean": [0, np.nan], "std": [1, 1]}), ValueError,
     r"action_stats\['mean'\] contains NaN or inf \(first at index \(1,\)"),
    ("action stats std inf", lambda c: _planner(c, action_stats={"mean": [0, 0], "std": [np.inf, 1]}), ValueError,
     r"action_stats\['std'\] contains NaN or inf"),
    ("action stats std 0", lambda c: _planner(c, action_stats={"mean": [0, 0], "std": [1, 0]}), ValueError,
     r"action_stats\['std'\] must be > 0"),
    ("action stats without std", lambda c: _planner(c, action_stats={"mean": [0, 0]}), ValueError,
     r"action_stats must be a dict with 'mean' and 'std'.*\['mean'\]"),
    ("action stats of the wrong width", lambda c: _planner(c, action_stats={"mean": [0, 0, 0], "std": [1, 1, 1]}),
     ValueError, r"env_action_dim=2 entries"),
    # plan
    ("empty batch", lambda c: _planner(c).plan(_frames(0), _frames(0)), ValueError, r"obs is an empty batch"),
    ("float frames in 0-255", lambda c: _planner(c).plan(_frames(1).astype(np.float32), _frames(1)), ValueError,
     r"obs are float frames with values in \[\d+, 25\d\].*they look like raw pixels: pass them as uint8"),
    ("goal frames inf", lambda c: _planner(c).plan(_frames(1), np.full((1, 32, 32, 3), np.inf, np.float32)),
     ValueError, r"goal contains NaN or inf"),
    ("init_plan NaN", lambda c: _planner(c).plan(_frames(1), _frames(1), init_plan=np.full((1, 2, 10), np.nan)),
     ValueError, r"init_plan contains NaN or inf"),
    ("init_plan too long", lambda c: _planner(c).plan(_frames(1), _frames(1), init_plan=np.zeros((1, 9, 10))),
     ValueError, r"init_plan must be \(B=1, t<=5, A=10\)"),
    ("goal batch differs", lambda c: _planner(c).plan(_frames(2), _frames(3)), ValueError, r"goal batch 3 != obs batch 2"),
    ("frames of another size", lambda c: _planner(c).plan(_frames(1, 40), _frames(1, 40)), ValueError,
     r"40x40; the model takes 32x32"),
    # checkpoints
    ("checkpoint missing", lambda c: load_checkpoint(c["dir"] / "nope.safetensors"), FileNotFoundError,
     r"checkpoint not found: .*nope\.safetensors"),
    ("checkpoint is a directory", lambda c: load_checkpoint(c["dir"]), CheckpointError, r"is a directory"),
    ("checkpoint is garbage", lambda c: load_checkpoint(_write(c["dir"] / "junk.safetensors", "junk" * 10)),
     CheckpointError, r"junk\.safetensors: not a readable safetensors checkpoint"),
    ("checkpoint header malformed", _bad_header, ValueError, r"badheader\.safetensors: 'lewm_fast' header: malformed JSON"),
    ("checkpoint weights NaN", _nan_weights, CheckpointError, r"NaN or inf in \['encoder\.cls_token'\]"),
    ("official weights stored as integers", _int_official, CheckpointError,
     r"must be floating point are stored as \['projector\.net\.0\.weight \(torch\.int64\)'\]"),
    ("official config malformed", lambda c: import_official(c["official"], _write(c["dir"] / "config.json", "{oops")),
     ValueError, r"config\.json: malformed JSON"),
    ("official config lacks a section", lambda c: import_official(c["official"], {"encoder": {}}), CheckpointError,
     r"lacks section 'predictor'"),
    ("official weights.pt is garbage", lambda c: import_official(_write(c["dir"] / "weights.pt", "nope"), OFFICIAL_CONFIG),
     CheckpointError, r"weights\.pt: not a loadable weights\.pt state dict"),
    ("unknown shipped name", lambda c: Planner.from_pretrained("no-such-model"), ValueError,
     r"no shipped checkpoint named 'no-such-model'"),
    ("checkpoint of another env", lambda c: Planner.from_checkpoint(c["ckpt"], env="cube", **FAST), CheckpointError,
     r"trained on env 'synthetic', not 'cube'"),
    # datasets and writers
    ("episode offsets out of order", lambda c: EpisodeFile(_copy_h5(c["data"], c["dir"] / "order.h5",
     ep_offset=lambda d: d.__setitem__(slice(None), d[:][[1, 0, 2, 3, 4, 5]]))), DatasetError,
     r"ep_offset is not increasing: episode 1 starts at row 0"),
    ("episodes overlap", lambda c: EpisodeFile(_copy_h5(c["data"], c["dir"] / "overlap.h5",
     ep_offset=lambda d: d.__setitem__(2, 50))), DatasetError, r"episode 1 \(rows 30\.\.59\) overlaps episode 2"),
    ("episode beyond the rows", lambda c: EpisodeFile(_copy_h5(c["data"], c["dir"] / "beyond.h5",
     ep_len=lambda d: d.__setitem__(5, 99))), DatasetError, r"points outside the 180 rows"),
    ("interrupted file", _incomplete, FileNotFoundError,
     r"inc\.h5 \(an interrupted write left .*inc\.h5\.partial; resume it with mode='a' / --append\)"),
    ("writer output is a directory", lambda c: HDF5Writer(c["dir"]), WriteError, r"is a directory"),
    ("second writer on one path", _held_writer, WriteError, r"held\.h5 is in use by another HDF5Writer"),
    ("non-finite state column", _nan_state_episode, ValueError, r"'state' has non-finite values at rows \[4\]"),
    ("eval dataset of another env", lambda c: _eval_main("--env", "pusht", "--dataset", c["data"], "--policy", "random",
     "--num-eval", "1"), ValueError, r"collected in env 'synthetic', not 'pusht'"),
    # CLI arguments
    ("train --ckpt-every 0", lambda c: _train(c, "--ckpt-every", "0"), SystemExit, r"--ckpt-every must be >= 1, got 0"),
    ("train --batch-size 0", lambda c: _train(c, "--batch-size", "0"), SystemExit, r"--batch-size must be >= 1, got 0"),
    ("train --lr nan", lambda c: _train(c, "--lr", "nan"), SystemExit, r"--lr must be finite"),
    ("train --warmup-frac 2", lambda c: _train(c, "--warmup-frac", "2"), SystemExit, r"--warmup-frac must be <= 1"),
    ("train --config file malformed", lambda c: _train(c, "--config", str(_write(c["dir"] / "cfg.json", "{1:"))),
     ValueError, r"--config .*cfg\.json: malformed JSON"),
    ("train --config inline malformed", lambda c: _train(c, "--config", '{"embed_dim": }'), ValueError,
     r"--config \(inline JSON\): malformed JSON"),
    ("train --config unknown field", lambda c: _train(c, "--config", '{"bogus": 1}'), ValueError,
     r"unknown LeWMConfig fields: \['bogus'\]"),
    ("train --resume with a changed --lr", lambda c: _resume_copy(c, "--lr", "0.01"), SystemExit,
     r"--resume: --lr 0\.01 differs from the checkpoint's 5e-05"),
    ("train --resume without last.pt", lambda c: _train(c, "--resume", out=c["dir"] / "empty-run"), SystemExit,
     r"--resume: no checkpoint at .*last\.pt"),
    ("two trainings into one --out", lambda c: _locked_train(c), WriteError, r"in use by another training run"),
    ("train --out is a file", lambda c: _train(c, out=_write(c["dir"] / "afile", "x")), SystemExit, r"afile is a file"),
    ("eval --num-samples below --topk", lambda c: _eval_main("--env", "tworoom", "--num-samples", "10", "--topk", "30"),
     SystemExit, r"--num-samples 10 is below --topk 30"),
    ("eval --seeds not integers", lambda c: _eval_main("--env", "tworoom", "--seeds", "a,b"), SystemExit,
     r"--seeds must be comma-separated integers"),
    ("eval --budget 0", lambda c: _eval_main("--env", "tworoom", "--budget", "0"), SystemExit, r"--budget must be >= 1"),
    ("eval --threads 0", lambda c: _eval_main("--env", "tworoom", "--threads", "0"), SystemExit, r"--threads must be >= 1"),
    ("collect --episodes 0", lambda c: __import__("lewm_fast.collect").collect.main(
        ["--env", "tworoom", "--episodes", "0", "--out", str(c["dir"] / "c.h5")]), ValueError, r"--episodes must be >= 1"),
    ("collect --out a directory", lambda c: __import__("lewm_fast.collect").collect.main(
        ["--env", "tworoom", "--episodes", "1", "--out", str(c["dir"])]), WriteError, r"is a directory"),
    ("surprise --episodes 0", lambda c: _surprise(c, "--episodes", "0"), SystemExit, r"--episodes must be >= 1"),
    ("surprise on another env", lambda c: _surprise(c), CheckpointError, r"trained on env 'synthetic', not 'pusht'"),
    ("probe --batch-size 0", lambda c: _probe(c, "--batch-size", "0"), SystemExit, r"--batch-size must be >= 1"),
    ("probe --test-fraction 1.5", lambda c: _probe(c, "--test-fraction", "1.5"), SystemExit,
     r"--test-fraction must be in \(0, 1\)"),
    ("demo --episodes 0", lambda c: __import__("lewm_fast.demo").demo.main(["--episodes", "0", "--workdir", str(c["dir"])]),
     SystemExit, r"--episodes must be >= 1"),
]


def test_table_is_large_enough():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name, call, error, match", CASES, ids=[c[0] for c in CASES])
def test_bad_input(ctx, name, call, error, match):
    with pytest.raises(error, match=match) as info:
        call(ctx)
    if error is SystemExit:
        assert isinstance(info.value.code, str)   # a message, which run_cli prints as one line with exit code 2
