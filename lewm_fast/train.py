"""Train LeWM on an HDF5 episode file: `python -m lewm_fast.train --data FILE.h5 --out runs/NAME`.

Plain PyTorch (spec B): clips of 4 frames (history 3 + 1 target) with frameskip 5; loss = next-
embedding MSE (teacher forcing, targets not detached) + 0.09 SIGReg on the frame embeddings; AdamW
(lr 5e-5, wd 1e-3), 1% linear warm-up then cosine to 0, grad-norm clip 1.0, batch 128, bf16 autocast
on CUDA. Runs unchanged under `torchrun --nproc_per_node N` (DDP; SIGReg over the global batch; the
batch size is per rank).

Writes to --out: `last.pt` (full training state, atomic, every --ckpt-every steps and each epoch;
`--resume` continues from it exactly: same data order, RNG states, optimiser and schedule),
`model.safetensors` (self-describing model checkpoint, see lewm_fast.checkpoint), `metrics.jsonl`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .checkpoint import atomic_write, save_checkpoint
from .cli import positive
from .data import PathLock, make_datasets, present_columns
from .validate import finite_number, parse_json
from .model import LeWM, LeWMConfig, count_parameters
from .sigreg import SIGReg

PRESETS = {
    "paper": {},                                   # the paper's model (~18 M parameters)
    "small": dict(image_size=64, patch_size=16, embed_dim=128, enc_depth=4, enc_heads=4, enc_mlp_dim=256,
                  proj_hidden_dim=512, pred_depth=3, pred_heads=4, pred_dim_head=32, pred_mlp_dim=512),
    # PushT on a CPU (results/pusht-recipe): 96 px frames in 12-px patches (8x8 tokens) keep the 30-px agent
    # at ~6 px and the T over many patches; small's 16 tokens of 64 px could not place the agent (probe R^2 0.55)
    "pusht-cpu": dict(image_size=96, patch_size=12, embed_dim=128, enc_depth=4, enc_heads=4, enc_mlp_dim=512,
                      proj_hidden_dim=512, pred_depth=4, pred_heads=4, pred_dim_head=32, pred_mlp_dim=512),
    # Reacher and Cube on a CPU (results/reacher-recipe, results/cube-recipe): 64 px frames in 8-px patches (8x8
    # tokens, as pusht-cpu) so the 1-2 px wide Reacher links and the ~3 px cube span several tokens
    "mujoco-cpu": dict(image_size=64, patch_size=8, embed_dim=128, enc_depth=4, enc_heads=4, enc_mlp_dim=512,
                       proj_hidden_dim=512, pred_depth=4, pred_heads=4, pred_dim_head=32, pred_mlp_dim=512),
    "tiny": dict(image_size=32, patch_size=8, embed_dim=32, enc_depth=2, enc_heads=2, enc_mlp_dim=64,
                 proj_hidden_dim=64, pred_depth=2, pred_heads=4, pred_dim_head=8, pred_mlp_dim=64),
}


def lewm_loss(model: LeWM, pixels: torch.Tensor, actions: torch.Tensor, sigreg: SIGReg,
              sigreg_weight: float = 0.09, generator: torch.Generator | None = None,
              history: int | None = None, target_grad: float = 1.0,
              bank: "SigregBank | None" = None,
              heads: "dict[str, tuple[torch.nn.Module, float]] | None" = None,
              state: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """pixels (B, T, 3, h, w), actions (B, T, A) -> loss terms. Prediction k (from frames <= k and actions
    <= k) is compared with embedding k+1; every position is supervised; targets are not detached.

    target_grad g scales the prediction loss's gradient through the target embeddings (value unchanged):
    1 = the paper (targets not detached), 0 = stop-gradient targets. Through the targets the encoder is pulled
    toward whatever the predictor can already predict, i.e. away from features that are hard to predict.

    bank: a SigregBank whose rows join SIGReg's sample (see lewm_fast.sigreg); this batch's embeddings are
    pushed into it afterwards.

    heads (options, not the paper's): {name: (ActionHead, weight)}; weight * MSE of the head's estimate of
    action block k (k = 1 .. T-2) is added to the loss (key NAME_loss). "idm" (inverse dynamics) reads
    embeddings k-1, k, k+1 (the earlier frame gives the velocity the action changed), so the latent must hold
    what the action moves (the agent, each joint); "bc" (behaviour cloning) reads k-1 and k only, so the latent
    must hold what the data's policy acts on (PushT's expert: the block's whole pose). Next-embedding prediction
    alone demands neither. "recon" (a FrameDecoder) reads each frame's embedding and is scored by the MSE of
    its picture against the frame itself as the encoder sees it (normalised), area-averaged to the decoder's
    size: the latent must hold what the frame shows, the pose of every object included. "state" (a Linear
    map, privileged: the simulator's state is not a pixel) is scored by the MSE against `state`, (B, T, Q)
    standardised state targets of each frame (StateTargets): the latent must hold the state linearly.

    history H (default T-1): clips longer than H+1 frames add multi-step targets: after the teacher-forced
    window over frames 0..H-1, the predictor rolls out autoregressively as the planner does (sliding windows of
    H frames, its own predictions fed back) to frames H+1..T-1; pred_loss is the mean over the T-H prediction
    steps of each step's MSE (one step: exactly the single-step loss)."""
    emb = model.encode(pixels)                                   # (B, T, D)
    act_emb = model.embed_actions(actions)                       # (B, T, D)
    T = emb.shape[1]
    H = T - 1 if history is None else history
    if not 1 <= H < T:
        raise ValueError(f"history {H} needs clips of more than {H} frames, got {T}")
    pred = model.predict(emb[:, :H], act_emb[:, :H])             # (B, H, D)
    target = emb if target_grad == 1 else target_grad * emb + (1 - target_grad) * emb.detach()
    step_losses = [F.mse_loss(pred.float(), target[:, 1:H + 1].float())]
    frames = list(emb[:, :H].unbind(1)) + [pred[:, -1]]
    for k in range(H + 1, T):                                    # predict frame k from the window k-H .. k-1
        nxt = model.predict(torch.stack(frames[k - H:k], dim=1), act_emb[:, k - H:k])[:, -1]
        step_losses.append(F.mse_loss(nxt.float(), target[:, k].float()))
        frames.append(nxt)
    pred_loss = torch.stack(step_losses).mean()
    sig = sigreg(emb.transpose(0, 1), generator=generator, bank=None if bank is None else bank.rows)
    if bank is not None:
        bank.push(emb.detach().flatten(0, 1))
    terms = {"loss": pred_loss + sigreg_weight * sig, "pred_loss": pred_loss, "sigreg": sig}
    action_heads = sorted(set(heads or {}) & set(ACTION_HEAD_FRAMES))
    if action_heads and T < 3:
        raise ValueError(f"the action-head terms {action_heads} need clips of at least 3 frames, got {T}")
    for name, (head, weight) in (heads or {}).items():
        if name == "recon":
            head_loss = F.mse_loss(head(emb).float(), recon_target(model.normalize_pixels(pixels), head.size))
        elif name == "state":
            if state is None:
                raise ValueError("the state head needs the clips' state targets (state=)")
            head_loss = F.mse_loss(head(emb).float(), state.float())
        else:
            # action k moves frame k to frame k+1 (the dataset's zero-filled last action is never a target here)
            inputs = (emb[:, :-2], emb[:, 1:-1], emb[:, 2:])[:ACTION_HEAD_FRAMES[name]]
            head_loss = F.mse_loss(head(*inputs).float(), actions[:, 1:-1].float())
        terms["loss"] = terms["loss"] + weight * head_loss
        terms[f"{name}_loss"] = head_loss
    return terms


class SigregBank:
    """FIFO of the last `size` frame embeddings (detached, fp32) for SIGReg's sample (--sigreg-bank)."""

    def __init__(self, size: int, rows: torch.Tensor | None = None):
        self.size = size
        self.rows = rows if rows is not None else torch.zeros(0, 0)

    def push(self, emb: torch.Tensor) -> None:
        emb = emb.float()
        rows = emb if self.rows.numel() == 0 else torch.cat([self.rows.to(emb.device), emb])
        self.rows = rows[-self.size:]


# training-only action heads (--idm-weight, --bc-weight): how many embeddings from k-1 on each reads for block k
ACTION_HEAD_FRAMES = {"idm": 3, "bc": 2}
TRAINING_HEADS = (*ACTION_HEAD_FRAMES, "recon", "state")   # every training-only head, each with its --NAME-weight


class ActionHead(torch.nn.Module):
    """Training-only MLP: action block k from `frames` consecutive frame embeddings starting at k-1."""

    def __init__(self, dim: int, action_dim: int, frames: int, hidden: int = 512):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(frames * dim, hidden), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, action_dim))

    def forward(self, *z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat(z, dim=-1))


class FrameDecoder(torch.nn.Module):
    """Training-only decoder (--recon-weight): one frame embedding (D) -> the frame at size x size, in the
    encoder's normalised pixel units. A linear map to a (size/8)^2 grid of 64 channels, then three stride-2 transposed
    convolutions (64 -> 32 -> 16 -> 3 channels); about 10 M multiply-adds per 48 px frame, a fifth of the
    pusht-cpu encoder's."""

    def __init__(self, dim: int, size: int = 48):
        super().__init__()
        self.check_size(size)
        self.size, self.base = size, size // 8
        self.fc = torch.nn.Linear(dim, 64 * self.base * self.base)
        up = dict(kernel_size=4, stride=2, padding=1)
        self.net = torch.nn.Sequential(torch.nn.GELU(), torch.nn.ConvTranspose2d(64, 32, **up), torch.nn.GELU(),
                                       torch.nn.ConvTranspose2d(32, 16, **up), torch.nn.GELU(),
                                       torch.nn.ConvTranspose2d(16, 3, **up))

    @staticmethod
    def check_size(size: int, name: str = "the decoder's size") -> None:
        if size < 8 or size % 8:
            raise ValueError(f"{name} must be a positive multiple of 8, got {size}")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        x = self.fc(z.reshape(-1, z.shape[-1])).view(-1, 64, self.base, self.base)
        return self.net(x).view(*lead, 3, self.size, self.size)


class StateTargets:
    """--state-weight: each frame's state as lewm_fast.probe's targets for the env (positions as they are,
    angles as sin and cos), standardised with statistics of the training clips' first frames. Built from the
    batches' z-scored `state` column (un-z-scored with the dataset's own statistics first)."""

    def __init__(self, env: str, state_stats: dict, train_states: np.ndarray):
        from .probe import state_targets
        self.env, self._targets = env, state_targets
        self.z_mean, self.z_std = (np.asarray(state_stats[k], np.float64) for k in ("mean", "std"))
        self.names, y = state_targets(env, train_states)
        self.mean, self.std = y.mean(0), y.std(0) + 1e-8

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        raw = z.detach().cpu().double().numpy() * self.z_std + self.z_mean
        _, y = self._targets(self.env, raw.reshape(-1, raw.shape[-1]))
        return torch.from_numpy(((y - self.mean) / self.std).astype(np.float32)).view(*z.shape[:-1], -1)


def recon_target(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """float (..., 3, h, w) -> float32 (..., 3, size, size): each output pixel the mean of the input pixels it
    covers (adaptive average pooling; exact block means when size divides h and w)."""
    lead, chw = pixels.shape[:-3], pixels.shape[-3:]
    return F.adaptive_avg_pool2d(pixels.reshape(-1, *chw).float(), size).view(*lead, chw[0], size, size)


def colour_jitter(pixels: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B, T, 3, h, w) -> uint8, each frame through its own random affine colour map
    rgb' = clamp((I + s G) rgb + s g / 2) on [0, 1] (G 3x3, g 3-vector, standard normal; s = strength).

    Training-only (--colour-jitter). Why per frame: a clip's next frame then has a colour its context cannot
    foretell, so the embedding that the predictor is asked for can only be predicted if it ignores colour;
    a map shared by the clip would instead make colour one more thing the latent carries. What stays is what
    an affine colour map keeps: edges, shapes and positions."""
    if pixels.dtype != torch.uint8:
        raise TypeError(f"colour_jitter takes uint8 frames, got {pixels.dtype}")
    lead, (c, h, w) = pixels.shape[:-3], pixels.shape[-3:]
    if c != 3:
        raise ValueError(f"colour_jitter needs 3 colour channels, got shape {tuple(pixels.shape)}")
    x = pixels.reshape(-1, 3, h * w).float() / 255.0
    n = x.shape[0]
    mix = torch.eye(3, device=x.device) + strength * torch.randn(n, 3, 3, generator=generator, device=x.device)
    shift = 0.5 * strength * torch.randn(n, 3, 1, generator=generator, device=x.device)
    out = (torch.bmm(mix, x) + shift).clamp_(0, 1)
    return (out * 255.0).round_().to(torch.uint8).reshape(*lead, 3, h, w)


class LossModule(torch.nn.Module):
    """model + SIGReg behind one forward(), so DistributedDataParallel can sync its gradients.
    colour_jitter s > 0: the training frames pass through colour_jitter first (validation sees them as recorded)."""

    def __init__(self, model: LeWM, sigreg: SIGReg, sigreg_weight: float, history: int | None = None,
                 target_grad: float = 1.0, bank: SigregBank | None = None,
                 heads: dict[str, ActionHead] | None = None, head_weights: dict[str, float] | None = None,
                 colour_jitter: float = 0.0):
        super().__init__()
        self.model, self.sigreg, self.sigreg_weight, self.history = model, sigreg, sigreg_weight, history
        self.target_grad, self.bank = target_grad, bank
        self.heads = torch.nn.ModuleDict(heads or {})
        self.head_weights = dict(head_weights or {})
        self.colour_jitter = colour_jitter

    def forward(self, pixels, actions, generator=None, state=None):
        if self.colour_jitter:
            pixels = colour_jitter(pixels, self.colour_jitter, generator)
        return lewm_loss(self.model, pixels, actions, self.sigreg, self.sigreg_weight, generator, self.history,
                         self.target_grad, self.bank,
                         {k: (h, self.head_weights[k]) for k, h in self.heads.items()}, state)


def lr_lambda(total_steps: int, warmup_frac: float):
    warmup = max(1, int(round(total_steps * warmup_frac)))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def epoch_batches(n: int, batch: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """This rank's (n_batches, batch) sample indices for an epoch: a seeded permutation, dropping the
    remainder so every rank sees the same number of full batches. Deterministic, so a resumed run can
    skip exactly the batches it already consumed."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    per_rank = batch * world
    n_batches = n // per_rank
    return perm[: n_batches * per_rank].reshape(n_batches, world, batch)[:, rank]


class BatchList(torch.utils.data.Sampler):
    def __init__(self, batches: np.ndarray):
        self.batches = batches

    def __iter__(self):
        return (b.tolist() for b in self.batches)

    def __len__(self):
        return len(self.batches)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lewm_fast.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="HDF5 episode file (spec E layout; official files load as they are)")
    p.add_argument("--out", default="runs/lewm", help="run directory for checkpoints and metrics")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="model size preset")
    p.add_argument("--config", default=None, help="JSON file or inline JSON of LeWMConfig fields overriding the preset")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training clips (paper: 10)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps (schedule spans them)")
    p.add_argument("--batch-size", type=int, default=128, help="clips per optimiser step (per rank under torchrun)")
    p.add_argument("--lr", type=float, default=5e-5, help="AdamW peak learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="AdamW weight decay")
    p.add_argument("--warmup-frac", type=float, default=0.01, help="fraction of steps of linear warm-up before cosine decay")
    p.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip")
    p.add_argument("--sigreg-weight", type=float, default=0.09, help="weight of SIGReg in the loss")
    p.add_argument("--target-grad", type=float, default=1.0,
                   help="scale of the prediction loss's gradient through the target embeddings: 1 = the paper "
                        "(targets not detached), 0 = stop-gradient targets")
    p.add_argument("--sigreg-bank", type=int, default=0,
                   help="SIGReg's sample also holds the last M frame embeddings (detached): a sharper test at "
                        "small batches; 0 = the paper (the batch alone)")
    p.add_argument("--idm-weight", type=float, default=0.0,
                   help="weight of an inverse-dynamics loss (a training-only head estimates each action block from "
                        "embeddings k-1, k, k+1; not saved in model.safetensors); 0 = the paper (off)")
    p.add_argument("--bc-weight", type=float, default=0.0,
                   help="weight of a behaviour-cloning loss (a training-only head estimates each action block from "
                        "embeddings k-1 and k: what the data's policy acts on; not saved in model.safetensors); "
                        "0 = the paper (off)")
    p.add_argument("--recon-weight", type=float, default=0.0,
                   help="weight of a frame-reconstruction loss (a training-only decoder redraws each frame at "
                        "--recon-size px from its embedding; not saved in model.safetensors): the latent must hold "
                        "what the frame shows, object orientation included; 0 = the paper (off)")
    p.add_argument("--recon-size", type=int, default=48,
                   help="side of the reconstructed frame in px (a multiple of 8; the target is the frame "
                        "area-averaged to this size)")
    p.add_argument("--state-weight", type=float, default=0.0,
                   help="weight of a state-supervision loss (PRIVILEGED: a training-only linear head estimates each "
                        "frame's simulator state, angles as sin/cos, from its embedding; needs a `state` column; not "
                        "saved in model.safetensors; planning still sees pixels only); 0 = the paper (off)")
    p.add_argument("--colour-jitter", type=float, default=0.0,
                   help="strength s of a random affine colour map drawn for every training frame "
                        "(rgb' = (I + s G) rgb + s g / 2, G and g standard normal): makes the latent ignore colour "
                        "(surprise at recoloured objects); 0 = the paper (off)")
    p.add_argument("--sigreg-proj", type=int, default=1024, help="SIGReg random projections")
    p.add_argument("--history", type=int, default=3, help="context frames per clip (clip length = history + --rollout-steps)")
    p.add_argument("--rollout-steps", type=int, default=1,
                   help="prediction steps per clip (clip length = history + this): 1 = the paper's next-embedding "
                        "loss; K > 1 adds K-1 autoregressive steps fed with the predictor's own outputs")
    p.add_argument("--frameskip", type=int, default=5, help="raw env steps between frames (= action block)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="fraction of episodes held out for validation")
    p.add_argument("--seed", type=int, default=3072, help="seed for the split, data order and initialisation")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader worker processes")
    p.add_argument("--ckpt-every", type=int, default=500, help="write last.pt every this many steps (and each epoch)")
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="also keep OUT/model-stepN.safetensors every this many steps (learning curves); 0: off")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop (checkpoint written) after this many steps, keeping the learning-rate schedule of "
                        "--max-steps; --resume with a later or no --stop-after continues the same run")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init", default=None,
                   help="start from this checkpoint's weights, config and action normalisation (a .safetensors "
                        "path, a shipped name such as pusht, or a Hub id): fine-tuning; the optimiser, schedule and "
                        "action heads start fresh; not with --preset / --config")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="autocast precision; auto = bf16 on CUDA, fp32 on CPU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="disable the tqdm progress bar")
    return p


def make_config(args, env_action_dim: int) -> LeWMConfig:
    fields = dict(PRESETS[args.preset])
    if args.config:
        is_file = Path(args.config).is_file()
        text = Path(args.config).read_text() if is_file else args.config
        given = parse_json(text, f"--config {args.config}" if is_file else "--config (inline JSON)")
        if not isinstance(given, dict):
            raise SystemExit(f"--config must be a JSON object of LeWMConfig fields, got {type(given).__name__}")
        fields.update(given)
    fields.update(env_action_dim=env_action_dim, frameskip=args.frameskip)
    cfg = LeWMConfig.from_dict(fields)
    if args.history > cfg.num_frames:
        raise SystemExit(f"--history {args.history} exceeds the predictor window num_frames={cfg.num_frames}")
    return cfg


def _save_train_state(path: Path, model, opt, sched, step: int, epoch: int, cfg: LeWMConfig, stats, args,
                      bank: SigregBank | None = None, heads: dict | None = None) -> None:
    state = {
        **{name: (heads[name].state_dict() if heads and name in heads else None) for name in TRAINING_HEADS},
        "sigreg_bank": None if bank is None else bank.rows.cpu(),
        "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "step": step, "epoch": epoch, "config": cfg.to_dict(),
        "stats": {c: {k: torch.from_numpy(np.asarray(v)) for k, v in s.items()} for c, s in stats.items()},
        "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))},
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


# Arguments that change what a run computes: --resume refuses new values for them.
RUN_ARGS = ("data", "preset", "config", "epochs", "max_steps", "batch_size", "lr", "weight_decay", "warmup_frac",
            "grad_clip", "sigreg_weight", "target_grad", "sigreg_bank", "idm_weight", "bc_weight", "recon_weight",
            "recon_size", "state_weight", "colour_jitter", "sigreg_proj", "history", "rollout_steps", "frameskip",
            "val_fraction", "seed", "init")


def check_args(args) -> None:
    """Argument checks done before any work."""
    for name in ("epochs", "batch_size", "ckpt_every", "history", "rollout_steps", "frameskip", "sigreg_proj",
                 "max_steps", "threads", "stop_after"):
        positive("--" + name.replace("_", "-"), getattr(args, name))
    positive("--workers", args.workers, 0)
    positive("--sigreg-bank", args.sigreg_bank, 0)
    for name, low, high, low_open in (("lr", 0, None, True), ("weight_decay", 0, None, False),
                                      ("warmup_frac", 0, 1, False), ("grad_clip", 0, None, True),
                                      ("sigreg_weight", 0, None, False), ("target_grad", 0, 1, False),
                                      ("idm_weight", 0, None, False), ("bc_weight", 0, None, False),
                                      ("recon_weight", 0, None, False), ("state_weight", 0, None, False),
                                      ("colour_jitter", 0, None, False), ("val_fraction", 0, 0.99, False)):
        try:
            finite_number("--" + name.replace("_", "-"), getattr(args, name), low, high, low_open)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    try:
        FrameDecoder.check_size(args.recon_size, "--recon-size")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    heads = [f"--{name}-weight" for name in ACTION_HEAD_FRAMES if getattr(args, f"{name}_weight")]
    if heads and args.history + args.rollout_steps < 3:
        raise SystemExit(f"{', '.join(heads)} need clips of at least 3 frames (--history + --rollout-steps), "
                         f"got {args.history + args.rollout_steps}")


def explicit_args(argv) -> set[str]:
    """The dests of the arguments actually given on the command line (not defaults)."""
    p = build_parser()
    for a in p._actions:
        a.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv)))


def check_resume(args, saved: dict, given: set[str]) -> list[str]:
    """--resume: refuse explicitly given run-changing arguments that differ from the checkpoint's; take the
    checkpoint's value for those left at their default. Returns the names taken from the checkpoint.
    An argument the checkpoint does not record came after it was written: its run computed that flag's default
    (every run-changing flag defaults to what the code did before the flag existed)."""
    parser = build_parser()
    saved = {k: saved[k] if k in saved else parser.get_default(k) for k in RUN_ARGS}
    changed = [k for k in RUN_ARGS if k in given and saved[k] != getattr(args, k)]
    if changed:
        raise SystemExit("--resume: " + ", ".join(f"--{k.replace('_', '-')} {getattr(args, k)!r} differs from the "
                                                   f"checkpoint's {saved[k]!r}" for k in changed)
                         + "; drop the flag(s) to continue the saved run, or train into a new --out")
    taken = [k for k in RUN_ARGS if saved[k] != getattr(args, k)]
    for k in taken:
        setattr(args, k, saved[k])
    return taken


def train(argv: list[str] | None = None) -> dict:
    """Run training with command-line arguments `argv`; returns the final step's loss terms."""
    locks: list[PathLock] = []
    try:
        return _train(argv, locks)
    finally:
        for lock in locks:
            lock.release()


def _train(argv: list[str] | None, locks: list) -> dict:
    args = build_parser().parse_args(argv)
    check_args(args)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    from lewm_fast.planning.precision import warn_if_slow_bf16
    warn_if_slow_bf16(precision, device)
    is_main = rank == 0
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out} is a file; give a run directory")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        locks.append(PathLock(out / "train", "training run"))   # two runs into one --out would overwrite each other
    state = None
    if args.resume:
        ckpt = out / "last.pt"
        if not ckpt.is_file():
            raise SystemExit(f"--resume: no checkpoint at {ckpt}")
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        taken = check_resume(args, state.get("args", {}), explicit_args(sys.argv[1:] if argv is None else argv))
        if taken and is_main:
            print("--resume: from the checkpoint: " + ", ".join(f"--{k.replace('_', '-')} {getattr(args, k)!r}"
                                                               for k in taken), flush=True)

    init = None
    if args.init:   # loaded on --resume too: its config and provenance describe the run
        given = explicit_args(sys.argv[1:] if argv is None else argv)
        if given & {"preset", "config"}:
            raise SystemExit("--init takes the model's config from the checkpoint; drop --preset / --config")
        from .checkpoint import CheckpointError, load_checkpoint
        try:
            init = load_checkpoint(args.init)
        except (CheckpointError, FileNotFoundError, OSError) as e:
            raise SystemExit(f"--init {args.init}: {e}") from None

    # proprio/state are not model inputs, but their statistics go into the checkpoint (probes, eval)
    train_set, val_set = make_datasets(args.data, num_steps=args.history + args.rollout_steps, frameskip=args.frameskip,
                                       val_fraction=args.val_fraction, seed=args.seed,
                                       columns=present_columns(args.data))
    env_action_dim = train_set.src.cache["action"].shape[1]
    cfg = (LeWMConfig.from_dict(state["config"]) if state else init.config if init
           else make_config(args, env_action_dim))
    if args.history > cfg.num_frames:
        raise SystemExit(f"--history {args.history} exceeds the predictor window num_frames={cfg.num_frames}")
    init_env = (init.info.get("env") or {}).get("name") if init else None
    if init_env and train_set.src.attrs.get("env") and init_env != train_set.src.attrs.get("env"):
        raise SystemExit(f"--init {args.init} was trained on {init_env}; {args.data} holds "
                         f"{train_set.src.attrs.get('env')} episodes")
    if cfg.env_action_dim != env_action_dim or cfg.frameskip != args.frameskip:
        raise SystemExit(f"checkpoint config (env_action_dim {cfg.env_action_dim}, frameskip {cfg.frameskip}) does not "
                         f"fit the data (action dim {env_action_dim}) / --frameskip {args.frameskip}")

    torch.manual_seed(args.seed)
    model = LeWM(cfg).to(device)
    sigreg = SIGReg(num_proj=args.sigreg_proj).to(device)
    head_weights = {name: getattr(args, f"{name}_weight") for name in TRAINING_HEADS
                    if getattr(args, f"{name}_weight")}
    state_targets = None
    if args.state_weight:
        if "state" not in train_set.columns:
            raise SystemExit(f"--state-weight needs a `state` column; {args.data} has none")
        state_targets = StateTargets(train_set.src.attrs.get("env") or "", train_set.stats["state"],
                                     train_set.src.cache["state"][train_set.starts])

    def make_head(name: str) -> torch.nn.Module:
        if name == "recon":
            return FrameDecoder(cfg.embed_dim, args.recon_size)
        if name == "state":
            return torch.nn.Linear(cfg.embed_dim, len(state_targets.names))
        return ActionHead(cfg.embed_dim, cfg.action_dim, ACTION_HEAD_FRAMES[name])
    heads = {name: make_head(name).to(device) for name in head_weights}
    params = list(model.parameters()) + [p for h in heads.values() for p in h.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = len(train_set) // (args.batch_size * world)
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(train_set)} training clips are fewer than one batch of {args.batch_size} x {world} ranks")
    total = steps_per_epoch * args.epochs if args.max_steps is None else args.max_steps
    stop = total if args.stop_after is None else min(total, args.stop_after)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, args.warmup_frac))
    step, start_epoch = 0, 0
    if init and not state:
        model.load_state_dict(init.model.state_dict())
        # the weights' action encoder expects the normalisation they were trained with
        saved = {c: {k: v.numpy() for k, v in s.items()} for c, s in init.stats.items()}
        train_set.stats = {**train_set.stats, **saved}
        if val_set is not None:
            val_set.stats = train_set.stats
    if state:
        model.load_state_dict(state["model"])
        for name, head in heads.items():
            head.load_state_dict(state[name])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, start_epoch = int(state["step"]), int(state["epoch"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state["rng_cuda"]:
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        train_set.stats = {c: {k: v.numpy() for k, v in s.items()} for c, s in state["stats"].items()}
        if val_set is not None:
            val_set.stats = train_set.stats
    bank = None
    if args.sigreg_bank:
        saved_rows = state.get("sigreg_bank") if state else None
        bank = SigregBank(args.sigreg_bank, None if saved_rows is None else saved_rows.to(device))
    loss_fn = LossModule(model, sigreg, args.sigreg_weight, args.history, args.target_grad, bank, heads,
                         head_weights, args.colour_jitter)
    if world > 1:
        loss_fn = torch.nn.parallel.DistributedDataParallel(
            loss_fn, device_ids=[device.index] if device.type == "cuda" else None)
    stats = train_set.stats
    info = {"trained_by": "lewm_fast.train", "data": str(args.data),
            "preset": init.info.get("preset", "unknown") if init else args.preset,
            **({"init": {"checkpoint": str(args.init), "step": init.info.get("step")}} if init else {}),
            "clips": len(train_set), "world_size": world,
            "env": {"name": train_set.src.attrs.get("env"), "action_dim": env_action_dim,   # checked by eval & co.
                    "image_size": list(train_set.src.image_shape[:2])},
            "split": {"val_fraction": args.val_fraction, "seed": args.seed}}   # lets tools find held-out episodes

    if is_main:
        print(f"LeWM {count_parameters(model) / 1e6:.2f} M params | {len(train_set)} train clips"
              f"{f', {len(val_set)} val clips' if val_set else ''} | {steps_per_epoch} steps/epoch x {args.epochs} "
              f"epochs, schedule of {total} steps{f', stopping after {stop}' if stop < total else ''} | device {device}, {precision}, world {world}"
              + (f" | resumed at step {step}" if state else ""), flush=True)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    if is_main and state and (out / "metrics.jsonl").exists():
        # drop the lines a killed run logged after its last checkpoint: the resumed run redoes those steps
        keep = [ln for ln in (out / "metrics.jsonl").read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= step]
        atomic_write(out / "metrics.jsonl", lambda tmp: Path(tmp).write_text("".join(k + "\n" for k in keep)))
    metrics_f = open(out / "metrics.jsonl", "a") if is_main else None
    from tqdm import tqdm

    def save(epoch: int) -> None:
        if is_main:
            _save_train_state(out / "last.pt", model, opt, sched, step, epoch, cfg, stats, args, bank, heads)
            save_checkpoint(out / "model.safetensors", model, stats, {**info, "step": step, "epoch": epoch})

    last = {}
    epoch = start_epoch
    for epoch in range(start_epoch, args.epochs):
        if step >= stop:
            break
        batches = epoch_batches(len(train_set), args.batch_size, args.seed, epoch, rank, world)
        skip = step - epoch * steps_per_epoch
        loader = torch.utils.data.DataLoader(train_set, batch_sampler=BatchList(batches[skip:]),
                                             num_workers=args.workers, pin_memory=device.type == "cuda",
                                             persistent_workers=False,
                                             # its own generator: drawing worker seeds from the global RNG
                                             # would make a resumed run's dropout/SIGReg draws differ
                                             generator=torch.Generator().manual_seed(args.seed + epoch))
        model.train()
        bar = tqdm(loader, total=len(batches), initial=skip, desc=f"epoch {epoch + 1}/{args.epochs}",
                   disable=not is_main or args.no_progress, dynamic_ncols=True)
        t0, seen = time.perf_counter(), 0
        for batch in bar:
            px = batch["pixels"].to(device, non_blocking=True)
            act = batch["action"].to(device, non_blocking=True)
            state = None if state_targets is None else state_targets(batch["state"]).to(device, non_blocking=True)
            with torch.autocast(**amp):
                terms = loss_fn(px, act, state=state)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
            opt.step()
            sched.step()
            step += 1
            seen += px.shape[0] * world
            last = {k: float(v.detach()) for k, v in terms.items()}
            sps = seen / (time.perf_counter() - t0)
            if not math.isfinite(last["loss"]):
                raise FloatingPointError(f"loss became {last['loss']} at step {step}; last good checkpoint: {out / 'last.pt'}")
            bar.set_postfix(loss=f"{last['loss']:.4f}", pred=f"{last['pred_loss']:.4f}",
                            sigreg=f"{last['sigreg']:.3f}", sps=f"{sps:.1f}")
            if is_main:
                metrics_f.write(json.dumps({"step": step, "epoch": epoch, **last, "grad_norm": float(gnorm),
                                            "lr": sched.get_last_lr()[0], "samples_per_s": sps,
                                            "time": time.time()}) + "\n")   # wall clock: training time
            if step % args.ckpt_every == 0:
                metrics_f and metrics_f.flush()
                save(epoch)
            if args.snapshot_every and step % args.snapshot_every == 0 and is_main:
                save_checkpoint(out / f"model-step{step}.safetensors", model, stats, {**info, "step": step, "epoch": epoch})
            if step >= stop:
                break
        bar.close()
        done_epoch = epoch + 1 if step >= (epoch + 1) * steps_per_epoch else epoch
        # not on a --stop-after mid-epoch: validation draws random numbers, and the resumed run must match the full one
        validate = val_set is not None and (step >= total or done_epoch > epoch)
        val = evaluate(model, val_set, sigreg, args, device, amp) if validate else None
        if is_main:
            msg = {"step": step, "epoch": epoch, "val": val, "train_samples_per_s": seen / max(1e-9, time.perf_counter() - t0)}
            metrics_f.write(json.dumps(msg) + "\n")
            metrics_f.flush()
            if val:
                print(f"epoch {epoch + 1}: val loss {val['loss']:.4f} (pred {val['pred_loss']:.4f}, "
                      f"sigreg {val['sigreg']:.3f})", flush=True)
        save(done_epoch)
    if metrics_f:
        metrics_f.close()
    if world > 1:
        dist.barrier()
    return {"step": step, "epoch": epoch, **last}


@torch.no_grad()
def evaluate(model: LeWM, val_set, sigreg: SIGReg, args, device, amp, max_batches: int = 50) -> dict:
    """Mean validation loss terms (eval mode; SIGReg projections from a fixed seed so epochs compare)."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(0)
    # a fixed shuffled order: unshuffled batches are consecutive clips of one episode, whose embeddings are far
    # from isotropic, so SIGReg (a statistic of the batch as a sample) would not compare with training's
    loader = torch.utils.data.DataLoader(val_set, batch_size=args.batch_size, shuffle=True, num_workers=0,
                                         generator=torch.Generator().manual_seed(0))
    sums, n = {}, 0
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        with torch.autocast(**amp):
            terms = lewm_loss(model, batch["pixels"].to(device), batch["action"].to(device), sigreg,
                              args.sigreg_weight, generator=gen, history=args.history)   # target_grad: same value
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n += 1
    model.train()
    if world_size() > 1:
        t = torch.tensor([sums.get(k, 0.0) for k in ("loss", "pred_loss", "sigreg")] + [n], dtype=torch.float64,
                         device=device)
        dist.all_reduce(t)
        sums, n = dict(zip(("loss", "pred_loss", "sigreg"), t[:3].tolist())), int(t[3])
    return {k: v / max(1, n) for k, v in sums.items()}


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


if __name__ == "__main__":
    from .cli import run_cli
    sys.exit(run_cli(train, prog="lewm_fast.train"))
