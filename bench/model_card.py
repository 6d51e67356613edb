"""Ship a trained checkpoint as `lewm_fast/pretrained/NAME.safetensors` with the JSON card beside it.

    python -m bench.model_card --name pusht --checkpoint runs/pusht/model.safetensors \
        --recipe "python -m lewm_fast.demo --recipe --env pusht" \
        --report expert=results/pusht-eval-expert.json --report expert_random=results/pusht-eval-expert-random.json

Every success rate in the card is read from the evaluation reports given (lewm_fast.eval JSON), never typed:
per report its mean and std over seeds, the per-seed rates, pairs, protocol and planner. The checkpoint is
copied atomically; its size is checked against the 40 MB limit of shipped models.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

MAX_BYTES = 40 * 2**20


def file_name(path: str | None) -> str | None:
    """A dataset as the card names it: its file name (where it lay on the training machine means nothing
    to a reader; the recipe's collect command says how to make it)."""
    return None if path is None else Path(path).name


def summarise(path: Path) -> dict:
    rep = json.loads(path.read_text())
    return {"report": str(path), "policy": rep["policy"], "pairs": rep["pairs"], "dataset": file_name(rep.get("dataset")),
            "protocol": rep["protocol"], "planner": rep.get("planner"),
            "success_rate_mean": rep["success_rate_mean"], "success_rate_std": rep["success_rate_std"],
            "per_seed": {s: r["success_rate"] for s, r in rep["runs"].items()}}


INTERRUPTION_S = 600   # a gap this long between two logged steps is a stop (and --resume), not training


def training_wall_time(steps: list[dict]) -> float | None:
    """Seconds spent training, from the per-step wall clock ("time") in metrics.jsonl: the sum of the
    intervals between consecutive steps, leaving out gaps over INTERRUPTION_S (a stopped and resumed
    run). None for logs written before the clock was logged."""
    clock = [r["time"] for r in steps if "time" in r]
    if len(clock) < 2 or len(clock) != len(steps):
        return None
    gaps = [b - a for a, b in zip(clock, clock[1:])]
    return float(sum(g for g in gaps if 0 <= g < INTERRUPTION_S))


def main(argv=None) -> dict:
    from lewm_fast.checkpoint import PRETRAINED_DIR, atomic_write, load_checkpoint
    from lewm_fast.model import count_parameters

    ap = argparse.ArgumentParser(prog="python -m bench.model_card", description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--env", required=True, help="the env it was trained on (recorded in the card and the file)")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--recipe", required=True, help="the command(s) that produced the checkpoint")
    ap.add_argument("--report", action="append", default=[], help="LABEL=eval.json (repeatable)")
    ap.add_argument("--extra", action="append", default=[], help="LABEL=any.json to reference (probe, surprise...)")
    ap.add_argument("--wall-time", action="append", default=[], help="STAGE=SECONDS measured wall time (repeatable)")
    ap.add_argument("--data", help="the training dataset: its metadata (env, policy, noise, episodes) goes in the card")
    ap.add_argument("--train-log", help="the run's metrics.jsonl: wall time and final losses are read from it")
    args = ap.parse_args(argv)
    src = Path(args.checkpoint)
    if src.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{src} is {src.stat().st_size / 2**20:.1f} MB; shipped models must be <= 40 MB")
    ckpt = load_checkpoint(src)
    card = {"name": args.name, "env": args.env, "file": f"{args.name}.safetensors", "size_mb": round(src.stat().st_size / 2**20, 2),
            "parameters": count_parameters(ckpt.model), "config": ckpt.config.to_dict(),
            "info": {**ckpt.info, **({"data": file_name(ckpt.info["data"])} if ckpt.info.get("data") else {})},
            "recipe": args.recipe, "evaluations": {}, "references": {}}
    for item in args.report:
        label, _, path = item.partition("=")
        card["evaluations"][label] = summarise(Path(path))
    for item in args.extra:
        label, _, path = item.partition("=")
        card["references"][label] = path
    card["wall_time_s"] = {k: float(v) for k, _, v in (w.partition("=") for w in args.wall_time)}
    if args.data:
        from lewm_fast.data import EpisodeFile, open_h5
        with open_h5(args.data) as f:
            meta = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        src_data = EpisodeFile(args.data)
        card["data"] = {"file": file_name(args.data), "episodes": int(len(src_data.ep_len)), "frames": int(src_data.ep_len.sum()),
                        "metadata": meta}
    if args.train_log:
        rows = [json.loads(ln) for ln in Path(args.train_log).read_text().splitlines() if ln.strip()]
        # the card describes the shipped checkpoint: a snapshot taken before the run's end counts up to its step
        upto = ckpt.info.get("step")
        steps = [r for r in rows if "pred_loss" in r and (upto is None or r["step"] <= upto)]
        card["training"] = {"metrics": args.train_log, "steps": steps[-1]["step"] if steps else 0,
                            "final_pred_loss": steps[-1]["pred_loss"] if steps else None,
                            "final_sigreg": steps[-1]["sigreg"] if steps else None,
                            "wall_time_s": training_wall_time(steps)}
    dst = PRETRAINED_DIR / card["file"]
    recorded = (ckpt.info.get("env") or {}).get("name")
    if recorded not in (None, args.env):
        raise SystemExit(f"{src} was trained on env {recorded!r}, not {args.env!r}")
    if recorded is None:   # older runs: write the env into the file itself (same weights, stats and config)
        from lewm_fast.checkpoint import save_checkpoint
        info = {**ckpt.info, "env": {"name": args.env, "action_dim": ckpt.config.env_action_dim,
                                     "image_size": [ckpt.config.image_size] * 2}}
        save_checkpoint(dst, ckpt.model, ckpt.stats, info)
        card["info"] = {**card["info"], "env": info["env"]}
    else:
        atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))
    atomic_write(PRETRAINED_DIR / f"{args.name}.json", lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2)))
    print(json.dumps({k: v["success_rate_mean"] for k, v in card["evaluations"].items()}, indent=1))
    return card


if __name__ == "__main__":
    main()
