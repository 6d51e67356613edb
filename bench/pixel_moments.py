"""What in the PushT picture does a latent hold? Probes of pixel moments of the objects beside the state.

    python -m bench.pixel_moments --checkpoint pusht --dataset heldout.h5 \
        --out results/pusht-recipe/pixel-moments

`lewm_fast.probe` asks for the simulator's state (the block body's origin and angle, the agent). This asks
for what the frame shows of each object, computed from masks that the env's own renderer draws for the
same states (each object recoloured on its own, goal off, at the dataset's resolution): the block's pixel
centroid (first moment), its principal-axis orientation as cos/sin of twice the axis angle (second moment;
the axis is defined mod pi), its pixel count, the agent's pixel centroid. Same frames, split by episode and
linear / MLP probes as `lewm_fast.probe` (seed 0). If a latent holds a centroid to R^2 ~0.95 while the
block origin probes lower and the orientation not at all, it has learned where the grey mass is and not how
it is turned. `axis_from_state_angle_r2` checks that the second-moment target is a function of the block angle
(linear in cos 2theta, sin 2theta) and not noise of the masks.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

MASK_COLOUR = (255, 0, 0)          # one object at a time in pure red on the white canvas


def object_mask(states: np.ndarray, size: int, obj: str) -> np.ndarray:
    """(N, size, size) bool: the pixels where the renderer draws `obj` ("block" or "agent"), goal off."""
    from lewm_fast.envs.render import PUSHT_COLOURS, render_pusht
    white = {k: (255, 255, 255) for k in PUSHT_COLOURS if k != obj}
    frames = render_pusht(states, size=size, draw_goal=False, colours={**white, obj: MASK_COLOUR}).astype(np.int16)
    # the object is drawn in red (its fill slightly lighter, anti-aliased rim): red channel high, others low
    return (frames[..., 0] > 200) & (frames[..., 1] < 160) & (frames[..., 2] < 160)


def moments(mask: np.ndarray) -> dict[str, np.ndarray]:
    """Pixel count, centroid and principal-axis orientation (as cos/sin of 2 x axis angle) of each mask."""
    n_img, h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    m = mask.astype(np.float64)
    n = m.sum((1, 2))
    if (n == 0).any():
        raise ValueError(f"{int((n == 0).sum())} frame(s) show no pixel of the object (off the canvas?)")
    cx, cy = (m * xx).sum((1, 2)) / n, (m * yy).sum((1, 2)) / n
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    mxx, myy, mxy = (m * dx * dx).sum((1, 2)) / n, (m * dy * dy).sum((1, 2)) / n, (m * dx * dy).sum((1, 2)) / n
    two_theta = np.arctan2(2 * mxy, mxx - myy)
    return {"pixels": n, "cx": cx, "cy": cy, "axis_cos2": np.cos(two_theta), "axis_sin2": np.sin(two_theta)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.pixel_moments", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a PushT checkpoint (path or shipped name)")
    ap.add_argument("--dataset", required=True, help="PushT HDF5 file with a state column (held-out episodes)")
    ap.add_argument("--max-frames", type=int, default=3000)
    ap.add_argument("--no-mlp", action="store_true", help="linear probes only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="pixel-moments", help="directory for report.json")
    args = ap.parse_args(argv)
    from lewm_fast.checkpoint import atomic_write, check_env, load_checkpoint
    from lewm_fast.data import EpisodeFile
    from lewm_fast.probe import _Rows, embed_frames, fit_linear, fit_probes, sample_rows, state_targets
    from lewm_fast.surprise import json_safe

    if args.max_frames < 10:
        raise SystemExit(f"--max-frames must be >= 10, got {args.max_frames}")
    ckpt = load_checkpoint(args.checkpoint)
    check_env(ckpt, "pusht", args.checkpoint)
    src = EpisodeFile(args.dataset, columns=("state",))
    rows, episodes = sample_rows(src, args.max_frames, args.seed)
    states = np.asarray(src.cache["state"][rows], dtype=np.float64)
    size = int(src.image_shape[0])
    block, agent = moments(object_mask(states, size, "block")), moments(object_mask(states, size, "agent"))
    state_names, state_y = state_targets("pusht", states)
    names = ["block_pixel_cx", "block_pixel_cy", "block_axis_cos2", "block_axis_sin2", "block_pixels",
             "agent_pixel_cx", "agent_pixel_cy", *state_names]
    Y = np.column_stack([block["cx"], block["cy"], block["axis_cos2"], block["axis_sin2"], block["pixels"],
                         agent["cx"], agent["cy"], state_y])
    theta = states[:, 4]
    A = np.column_stack([np.cos(2 * theta), np.sin(2 * theta)])
    axis = np.column_stack([block["axis_cos2"], block["axis_sin2"]])
    predict, _ = fit_linear(A, axis, A, axis)
    resid = ((predict(A) - axis) ** 2).sum(0) / ((axis - axis.mean(0)) ** 2).sum(0)
    X = embed_frames(ckpt.model, _Rows(src, rows))
    result = fit_probes(X, Y, episodes, names, seed=args.seed, mlp=not args.no_mlp)
    report = {"checkpoint": str(args.checkpoint), "dataset": str(args.dataset), "frames": int(len(X)),
              "resolution": size, "seed": args.seed,
              "command": "python -m bench.pixel_moments " + " ".join(sys.argv[1:] if argv is None else argv),
              "axis_from_state_angle_r2": {"cos2": float(1 - resid[0]), "sin2": float(1 - resid[1])},
              "quantities": result["quantities"], "split": result["split"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.json", lambda tmp: Path(tmp).write_text(json.dumps(json_safe(report), indent=1)))
    for name, q in result["quantities"].items():
        print(f"{name:18s} linear R^2 {q['linear']['r2']:6.3f}" + (f"  MLP R^2 {q['mlp']['r2']:6.3f}" if "mlp" in q else ""))
    print(f"axis vs state angle R^2 {report['axis_from_state_angle_r2']}; wrote {out / 'report.json'}")
    return report


if __name__ == "__main__":
    main()
