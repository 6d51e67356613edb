"""Linear and MLP probes of physical quantities from the frozen LeWM encoder (paper section on probing).

Frames are embedded with the frozen encoder (projector output by default, or the pre-projector CLS token);
each quantity of the dataset's `state` column (angles as sin/cos) is standardised with training statistics
and predicted by
- a linear probe: closed-form ridge regression on standardised features, the penalty chosen per quantity
  on a validation part of the training episodes, then refitted on all training episodes;
- an MLP probe: one 2-layer MLP with an output per quantity (torch, Adam; early stopping per quantity on the
  validation part).
Train/validation/test are split by episode (frames of one episode are strongly correlated, so a frame-level
split would leak). Reported on the test episodes: R^2, MSE (in standardised units) and Pearson r.

    python -m lewm_fast.probe --env pusht --checkpoint run/model.safetensors --dataset pusht.h5
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

# Meaning of the `state` columns per env: (name, column, kind). kind "angle" is probed as sin and cos.
# column may be a tuple: the sum of those columns (an absolute angle from relative joint angles).
# Envs not listed get generic names state_0, state_1, ... (all columns, kind "linear").
STATE_TABLES: dict[str, list[tuple[str, int | tuple[int, ...], str]]] = {
    "pusht": [("agent_x", 0, "linear"), ("agent_y", 1, "linear"), ("block_x", 2, "linear"),
              ("block_y", 3, "linear"), ("block_angle", 4, "angle")],
    "tworoom": [("agent_x", 0, "linear"), ("agent_y", 1, "linear")],
    # shoulder is unlimited (angle); the wrist is limited to +-160 deg, so probed as is; "hand" is the
    # second link's direction in the frame (shoulder + wrist), what the picture shows of the wrist
    "reacher": [("shoulder", 0, "angle"), ("wrist", 1, "linear"), ("hand", (0, 1), "angle"),
                ("shoulder_vel", 2, "linear"), ("wrist_vel", 3, "linear")],
    # qpos: 6 arm joints, 8 gripper joints, then the free cube joint (x, y, z, quaternion)
    "cube": [*[(f"arm_joint_{i}", i, "linear") for i in range(6)],
             ("cube_x", 14, "linear"), ("cube_y", 15, "linear"), ("cube_z", 16, "linear")],
}
RIDGE_LAMBDAS = np.logspace(-4, 4, 17)


def state_targets(env: str, state: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(N, S) raw states -> names and (N, Q) float64 probe targets (angles expanded to name_sin, name_cos)."""
    state = np.asarray(state, dtype=np.float64)
    if state.ndim == 1:
        state = state[:, None]
    if state.ndim != 2:
        raise ValueError(f"state must be (N, S), got shape {state.shape}")
    table = STATE_TABLES.get(env.lower()) or [(f"state_{i}", i, "linear") for i in range(state.shape[1])]
    names, cols = [], []
    for name, i, kind in table:
        idx = i if isinstance(i, tuple) else (i,)
        if max(idx) >= state.shape[1]:
            raise ValueError(f"{env}: state column {max(idx)} ({name}) missing; the state has {state.shape[1]} columns")
        value = state[:, list(idx)].sum(axis=1)
        if kind == "angle":
            names += [f"{name}_sin", f"{name}_cos"]
            cols += [np.sin(value), np.cos(value)]
        else:
            names.append(name)
            cols.append(value)
    return names, np.stack(cols, axis=1)


# ----------------------------------------------------------------------------------------------
# Embedding
# ----------------------------------------------------------------------------------------------
@torch.inference_mode()
def embed_frames(model, frames, batch_size: int = 512, features: str = "projector", precision: str | None = None,
                 progress: bool = False) -> np.ndarray:
    """Frozen-encoder features of frames, (N, D) float32.

    frames: (N, h, w, 3) / (N, 3, h, w) uint8 array, or a callable (start, stop) -> such an array that also has
    len() (so a large dataset is read batch by batch). Puts the model in eval mode. features: 'projector' (the latent the predictor works in) or 'cls'
    (the encoder's CLS token, before the projector). precision: None = bf16 autocast on CUDA, fp32 elsewhere.
    """
    from tqdm import tqdm

    from .surprise import _as_chw, model_device
    if features not in ("projector", "cls"):
        raise ValueError(f"features must be 'projector' or 'cls', got {features!r}")
    dev = model_device(model)
    precision = precision or ("bf16" if dev.type == "cuda" else "fp32")
    get = frames if callable(frames) else (lambda a, b: frames[a:b])
    n = len(frames)
    captured = {}
    hook = model.projector.register_forward_hook(lambda mod, inp, out: captured.__setitem__("cls", inp[0]))
    out = []
    try:
        model.eval()
        for i in tqdm(range(0, n, batch_size), desc="embedding", disable=not progress):
            x = _as_chw(get(i, min(n, i + batch_size))).to(dev)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                z = model.encode(x)
            out.append((z if features == "projector" else captured["cls"]).float().cpu())
    finally:
        hook.remove()
    return torch.cat(out).numpy() if out else np.zeros((0, model.cfg.embed_dim), np.float32)


def sample_rows(src, max_frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to max_frames rows of an EpisodeFile, uniform over its episodes' rows (sorted), and their episodes."""
    rng = np.random.default_rng(seed)
    all_rows = np.concatenate([np.arange(o, o + n) for o, n in zip(src.ep_offset, src.ep_len)])
    row_episode = np.empty(src.n_rows, np.int64)
    row_episode[all_rows] = np.repeat(np.arange(len(src.ep_len)), src.ep_len)
    rows = np.sort(rng.choice(all_rows, size=min(max_frames, len(all_rows)), replace=False))
    return rows, row_episode[rows]


class _Rows:
    """Callable frame source over given (sorted) rows of an EpisodeFile, for embed_frames."""

    def __init__(self, src, rows: np.ndarray):
        self.src, self.rows = src, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __call__(self, a: int, b: int) -> np.ndarray:
        return self.src.pixels(self.rows[a:b])


# ----------------------------------------------------------------------------------------------
# Probes
# ----------------------------------------------------------------------------------------------
def split_by_episode(episode_ids: np.ndarray, test_fraction: float = 0.2, val_fraction: float = 0.2,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean row masks (train, val, test): episodes shuffled, test_fraction of them for test, val_fraction
    of the rest for validation (model selection); at least one episode in each part."""
    eps = np.unique(episode_ids)
    if len(eps) < 3:
        raise ValueError(f"probing needs at least 3 episodes (train / validation / test split by episode), got {len(eps)}")
    perm = np.random.default_rng(seed).permutation(eps)
    n_test = min(len(eps) - 2, max(1, int(round(test_fraction * len(eps)))))
    n_val = min(len(eps) - n_test - 1, max(1, int(round(val_fraction * (len(eps) - n_test)))))
    test_eps, val_eps = perm[:n_test], perm[n_test:n_test + n_val]
    test = np.isin(episode_ids, test_eps)
    val = np.isin(episode_ids, val_eps)
    return ~(test | val), val, test


def ridge_path(X: np.ndarray, Y: np.ndarray, lambdas) -> np.ndarray:
    """Ridge solutions for every penalty: (len(lambdas), d, q). X, Y centred. Penalty is per row of X
    (lambda * n), so the grid means the same for any dataset size. One SVD serves the whole grid."""
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    UtY = U.T @ Y
    n = len(X)
    return np.stack([Vt.T @ ((s / (s ** 2 + lam * n))[:, None] * UtY) for lam in lambdas])


def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """R^2 (1 - SSE/SST), MSE and Pearson r of one target."""
    err = y_pred - y_true
    sst = float(((y_true - y_true.mean()) ** 2).sum())
    r = float(np.corrcoef(y_true, y_pred)[0, 1]) if y_true.std() > 0 and y_pred.std() > 0 else math.nan
    return {"r2": 1 - float((err ** 2).sum()) / sst if sst > 0 else math.nan, "mse": float((err ** 2).mean()),
            "pearson_r": r}


def feature_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of feature columns; (near-)constant columns keep std 1, so a feature that never varied in
    training cannot be blown up by 1/std on new data."""
    mean, std = X.mean(0), X.std(0)
    return mean, np.where(std > 1e-6 * max(float(std.max()), 1e-30), std, 1.0)


def fit_linear(Xtr, Ytr, Xval, Yval, lambdas=RIDGE_LAMBDAS):
    """Standardised ridge, penalty per target chosen on (Xval, Yval), refit on train+val.
    Returns predict(X) and the chosen penalties."""
    def standardise(X, Y):
        return (*feature_scale(X), Y.mean(0))
    mx, sx, my = standardise(Xtr, Ytr)
    W = ridge_path((Xtr - mx) / sx, Ytr - my, lambdas)                     # (L, d, q)
    val_err = (((((Xval - mx) / sx) @ W) + my - Yval) ** 2).mean(1)        # (L, q)
    best = val_err.argmin(0)
    Xall, Yall = np.concatenate([Xtr, Xval]), np.concatenate([Ytr, Yval])
    mx, sx, my = standardise(Xall, Yall)
    Wall = ridge_path((Xall - mx) / sx, Yall - my, lambdas)
    Wbest = np.stack([Wall[b, :, j] for j, b in enumerate(best)], axis=1)  # (d, q)
    return (lambda X: ((X - mx) / sx) @ Wbest + my), [float(lambdas[b]) for b in best]


def fit_mlp(Xtr, Ytr, Xval, Yval, hidden: int = 256, max_steps: int = 1500, lr: float = 1e-3, batch: int = 512,
            patience: int = 200, weight_decay: float = 1e-4, seed: int = 0, device="cpu"):
    """2-layer MLP (Linear-GELU-Linear) on standardised features, one output per target (trained jointly);
    Adam on minibatches, validation every 10 steps, each target's predictions from the weights of its own
    best validation step."""
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)   # a probe this small is all per-op overhead: extra threads only add sync cost
    try:
        return _fit_mlp(Xtr, Ytr, Xval, Yval, hidden, max_steps, lr, batch, patience, weight_decay, seed, device)
    finally:
        torch.set_num_threads(threads)


def _fit_mlp(Xtr, Ytr, Xval, Yval, hidden, max_steps, lr, batch, patience, weight_decay, seed, device):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mx, sx = feature_scale(Xtr)
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=device)   # noqa: E731
    xtr, ytr, xval, yval = t((Xtr - mx) / sx), t(Ytr), t((Xval - mx) / sx), t(Yval)
    net = torch.nn.Sequential(torch.nn.Linear(xtr.shape[1], hidden), torch.nn.GELU(),
                              torch.nn.Linear(hidden, ytr.shape[1])).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    # early stopping per quantity: each output keeps the weights of its own best validation step, and
    # training stops when no output has improved for `patience` steps
    q = ytr.shape[1]
    best = [math.inf] * q
    best_state: list[dict | None] = [None] * q
    since, steps = 0, 0
    for steps in range(1, max_steps + 1):
        idx = torch.randint(0, len(xtr), (min(batch, len(xtr)),), generator=g).to(device)
        loss = torch.nn.functional.mse_loss(net(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if steps % 10 == 0:
            with torch.no_grad():
                v = (net(xval) - yval).pow(2).mean(0).tolist()
            improved = [j for j in range(q) if v[j] < best[j] - 1e-6]
            if improved:
                snap = {k: p.detach().clone() for k, p in net.state_dict().items()}
                for j in improved:
                    best[j], best_state[j] = v[j], snap
                since = 0
            else:
                since += 10
                if since >= patience:
                    break

    def predict(X):
        x = t((X - mx) / sx)
        out = np.zeros((len(X), q))
        current = {k: p.detach().clone() for k, p in net.state_dict().items()}
        with torch.no_grad():
            for state in {id(s): s for s in best_state if s is not None}.values():
                net.load_state_dict(state)
                pred = net(x).cpu().double().numpy()
                cols = [j for j in range(q) if best_state[j] is state]
                out[:, cols] = pred[:, cols]
            net.load_state_dict(current)
            missing = [j for j in range(q) if best_state[j] is None]
            if missing:
                out[:, missing] = net(x).cpu().double().numpy()[:, missing]
        return out
    return predict, {"steps": steps, "best_val_mse": best}


def fit_probes(embeddings: np.ndarray, targets: np.ndarray, episode_ids: np.ndarray, names: list[str] | None = None,
               test_fraction: float = 0.2, val_fraction: float = 0.2, seed: int = 0, mlp: bool = True,
               mlp_kwargs: dict | None = None, device="cpu") -> dict:
    """Fit linear and MLP probes of every target column; metrics on the test episodes.

    embeddings (N, D), targets (N, Q) or (N,), episode_ids (N,). Targets are standardised with training
    statistics, so MSE is in units of the target's training std (comparable across quantities).
    Returns {"quantities": {name: {"linear": metrics, "mlp": metrics, "ridge_lambda": ...}}, "split": sizes,
    "predictions": {"true", "linear", "mlp"} (test rows, original units)}.
    """
    X = np.asarray(embeddings, dtype=np.float64)
    Y = np.asarray(targets, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    ep = np.asarray(episode_ids)
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(f"embeddings must be (N, D) and targets (N, Q); got {X.shape} and {Y.shape}")
    if not len(X) == len(Y) == len(ep):
        raise ValueError(f"row counts differ: embeddings {len(X)}, targets {len(Y)}, episode_ids {len(ep)}")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("embeddings and targets must be finite")
    names = list(names) if names is not None else [f"target_{j}" for j in range(Y.shape[1])]
    if len(names) != Y.shape[1]:
        raise ValueError(f"{len(names)} names for {Y.shape[1]} target columns")
    tr, val, te = split_by_episode(ep, test_fraction, val_fraction, seed)
    my, sy = Y[tr | val].mean(0), Y[tr | val].std(0) + 1e-12
    Z = (Y - my) / sy
    lin_predict, lambdas = fit_linear(X[tr], Z[tr], X[val], Z[val])
    preds = {"linear": lin_predict(X[te])}
    mlp_info = None
    if mlp:
        mlp_predict, mlp_info = fit_mlp(X[tr], Z[tr], X[val], Z[val], seed=seed, device=device, **(mlp_kwargs or {}))
        preds["mlp"] = mlp_predict(X[te])
    quantities = {}
    for j, name in enumerate(names):
        q = {kind: metrics(Z[te, j], p[:, j]) for kind, p in preds.items()}
        q["ridge_lambda"] = lambdas[j]
        q["train_std"] = float(sy[j])
        quantities[name] = q
    return {"quantities": quantities, "mlp": mlp_info,
            "split": {"train_rows": int(tr.sum()), "val_rows": int(val.sum()), "test_rows": int(te.sum()),
                      "train_episodes": int(len(np.unique(ep[tr]))), "val_episodes": int(len(np.unique(ep[val]))),
                      "test_episodes": int(len(np.unique(ep[te])))},
            "predictions": {"true": Y[te], **{k: p * sy + my for k, p in preds.items()}}, "names": names}


def probe_episode_file(model, env: str, src, max_frames: int, seed: int = 0, *, batch_size: int = 512,
                       features: str = "projector", mlp: bool = True, mlp_kwargs: dict | None = None,
                       test_fraction: float = 0.2, device="cpu", progress: bool = False) -> tuple[dict, np.ndarray]:
    """Sample up to max_frames rows of an EpisodeFile (with a `state` column), embed them with the frozen
    model and fit the probes of env's state quantities: (fit_probes' result, the embeddings)."""
    rows, row_episode = sample_rows(src, max_frames, seed)
    names, Y = state_targets(env, src.cache["state"][rows])
    X = embed_frames(model, _Rows(src, rows), batch_size, features, progress=progress)
    result = fit_probes(X, Y, row_episode, names, test_fraction=test_fraction, seed=seed, mlp=mlp,
                        mlp_kwargs=mlp_kwargs, device=device)
    return result, X


def angle_errors(result: dict) -> dict:
    """Mean absolute angle error (radians) of every sin/cos pair, recombined with atan2."""
    names, P = result["names"], result["predictions"]
    out = {}
    for j, n in enumerate(names):
        if n.endswith("_sin") and n[:-4] + "_cos" in names:
            c = names.index(n[:-4] + "_cos")
            true = np.arctan2(P["true"][:, j], P["true"][:, c])
            for kind in ("linear", "mlp"):
                if kind in P:
                    d = np.angle(np.exp(1j * (np.arctan2(P[kind][:, j], P[kind][:, c]) - true)))
                    out.setdefault(n[:-4], {})[kind] = float(np.abs(d).mean())
    return out


def plot_probes(result: dict, path: str | Path, title: str = "", max_points: int = 3000, seed: int = 0) -> None:
    """Grid of predicted-vs-true scatter plots (one panel per quantity, linear and MLP), PNG written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .checkpoint import atomic_write
    names, P = result["names"], result["predictions"]
    n = len(names)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.1 * rows), dpi=100, squeeze=False)
    pick = np.random.default_rng(seed).permutation(len(P["true"]))[:max_points]
    for j, name in enumerate(names):
        ax = axes[j // cols][j % cols]
        y = P["true"][pick, j]
        for kind, color in (("linear", "tab:blue"), ("mlp", "tab:orange")):
            if kind in P:
                r2 = result["quantities"][name][kind]["r2"]
                ax.scatter(y, P[kind][pick, j], s=3, alpha=0.35, color=color, label=f"{kind} R²={r2:.3f}")
        lo, hi = float(y.min()), float(y.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("true", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
        ax.legend(fontsize=7, markerscale=3)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def format_table(result: dict) -> str:
    lines = [f"{'quantity':<16} {'lin R2':>8} {'lin MSE':>8} {'lin r':>7} {'MLP R2':>8} {'MLP MSE':>8} {'MLP r':>7}"]
    for name, q in result["quantities"].items():
        li, ml = q["linear"], q.get("mlp", {})
        lines.append(f"{name:<16} {li['r2']:>8.3f} {li['mse']:>8.4f} {li['pearson_r']:>7.3f} "
                     f"{ml.get('r2', math.nan):>8.3f} {ml.get('mse', math.nan):>8.4f} {ml.get('pearson_r', math.nan):>7.3f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lewm_fast.probe", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", required=True, help=f"names the state columns: {sorted(STATE_TABLES)} (others: generic)")
    p.add_argument("--checkpoint", required=True, help="lewm_fast checkpoint (.safetensors)")
    p.add_argument("--dataset", required=True, help="HDF5 episode file with a `state` column")
    p.add_argument("--max-frames", type=int, default=10000, help="frames sampled (uniformly over rows) for probing")
    p.add_argument("--features", choices=["projector", "cls"], default="projector",
                   help="projector output (the latent) or the pre-projector CLS token")
    p.add_argument("--test-fraction", type=float, default=0.2, help="fraction of episodes held out for test")
    p.add_argument("--no-mlp", action="store_true", help="linear probes only")
    p.add_argument("--mlp-steps", type=int, default=1500, help="max optimiser steps of the MLP probe")
    p.add_argument("--batch-size", type=int, default=512, help="frames per encoder batch")
    p.add_argument("--out", default="probe_out", help="output folder for probe.json and probe.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from .checkpoint import atomic_write, check_env, load_checkpoint
    from .cli import positive
    from .data import DatasetError, EpisodeFile
    for name in ("max_frames", "mlp_steps", "batch_size"):
        positive("--" + name.replace("_", "-"), getattr(args, name))
    if not 0 < args.test_fraction < 1:
        raise SystemExit(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    from .surprise import json_safe
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    try:
        src = EpisodeFile(args.dataset, columns=("state",))
    except DatasetError as e:
        raise SystemExit(f"probe: {e}") from None
    ckpt = load_checkpoint(args.checkpoint, device=device)
    check_env(ckpt, args.env, args.checkpoint)
    model = ckpt.model
    result, X = probe_episode_file(model, args.env, src, args.max_frames, args.seed, batch_size=args.batch_size,
                                   features=args.features, mlp=not args.no_mlp,
                                   mlp_kwargs={"max_steps": args.mlp_steps}, test_fraction=args.test_fraction,
                                   device=device, progress=not args.no_progress)
    out = Path(args.out)
    report = {"env": args.env, "checkpoint": str(args.checkpoint), "dataset": str(args.dataset),
              "features": args.features, "frames": int(len(X)), "embed_dim": int(X.shape[1]), "seed": args.seed,
              "mse_units": "standardised (training std of each target)",
              "quantities": result["quantities"], "angle_mean_abs_error_rad": angle_errors(result),
              "split": result["split"], "mlp": result["mlp"]}
    atomic_write(out / "probe.json", lambda tmp: Path(tmp).write_text(json.dumps(json_safe(report), indent=1, allow_nan=False)))
    plot_probes(result, out / "probe.png", title=f"{args.env} probes ({args.features}, {len(X)} frames)")
    print(format_table(result))
    if result["split"]["test_episodes"] < 5:
        print(f"warning: only {result['split']['test_episodes']} test episode(s); R^2 is relative to the test set's own "
              "variance and is unreliable with so few episodes (use a dataset with more episodes)")
    for name, e in report["angle_mean_abs_error_rad"].items():
        print(f"{name}: mean |angle error| linear {e['linear']:.3f} rad" + (f", MLP {e['mlp']:.3f} rad" if "mlp" in e else ""))
    print(f"wrote {out / 'probe.json'} and {out / 'probe.png'}")
    return report


if __name__ == "__main__":
    import sys

    from lewm_fast.cli import run_cli
    sys.exit(run_cli(main, prog="lewm_fast.probe"))
