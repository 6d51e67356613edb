"""Violation-of-expectation ("surprise") test for a trained LeWM (paper section on surprise).

Surprise at model step t = mean over the D latent dimensions of (prediction - observation)^2, where the
prediction comes from the model's history window of observed frames t-H .. t-1 and their action blocks
(the training objective, evaluated one step ahead), and the observation is the encoding of frame t.
Frames are taken every `frameskip` raw env steps; action block k is the z-scored raw actions
k*fs .. (k+1)*fs-1 (z-scored per raw dimension with the checkpoint's stats, exactly as training did).

Three conditions per episode, identical up to the perturbation at model step K (raw step K * frameskip):
- normal:   the trajectory as recorded (from a dataset) or rolled out (env + its collection policy);
- teleport: at raw step K*fs the env is set to a state drawn from its own reset distribution (agent and
            objects at new valid positions); the same raw actions as the normal trajectory are then
            replayed through the physics and frames rendered. So frames before K are the normal ones and
            everything after K is physically consistent; only the jump itself violates the dynamics.
            Without an env (`teleport="splice"`), frames and actions from K on come from another episode.
- colour:   from step K on, the objects drawn in other colours by the env's own renderer (PushT: block and
            agent; TwoRoom: the agent), physics and positions unchanged: frame = recorded frame + (recoloured
            render - default render) of the recorded state, so everything else (contact markers, resizing)
            stays as recorded. `--colour tint` instead multiplies whole frames by an RGB tint.

    python -m lewm_fast.surprise --env pusht --checkpoint run/model.safetensors [--dataset pusht.h5]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import action_blocks

CONDITIONS = ("normal", "teleport", "colour")
DEFAULT_TINT = (1.0, 0.55, 0.55)   # multiplicative RGB factors: a clearly visible red cast
# object recolouring per env (outline colours; chosen once, far from the defaults, not tuned on results)
OBJECT_COLOURS = {"pusht": {"block": (200, 80, 60), "agent": (230, 160, 30)}, "tworoom": {"agent": (40, 90, 230)}}


@dataclass
class Trajectory:
    """One episode at the model's rate: frames (n, h, w, 3) uint8 at raw steps 0, fs, 2fs, ...;
    raw_actions (L, A) with L = (n - 1) * fs + 1 (row r is the action taken from raw step r; the last row
    is unused and may be NaN); states (L, S) raw env states or None."""
    frames: np.ndarray
    raw_actions: np.ndarray
    states: np.ndarray | None = None
    source: str = ""


# ----------------------------------------------------------------------------------------------
# Inputs in the model's format
# ----------------------------------------------------------------------------------------------
def _as_chw(frames) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if x.ndim != 4:
        raise ValueError(f"frames must be (n, h, w, 3) or (n, 3, h, w), got shape {tuple(x.shape)}")
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise ValueError(f"frames must have 3 colour channels, got shape {tuple(x.shape)}")
    return x


def json_safe(x):
    """Nested dicts/lists/tuples with NaN and inf floats replaced by None, so the file is strict JSON."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def model_device(model) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.inference_mode()
def encode_frames(model, frames, batch_size: int = 256, precision: str = "fp32") -> torch.Tensor:
    """(n, h, w, 3) or (n, 3, h, w) uint8 frames -> (n, D) float32 embeddings, in batches."""
    x = _as_chw(frames)
    dev = model_device(model)
    out = []
    for i in range(0, len(x), batch_size):
        with _autocast(dev, precision):
            out.append(model.encode(x[i:i + batch_size].to(dev)).float())
    return torch.cat(out) if out else torch.zeros(0, model.cfg.embed_dim, device=dev)


# ----------------------------------------------------------------------------------------------
# Surprise
# ----------------------------------------------------------------------------------------------
@torch.inference_mode()
def surprise_series(model, frames, blocks, history: int | None = None, batch_size: int = 256,
                    precision: str = "fp32") -> np.ndarray:
    """Per-step surprise of one episode.

    frames: (n, h, w, 3) uint8 at the model's rate; blocks: (>= n - 1, fs * A) normalised action blocks
    (see action_blocks). Returns (n,) float64: entry t >= 1 is mean_D (pred_t - enc(frame_t))^2 with pred_t
    = predict(window of frames max(0, t-H) .. t-1 and their blocks)[last]; entry 0 is NaN (no history).
    H defaults to the predictor window cfg.num_frames (what training used: history 3 -> 3 context frames).
    """
    cfg = model.cfg
    H = int(history or cfg.num_frames)
    if not 1 <= H <= cfg.num_frames:
        raise ValueError(f"history {H} must be in [1, num_frames={cfg.num_frames}]")
    x = _as_chw(frames)
    n = len(x)
    if n < 2:
        raise ValueError(f"an episode needs at least 2 frames at the model's rate to predict one, got {n}")
    b = torch.as_tensor(np.asarray(blocks, dtype=np.float32))
    if b.ndim != 2 or b.shape[1] != cfg.action_dim:
        raise ValueError(f"action blocks must be (n, {cfg.action_dim}) (frameskip {cfg.frameskip} x env action dim "
                         f"{cfg.env_action_dim}), got shape {tuple(b.shape)}")
    if len(b) < n - 1:
        raise ValueError(f"{n} frames need at least {n - 1} action blocks, got {len(b)}")
    dev = model_device(model)
    emb = encode_frames(model, x, batch_size, precision)                     # (n, D)
    with _autocast(dev, precision):
        act = model.embed_actions(b[None, :n - 1].to(dev)).float()[0]        # (n-1, D)
    D = emb.shape[1]
    preds = torch.empty(n - 1, D, device=dev)
    # targets t < H see a shorter window (positions 0..t-1, as the causal predictor did in training)
    for t in range(1, min(H, n)):
        with _autocast(dev, precision):
            preds[t - 1] = model.predict(emb[None, :t], act[None, :t])[0, -1].float()
    if n > H:   # all full windows in batches: window for target t is frames t-H .. t-1
        idx = torch.arange(H, n, device=dev)[:, None] + torch.arange(-H, 0, device=dev)[None]   # (n-H, H)
        for i in range(0, len(idx), batch_size):
            w = idx[i:i + batch_size]
            with _autocast(dev, precision):
                preds[w[:, -1]] = model.predict(emb[w], act[w])[:, -1].float()
    err = (preds - emb[1:]).pow(2).mean(-1)
    return np.concatenate([[np.nan], err.double().cpu().numpy()])


def trajectory_surprise(model, traj: Trajectory, action_stats: dict | None, **kw) -> np.ndarray:
    """surprise_series for a Trajectory, normalising its raw actions with action_stats {'mean', 'std'}."""
    fs = model.cfg.frameskip
    if len(traj.raw_actions) < (len(traj.frames) - 1) * fs:
        raise ValueError(f"{len(traj.frames)} frames at frameskip {fs} need {(len(traj.frames) - 1) * fs} raw actions, "
                         f"got {len(traj.raw_actions)}")
    s = action_stats or {}
    blocks = action_blocks(traj.raw_actions, fs, s.get("mean"), s.get("std"))
    return surprise_series(model, traj.frames, blocks, **kw)


# ----------------------------------------------------------------------------------------------
# Perturbations
# ----------------------------------------------------------------------------------------------
def tint_frames(frames: np.ndarray, start: int, factors=DEFAULT_TINT) -> np.ndarray:
    """Copy of (n, h, w, 3) uint8 frames with frames[start:] multiplied per channel by `factors`."""
    f = np.asarray(factors, dtype=np.float32)
    if f.shape != (3,) or (f < 0).any():
        raise ValueError(f"tint needs 3 non-negative RGB factors, got {factors}")
    out = np.array(frames, copy=True)
    out[start:] = np.clip(out[start:].astype(np.float32) * f, 0, 255).round().astype(np.uint8)
    return out


def recolour_frames(env, traj: Trajectory, start: int, frameskip: int, colours: dict) -> np.ndarray:
    """traj.frames with frames[start:] showing the objects in `colours` (env.colours semantics): each frame
    gets the difference between the env's recoloured and default renders of its recorded state, so only
    object pixels change and physics, positions and everything else are the recording's."""
    if traj.states is None:
        raise ValueError("object recolouring needs the recorded states (a dataset with a 'state' column, or "
                         "env-rolled episodes); use --colour tint otherwise")
    if not hasattr(env, "colours"):
        raise ValueError(f"{type(env).__name__} cannot recolour objects; use --colour tint")
    out = np.array(traj.frames, copy=True)
    for t in range(start, len(out)):
        state = traj.states[t * frameskip]
        try:
            env.set_state(state, settle=False)   # exact placement: the same state for both renders
        except TypeError:
            env.set_state(state)
        env.colours = None
        default = fit_frames(env.render()[None], out.shape[1:])[0].astype(np.int16)
        env.colours = colours
        try:
            recoloured = fit_frames(env.render()[None], out.shape[1:])[0].astype(np.int16)
        finally:
            env.colours = None
        out[t] = np.clip(out[t].astype(np.int16) + recoloured - default, 0, 255).astype(np.uint8)
    return out


def fit_frames(frames: np.ndarray, shape: tuple) -> np.ndarray:
    """Rendered (n, h, w, 3) frames at the recorded frames' (H, W, 3), resized exactly as `collect --resolution`
    stores them (lewm_fast.collect.fit_frames) when they differ."""
    from .collect import fit_frames as fit_square

    if frames.shape[1:] == tuple(shape):
        return frames
    if frames.shape[-1] != shape[-1] or shape[0] != shape[1]:
        raise ValueError(f"env renders {frames.shape[1:]} frames but the trajectory has {tuple(shape)}")
    return fit_square(frames, shape[0])


def make_env_like(name: str, size: int | None = None):
    """The env, rendering at `size` px when its constructor can (PushT: resolution=, MuJoCo envs: image_size=);
    otherwise at its default size (frames are then resized by fit_frames)."""
    from .envs import make
    if size and size != 224:
        for kw in ("resolution", "image_size"):
            try:
                return make(name, **{kw: size})
            except TypeError:
                continue
    return make(name)


def teleport_by_env(env, traj: Trajectory, k: int, frameskip: int, new_state, reset_seed: int = 0) -> Trajectory:
    """Frames 0..k-1 of traj, then: env set to `new_state` at raw step k*fs, traj's raw actions k*fs.. replayed
    through the env, frames rendered every fs steps. Same length and actions as traj."""
    n = len(traj.frames)
    if not 1 <= k < n:
        raise ValueError(f"perturbation step {k} must be in [1, {n - 1}] for an episode of {n} model steps")
    env.reset(seed=reset_seed)   # a fresh episode (goal etc.); the state is overwritten next
    env.set_state(new_state)
    frames = [env.render()]
    for r in range(k * frameskip, (n - 1) * frameskip):
        env.step(np.asarray(traj.raw_actions[r], dtype=np.float32))
        if (r + 1) % frameskip == 0:
            frames.append(env.render())
    new = fit_frames(np.stack(frames), traj.frames.shape[1:])
    return Trajectory(np.concatenate([traj.frames[:k], new]), traj.raw_actions, None, traj.source + "+teleport")


def teleport_by_splice(traj: Trajectory, other: Trajectory, k: int, frameskip: int, start: int = 0) -> Trajectory:
    """Frames and raw actions from model step k on taken from `other` (from its step `start`): a jump to another
    episode's world state, physically consistent afterwards. Used when no env is available."""
    n = len(traj.frames)
    if not 1 <= k < n:
        raise ValueError(f"perturbation step {k} must be in [1, {n - 1}] for an episode of {n} model steps")
    need = n - k
    if start + need > len(other.frames):
        raise ValueError(f"splice source has {len(other.frames)} steps; needs {start + need}")
    frames = np.concatenate([traj.frames[:k], other.frames[start:start + need]])
    fs = frameskip
    acts = np.concatenate([traj.raw_actions[:k * fs], other.raw_actions[start * fs:(start + need - 1) * fs + 1]])
    return Trajectory(frames, acts, None, traj.source + "+splice:" + other.source)


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------
def _paired_tests(x: np.ndarray, y: np.ndarray) -> dict:
    """Paired t-test and Wilcoxon signed-rank (two-sided) of x vs y over episodes."""
    from scipy import stats
    out = {"n": int(len(x)), "t": math.nan, "t_p": math.nan, "wilcoxon_p": math.nan}
    if len(x) >= 2 and np.any(x != y):
        r = stats.ttest_rel(x, y)
        out["t"], out["t_p"] = float(r.statistic), float(r.pvalue)
        try:
            out["wilcoxon_p"] = float(stats.wilcoxon(x, y).pvalue)
        except ValueError:
            pass
    return out


def summarize(series: dict[str, np.ndarray], k: int) -> dict:
    """series: condition -> (episodes, n) surprise. Per condition: mean surprise before K (steps 1..K-1), at K,
    after K (K+1..end); ratios to the normal condition's same statistic; paired tests vs normal."""
    if "normal" not in series:
        raise ValueError("summarize needs the 'normal' condition")
    def parts(s):
        return {"before": np.nanmean(s[:, 1:k], axis=1) if k > 1 else np.full(len(s), np.nan),
                "at": s[:, k], "after": np.nanmean(s[:, k + 1:], axis=1) if s.shape[1] > k + 1 else np.full(len(s), np.nan)}
    base = parts(series["normal"])
    out = {}
    for cond, s in series.items():
        p = parts(s)
        row = {name: float(np.mean(v)) for name, v in p.items()}
        for name in ("at", "after"):
            row[f"ratio_{name}"] = float(np.mean(p[name]) / np.mean(base[name])) if np.mean(base[name]) > 0 else math.nan
            if cond != "normal":
                row[f"test_{name}"] = _paired_tests(p[name], base[name])
        row["per_episode_at"] = p["at"].tolist()
        out[cond] = row
    return out


def format_table(summary: dict, k: int) -> str:
    lines = [f"{'condition':<10} {'before K':>10} {'at K=' + str(k):>10} {'after K':>10} {'x normal@K':>11} "
             f"{'x normal>K':>11} {'t-test p@K':>11} {'wilcoxon p@K':>13}"]
    for cond, r in summary.items():
        t = r.get("test_at", {})
        lines.append(f"{cond:<10} {r['before']:>10.4g} {r['at']:>10.4g} {r['after']:>10.4g} {r['ratio_at']:>11.3f} "
                     f"{r['ratio_after']:>11.3f} {t.get('t_p', float('nan')):>11.3g} "
                     f"{t.get('wilcoxon_p', float('nan')):>13.3g}")
    return "\n".join(lines)


def plot_surprise(series: dict[str, np.ndarray], k: int, path: str | Path, title: str = "") -> None:
    """Mean surprise over episodes (band: standard error) per condition vs model step; PNG written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .checkpoint import atomic_write
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for cond, s in series.items():
        steps = np.arange(1, s.shape[1])              # step 0 has no prediction
        m = s[:, 1:].mean(axis=0)
        se = s[:, 1:].std(axis=0) / max(1.0, math.sqrt(len(s)))
        ax.plot(steps, m, marker="o", ms=3, label=cond)
        ax.fill_between(steps, np.maximum(m - se, m * 0.05), m + se, alpha=0.2)   # clipped > 0 for the log axis
    ax.axvline(k, color="k", ls="--", lw=1, label=f"perturbation (step {k})")
    ax.set_yscale("log")
    ax.set_xlabel("model step (frameskip env steps each)")
    ax.set_ylabel("surprise: latent prediction MSE")
    ax.set_title(title or f"Surprise, {len(next(iter(series.values())))} episodes")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Trajectory sources
# ----------------------------------------------------------------------------------------------
def dataset_trajectories(path, frameskip: int, n_episodes: int, min_steps: int, seed: int = 0,
                         prefer: np.ndarray | None = None) -> list[Trajectory]:
    """Up to n_episodes episodes with >= min_steps model steps, chosen at random (episodes in `prefer` first)."""
    from .data import EpisodeFile, open_h5, read_column
    src = EpisodeFile(path)
    with open_h5(path) as f:
        states = read_column(f, "state") if "state" in f else None
    with_state = states is not None
    n_steps = (src.ep_len - 1) // frameskip + 1
    ok = np.flatnonzero(n_steps >= min_steps)
    if len(ok) == 0:
        raise ValueError(f"{path}: no episode has {min_steps} model steps (longest: {int(n_steps.max())} at frameskip "
                         f"{frameskip}, i.e. {(min_steps - 1) * frameskip + 1} raw steps needed)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(ok)
    if prefer is not None:
        order = np.concatenate([order[np.isin(order, prefer)], order[~np.isin(order, prefer)]])
    out = []
    for e in sorted(order[:n_episodes]):
        n = int(n_steps[e])
        off = int(src.ep_offset[e])
        L = (n - 1) * frameskip + 1
        out.append(Trajectory(src.pixels(off + frameskip * np.arange(n)), src.cache["action"][off:off + L],
                              states[off:off + L] if with_state else None, f"{Path(path).name}#{e}"))
    return out


def env_trajectories(env_name: str, n_episodes: int, n_steps: int, frameskip: int, seed: int = 0,
                     env=None) -> list[Trajectory]:
    """Roll n_episodes of n_steps model steps with the env's collection policy (random actions if it has none)."""
    from .envs import make
    env = env or make(env_name)
    try:
        from .policies import make_policy
        policy_for = lambda s: make_policy(env_name, env, seed=s)   # noqa: E731
        policy_for(seed)
    except (ImportError, ValueError) as e:
        print(f"[surprise] no collection policy for {env_name} ({e}); using uniform random actions", file=sys.stderr)
        policy_for = None
    out = []
    L = (n_steps - 1) * frameskip + 1
    for i in range(n_episodes):
        obs, info = env.reset(seed=seed + i)
        if policy_for is not None:
            pol = policy_for(seed + i)
            pol.reset(obs, info)
            act = lambda o, inf: pol.act(o, inf)   # noqa: E731
        else:
            rng = np.random.default_rng(seed + i)
            lo, hi = env.action_space.low, env.action_space.high
            act = lambda o, inf: rng.uniform(lo, hi).astype(np.float32)   # noqa: E731
        frames, actions, states = [env.render()], [], [obs["state"]]
        for r in range(L - 1):
            a = np.asarray(act(obs, info), dtype=np.float32)
            obs, _, _, _, info = env.step(a)
            actions.append(a)
            states.append(obs["state"])
            if (r + 1) % frameskip == 0:
                frames.append(env.render())
        actions.append(np.full_like(actions[0], np.nan))
        out.append(Trajectory(np.stack(frames), np.asarray(actions), np.asarray(states), f"{env_name}:seed{seed + i}"))
    return out


# ----------------------------------------------------------------------------------------------
# Experiment
# ----------------------------------------------------------------------------------------------
def run_experiment(model, trajs: list[Trajectory], k: int, action_stats: dict | None, env=None,
                   teleport: str = "env", tint=DEFAULT_TINT, seed: int = 0, history: int | None = None,
                   precision: str = "fp32", progress: bool = True,
                   object_colours: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Surprise series of every trajectory under the three conditions.

    Returns ({condition: (episodes, n) array}, diagnostics), all trajectories cut to a common length n.
    teleport='env' needs `env` (teleport targets are states from fresh resets of the env); 'splice' takes the
    continuation from another trajectory. object_colours: the colour condition recolours objects through `env`
    (recolour_frames) instead of tinting whole frames. diagnostics["render_mismatch"]: per episode, the mean |difference|
    (grey levels) between the env's re-render of the recorded state at step K and the recorded frame, i.e.
    how far teleported frames could differ in style from the data for reasons other than the teleport."""
    from tqdm import tqdm
    fs = model.cfg.frameskip
    n = min(len(t.frames) for t in trajs)
    if not 1 <= k < n - 1:
        raise ValueError(f"--perturb-step {k} must leave at least one step after it: need 1 <= K < {n - 1} "
                         f"(shortest episode has {n} model steps)")
    if teleport == "splice" and len(trajs) < 2:
        raise ValueError("teleport='splice' needs at least 2 episodes")
    if (teleport == "env" or object_colours) and env is None:
        raise ValueError("teleport='env' and object recolouring need an env")
    trajs = [Trajectory(t.frames[:n], t.raw_actions[:(n - 1) * fs + 1], t.states, t.source) for t in trajs]
    rng = np.random.default_rng(seed)
    series = {c: [] for c in CONDITIONS}
    mismatch = []
    for i, tr in enumerate(tqdm(trajs, desc="surprise", disable=not progress)):
        if teleport == "env":
            target = env.reset(seed=int(rng.integers(2**31)))[0]["state"]
            tele = teleport_by_env(env, tr, k, fs, target, reset_seed=int(rng.integers(2**31)))
            if tr.states is not None:
                # honesty check: does the env's renderer reproduce the recorded frame of this state?
                env.set_state(tr.states[k * fs])
                frame = fit_frames(env.render()[None], tr.frames.shape[1:])[0]
                mismatch.append(float(np.abs(frame.astype(np.int16) - tr.frames[k]).mean()))
        else:
            other = trajs[(i + 1 + int(rng.integers(len(trajs) - 1))) % len(trajs)]
            tele = teleport_by_splice(tr, other, k, fs, start=int(rng.integers(0, len(other.frames) - (n - k) + 1)))
        coloured = (recolour_frames(env, tr, k, fs, object_colours) if object_colours
                    else tint_frames(tr.frames, k, tint))
        cond_traj = {"normal": tr, "teleport": tele,
                     "colour": Trajectory(coloured, tr.raw_actions, tr.states, tr.source)}
        for c, t in cond_traj.items():
            series[c].append(trajectory_surprise(model, t, action_stats, history=history, precision=precision))
    return {c: np.stack(v) for c, v in series.items()}, {"render_mismatch": np.asarray(mismatch)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lewm_fast.surprise", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", required=True, help="pusht, tworoom, cube, reacher (teleports and renders with it)")
    p.add_argument("--checkpoint", required=True, help="lewm_fast checkpoint (.safetensors) with action stats")
    p.add_argument("--dataset", default=None, help="HDF5 episode file; without it, episodes are rolled out in the env")
    p.add_argument("--episodes", type=int, default=20, help="episodes (paired samples for the tests)")
    p.add_argument("--perturb-step", type=int, default=None,
                   help="model step K of the first perturbed frame (raw step K x frameskip); default num_frames + 2")
    p.add_argument("--steps", type=int, default=None, help="model steps per env-rolled episode (default K + 8)")
    p.add_argument("--teleport", choices=["env", "splice"], default="env",
                   help="env: set_state to a fresh reset state and replay the actions; splice: continue with "
                        "another episode's frames (no env needed, dataset only)")
    p.add_argument("--colour", choices=["auto", "objects", "tint"], default="auto",
                   help="colour change: objects = recolour objects through the env's renderer (PushT, TwoRoom); "
                        "tint = multiply whole frames by --tint; auto = objects where the env can, else tint")
    p.add_argument("--object-colours", default=None,
                   help=f"JSON of object -> RGB for --colour objects (default per env: {OBJECT_COLOURS})")
    p.add_argument("--tint", default=",".join(map(str, DEFAULT_TINT)), help="RGB factors of the colour change")
    p.add_argument("--history", type=int, default=None, help="context frames per prediction (default num_frames)")
    p.add_argument("--out", default="surprise_out", help="output folder for surprise.json and surprise.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from .checkpoint import atomic_write, check_env, load_checkpoint
    from .cli import positive
    from .envs import ENV_IDS
    if args.env.lower() not in ENV_IDS:
        raise SystemExit(f"unknown env {args.env!r}; choose one of {sorted(ENV_IDS)}")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    positive("--episodes", args.episodes)
    positive("--steps", args.steps)
    positive("--history", args.history)
    ckpt = load_checkpoint(args.checkpoint, device=device)
    check_env(ckpt, args.env, args.checkpoint)
    model, cfg = ckpt.model, ckpt.config
    k = args.perturb_step if args.perturb_step is not None else cfg.num_frames + 2
    if k < 1:
        raise SystemExit(f"--perturb-step must be >= 1, got {k}")
    stats = ckpt.stats.get("action")
    if stats is None:
        raise SystemExit(f"{args.checkpoint} carries no action normalisation stats; "
                         "re-save it with save_checkpoint(..., stats={'action': ...})")
    stats = {kk: v.cpu().numpy() for kk, v in stats.items()}
    if len(stats["mean"]) != cfg.env_action_dim:
        raise SystemExit(f"checkpoint action stats have {len(stats['mean'])} dims; its config says env_action_dim "
                         f"{cfg.env_action_dim}")
    try:
        tint = tuple(float(x) for x in args.tint.split(","))
    except ValueError:
        tint = ()
    if len(tint) != 3 or min(tint) < 0:
        raise SystemExit(f"--tint needs three non-negative RGB factors like 1,0.55,0.55; got {args.tint!r}")
    env_name = args.env.lower()
    mode = args.colour if args.colour != "auto" else ("objects" if env_name in OBJECT_COLOURS else "tint")
    object_colours = None
    if mode == "objects":
        if env_name not in OBJECT_COLOURS:
            raise SystemExit(f"--colour objects: {args.env} cannot recolour objects (only {sorted(OBJECT_COLOURS)}); "
                             "use --colour tint")
        try:
            object_colours = json.loads(args.object_colours) if args.object_colours else OBJECT_COLOURS[env_name]
        except json.JSONDecodeError as e:
            raise SystemExit(f"--object-colours is not valid JSON ({e}): {args.object_colours!r}")
        if not isinstance(object_colours, dict) or not object_colours:
            raise SystemExit(f"--object-colours must be a JSON object like {json.dumps(OBJECT_COLOURS[env_name])}")
    env = None
    if args.dataset:
        from .data import EpisodeFile, split_episodes
        src = EpisodeFile(args.dataset)
        if args.teleport == "env" or object_colours:
            env = make_env_like(args.env, src.image_shape[0])
        held_out = split_episodes(len(src.ep_len))[1]   # train.py's default split: prefer episodes it did not train on
        trajs = dataset_trajectories(args.dataset, cfg.frameskip, args.episodes, k + 2, args.seed, prefer=held_out)
    else:
        if args.teleport != "env":
            raise SystemExit("--teleport splice needs --dataset (it continues with another recorded episode)")
        env = make_env_like(args.env)
        trajs = env_trajectories(args.env, args.episodes, args.steps or k + 8, cfg.frameskip, args.seed, env=env)
    if trajs[0].raw_actions.shape[1] != cfg.env_action_dim:
        raise SystemExit(f"episodes have {trajs[0].raw_actions.shape[1]}-d actions; the model expects {cfg.env_action_dim}")
    series, diag = run_experiment(model, trajs, k, stats, env=env, teleport=args.teleport, tint=tint, seed=args.seed,
                                  history=args.history, precision=args.precision, progress=not args.no_progress,
                                  object_colours=object_colours)
    mismatch = diag["render_mismatch"]
    summary = summarize(series, k)
    out = Path(args.out)
    result = {"env": args.env, "checkpoint": str(args.checkpoint), "dataset": args.dataset, "perturb_step": k,
              "frameskip": cfg.frameskip, "history": args.history or cfg.num_frames, "teleport": args.teleport,
              "colour_change": mode, "object_colours": object_colours, "tint": tint if mode == "tint" else None,
              "seed": args.seed, "episodes": [t.source for t in trajs],
              "surprise_definition": "mean over latent dims of (predicted - encoded next frame)^2",
              "render_mismatch_mean_abs": float(mismatch.mean()) if len(mismatch) else None,
              "summary": summary, "series": {c: s.tolist() for c, s in series.items()}}
    atomic_write(out / "surprise.json", lambda tmp: Path(tmp).write_text(json.dumps(json_safe(result), indent=1, allow_nan=False)))
    plot_surprise(series, k, out / "surprise.png", title=f"{args.env}: surprise, {len(trajs)} episodes (colour: "
                  f"{'objects' if object_colours else 'tint ' + args.tint}, teleport: {args.teleport})")
    print(format_table(summary, k))
    if len(mismatch):
        print(f"renderer check: env re-render vs recorded frame, mean |diff| = {mismatch.mean():.3f} grey levels"
              + ("  (LARGE: teleported frames differ in style from the data)" if mismatch.mean() > 2 else ""))
    print(f"wrote {out / 'surprise.json'} and {out / 'surprise.png'}")
    return result


if __name__ == "__main__":
    from lewm_fast.cli import run_cli
    sys.exit(run_cli(main, prog="lewm_fast.surprise"))
