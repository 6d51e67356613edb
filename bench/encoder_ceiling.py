"""What can this encoder see at this resolution? The same architecture trained with the state as its target.

    python -m bench.encoder_ceiling --env pusht --checkpoint pusht --data train.h5 --probe-dataset heldout.h5 \
        --steps 1500 --out results/pusht-recipe/encoder-ceiling

A LeWM built from the checkpoint's config (fresh weights: same patch size, width, depth, resolution) is
trained for --steps with a linear head on the standardised state quantities the probe reads (angles as
sin/cos), frames drawn uniformly from --data. Its latent (projector output, as the planner uses) is then
probed exactly as `lewm_fast.probe` probes a JEPA checkpoint: same held-out file, same frames, same
split, same linear and MLP probes. The two reports side by side separate "the frames or the architecture
cannot carry the quantity" (the supervised encoder fails too) from "the JEPA objective did not learn it"
(the supervised encoder succeeds where the checkpoint does not). The JEPA checkpoint is probed in the
same run for the comparison.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch


def train_supervised(cfg, src, env: str, steps: int, batch_size: int, lr: float, seed: int,
                     precision: str = "bf16", progress: bool = True):
    """Fresh LeWM(cfg) + Linear head trained on standardised state targets; returns (model, loss history)."""
    from tqdm import tqdm

    from lewm_fast.model import LeWM
    from lewm_fast.probe import state_targets

    torch.manual_seed(seed)
    model = LeWM(cfg)
    rows = np.flatnonzero(src.episode_of_rows() >= 0)          # every row of an episode, sorted
    names, Y = state_targets(env, src.cache["state"][rows])
    mean, std = Y.mean(0), Y.std(0) + 1e-12
    Z = torch.from_numpy(((Y - mean) / std).astype(np.float32))
    head = torch.nn.Linear(cfg.embed_dim, Z.shape[1])
    params = list(model.encoder.parameters()) + list(model.projector.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-3)
    warm = max(1, steps // 50)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    rng = np.random.default_rng(seed + 1)
    amp = dict(device_type="cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    model.train()
    history = []
    for step in tqdm(range(steps), disable=not progress, desc="supervised encoder"):
        pick = np.sort(rng.choice(len(rows), size=batch_size, replace=False))
        pixels = torch.from_numpy(np.ascontiguousarray(src.pixels(rows[pick]))).permute(0, 3, 1, 2)
        with torch.autocast(**amp):
            pred = head(model.encode(pixels))
        loss = torch.nn.functional.mse_loss(pred.float(), Z[pick])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history.append(loss.item())
    model.eval()
    return model, names, history


def probe_model(model, env: str, probe_src, max_frames: int, seed: int, mlp_steps: int) -> dict:
    from lewm_fast.probe import probe_episode_file

    result, _ = probe_episode_file(model, env, probe_src, max_frames, seed, mlp_kwargs={"max_steps": mlp_steps})
    return {name: {kind: q[kind]["r2"] for kind in ("linear", "mlp")} for name, q in result["quantities"].items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", required=True)
    ap.add_argument("--checkpoint", required=True, help="JEPA checkpoint: its config is reused, and it is probed too")
    ap.add_argument("--data", required=True, help="training episode file (frames + state)")
    ap.add_argument("--probe-dataset", required=True, help="held-out episode file both encoders are probed on")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=96, help="frames per step (a JEPA step of 32 clips encodes 96+)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--max-frames", type=int, default=3000)
    ap.add_argument("--mlp-steps", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output folder (report.json)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from lewm_fast.checkpoint import atomic_write, check_env, load_checkpoint, resolve_checkpoint
    from lewm_fast.cli import positive
    from lewm_fast.data import EpisodeFile
    from lewm_fast.surprise import json_safe

    for name in ("steps", "batch_size", "max_frames", "mlp_steps"):
        positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve_checkpoint(args.checkpoint)
    ckpt = load_checkpoint(path, device="cpu")
    check_env(ckpt, args.env, args.checkpoint)
    src = EpisodeFile(args.data, columns=("state",))
    probe_src = EpisodeFile(args.probe_dataset, columns=("state",))
    t0 = time.perf_counter()
    model, names, history = train_supervised(ckpt.model.cfg, src, args.env, args.steps, args.batch_size, args.lr,
                                             args.seed, args.precision, not args.no_progress)
    train_s = time.perf_counter() - t0
    report = {
        "env": args.env, "checkpoint": str(args.checkpoint), "data": Path(args.data).name,
        "probe_dataset": Path(args.probe_dataset).name, "config": ckpt.model.cfg.to_dict(),
        "supervised": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "precision": args.precision,
                       "targets": names, "train_wall_s": train_s,
                       "loss_first_last_tenth": [float(np.mean(history[:max(1, args.steps // 10)])),
                                                 float(np.mean(history[-max(1, args.steps // 10):]))]},
        "probe_r2": {"supervised": probe_model(model, args.env, probe_src, args.max_frames, args.seed, args.mlp_steps),
                     "jepa": probe_model(ckpt.model, args.env, probe_src, args.max_frames, args.seed, args.mlp_steps)},
        "command": "python -m bench.encoder_ceiling " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.json", lambda tmp: Path(tmp).write_text(json.dumps(json_safe(report), indent=1)))
    print(f"{'quantity':<18}{'supervised lin':>15}{'mlp':>7}{'jepa lin':>10}{'mlp':>7}")
    for q in names:
        s, j = report["probe_r2"]["supervised"][q], report["probe_r2"]["jepa"][q]
        print(f"{q:<18}{s['linear']:>15.3f}{s['mlp']:>7.3f}{j['linear']:>10.3f}{j['mlp']:>7.3f}")
    print(f"wrote {out / 'report.json'}")
    return report


if __name__ == "__main__":
    main()
