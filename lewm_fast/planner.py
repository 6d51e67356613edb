"""`Planner`: batched latent-space MPC planning with a LeWM (spec C).

    planner = Planner.from_checkpoint("pusht.safetensors")          # backend/device picked automatically
    result = planner.plan(frames, goal_frames)                      # (B, 224, 224, 3) uint8 each
    env_actions = result.actions                                    # (B, horizon * frameskip, env_action_dim)

All B environments are planned together: one solver state per environment, one batched rollout of
B x num_samples candidates per iteration. Defaults are the reference's (CEM, 300 samples, 30
iterations, 30 elites, horizon 5, std 1, action block = the model's frameskip).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .planning.allocator import keep_freed_memory
from .planning.engine import RolloutEngine
from .planning.graph import GraphSolveRunner
from .planning.inputs import actions_to_blocks, frames_to_bhchw
from .planning.precision import check_precision, precision_flags, warn_if_slow_bf16
from .planning.noise import EnvStreams
from .planning.solvers import make_solver, run_solve
from .planning.switches import BACKENDS, backend_name, kernels_status, resolve  # noqa: F401 - re-exported
from .validate import check_frames, check_solver_options, check_stats, finite_tensor


def resolve_backend(backend: str, device: torch.device) -> str:
    """The legacy name of what `backend` runs as on `device` (see planning/switches.py)."""
    return backend_name(*resolve(backend, "auto", "auto", torch.device(device)))


@dataclass
class PlanResult:
    actions: torch.Tensor        # (B, horizon * frameskip, env_action_dim) raw env actions, un-normalised, CPU
    blocks: torch.Tensor         # (B, horizon, frameskip * env_action_dim) normalised plan the model saw, CPU
    cost: torch.Tensor           # (B,) mean cost of the final iteration's elites (the reference's "costs")
    timing: dict = field(default_factory=dict)   # seconds: encode, solve, total; per_env_solve
    info: dict = field(default_factory=dict)     # solver / backend / precision / shapes


class Planner:
    def __init__(self, model, action_stats: dict | None = None, *, solver: str = "cem", horizon: int = 5,
                 num_samples: int = 300, iterations: int = 30, topk: int = 30, var_scale: float = 1.0,
                 history_len: int | None = None, device=None, backend: str = "auto", precision: str = "fp32",
                 kernels: str = "auto", cuda_graph="auto", seed: int = 42,
                 generator: torch.Generator | None = None, chunk_rows: int | None = None,
                 compile: bool = False, **solver_options):
        """model: a LeWM (its cfg fixes image size, frameskip = action block, action dims).
        action_stats: {"mean", "std"} of raw env actions (per env action dim) used to normalise the
        model's action inputs; planned actions are un-normalised with them (None: identity).
        solver: "cem" | "icem" | "mppi"; solver_options go to it (e.g. temperature=, noise_beta=).
        kernels: "torch" | "triton" | "auto"; cuda_graph: True | False | "auto" (planning/switches.py);
        backend: the old names, aliases of the two ("eager", "triton", "graph", "auto").
        seed: seeds the planner's per-environment random streams once (planning/noise.py: environment i
        draws from its own stream, seeded from (seed, i); env 0's is seeded with `seed`, like the
        reference's one generator); generator=: a generator to use as env 0's stream.
        chunk_rows: bound on candidate rows per predictor pass (memory); None = all at once.
        compile: run the torch kernels' predictor step through torch.compile (faster on CPU once
        compiled; the first solve of each shape compiles; falls back to eager with a warning if it
        cannot; planning/backends.py EagerPredictor). Not with kernels='triton'."""
        check_solver_options(var_scale, num_samples, iterations, topk, solver_options)
        if action_stats is not None:
            check_stats("action_stats", action_stats)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.cfg = cfg = model.cfg
        self.model = model.to(self.device).eval()
        self.precision = check_precision(precision)
        warn_if_slow_bf16(self.precision, self.device)
        if self.device.type == "cpu":
            keep_freed_memory()      # opt-in: reuse freed temporaries (planning/allocator.py)
        self.kernels, self.cuda_graph = resolve(backend, kernels, cuda_graph, self.device)
        self.backend = backend_name(self.kernels, self.cuda_graph)
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon = horizon
        self.history_len = history_len or cfg.history_len
        self.solver_name = solver
        self.solver = make_solver(solver, num_samples=num_samples, iterations=iterations, topk=topk,
                                  var_scale=var_scale, **self._device_options(solver_options))
        self._stats = self._parse_stats(action_stats)
        if generator is not None and generator.device.type != self.device.type:
            raise ValueError(f"generator is on {generator.device}; the planner runs on {self.device}")
        if generator is not None:
            seed = generator.initial_seed()
        # `generator` keeps its old name: .manual_seed(seed) restarts every environment's stream
        self.generator = self.streams = EnvStreams(seed, self.device, first=generator)
        if chunk_rows is None and self.device.type == "cpu":
            chunk_rows = 512         # CPU: 300-600 rows per pass keeps the working set in cache (measured)
        if compile and self.kernels == "triton":
            raise ValueError("compile=True compiles the torch kernels' step; kernels='triton' is already fused "
                             "(pass kernels='torch' / backend='eager' to compile)")
        if compile and self.cuda_graph:
            raise ValueError("compile=True is not captured in the planner's CUDA graph; pass cuda_graph=False")
        self.engine = RolloutEngine(self.model, precision=precision,
                                    predictor_backend="triton" if self.kernels == "triton" else "eager",
                                    chunk_rows=chunk_rows, compile=bool(compile))
        self._graph = GraphSolveRunner(self.engine, self.solver) if self.cuda_graph else None

    @property
    def predictor_name(self) -> str:
        """What runs the predictor step: the class, '+compile' while its compiled code runs."""
        p = self.engine.predictor
        return type(p).__name__ + ("+compile" if getattr(p, "compiled", False) else "")

    def _device_options(self, opts: dict) -> dict:
        # bounds live on the device up front: no host-to-device copies inside a (captured) solve
        for k in ("action_low", "action_high"):
            if opts.get(k) is not None:
                opts[k] = torch.as_tensor(opts[k], dtype=torch.float32, device=self.device)
        return opts

    def _parse_stats(self, stats):
        if stats is None:
            return None
        E = self.cfg.env_action_dim
        mean = torch.as_tensor(stats["mean"], dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(stats["std"], dtype=torch.float32).reshape(-1)
        if mean.numel() != E or std.numel() != E:
            raise ValueError(f"action stats must have env_action_dim={E} entries, got mean {mean.numel()}, "
                             f"std {std.numel()}")
        if not (std > 0).all():
            raise ValueError("action stats std must be > 0")
        return mean, std

    @classmethod
    def from_checkpoint(cls, path, device=None, backend: str = "auto", precision: str = "fp32", env: str | None = None,
                        **kwargs):
        """Load a checkpoint (path, shipped name or Hub id); its stats['action'] (if any, else action_stats=)
        normalise/un-normalise actions. env: refuse a checkpoint trained on another env."""
        from .checkpoint import load_checkpoint

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        ckpt = load_checkpoint(path, device=device)
        action_stats = cls._check_checkpoint(ckpt, path, env, kwargs.pop("action_stats", None))
        return cls(ckpt.model, action_stats, device=device, backend=backend, precision=precision, **kwargs)

    @classmethod
    def from_pretrained(cls, name: str, **kwargs) -> "Planner":
        """A planner on a checkpoint shipped with lewm_fast (lewm_fast/pretrained/NAME.safetensors) or an
        official one by Hugging Face Hub id ("quentinll/lewm-pusht", needs huggingface_hub)."""
        from .checkpoint import PRETRAINED_DIR, is_hub_id, pretrained_names

        if not (PRETRAINED_DIR / f"{name}.safetensors").is_file() and not is_hub_id(name):
            raise ValueError(f"no shipped checkpoint named {name!r}; available: {pretrained_names() or 'none'}, "
                             "or a Hugging Face Hub id such as quentinll/lewm-pusht")
        return cls.from_checkpoint(name, **kwargs)

    @staticmethod
    def _check_checkpoint(ckpt, source, env, action_stats):
        """The checkpoint fits `env` (when given); the action stats to use (given ones win)."""
        import warnings

        from .checkpoint import check_env

        if env is not None:
            check_env(ckpt, env, source)
        action_stats = ckpt.stats.get("action") if action_stats is None else action_stats
        if action_stats is None and ckpt.info.get("official"):
            warnings.warn(f"{source}: official checkpoints carry no action statistics; planned actions stay in the "
                          "model's normalised units unless you pass action_stats={'mean', 'std'} of the dataset's "
                          "actions (lewm_fast.data.fit_stats)", stacklevel=3)
        return action_stats

    @staticmethod
    def _env_ids(env_ids, B: int) -> list[int]:
        if env_ids is None:
            return list(range(B))
        ids = [int(i) for i in torch.as_tensor(env_ids).reshape(-1).tolist()]
        if len(ids) != B or len(set(ids)) != B or min(ids) < 0:
            raise ValueError(f"env_ids must be {B} distinct ints >= 0 (one per environment), got {ids}")
        return ids

    # ------------------------------------------------------------------------------------------
    def normalise_actions(self, raw: torch.Tensor) -> torch.Tensor:
        if self._stats is None:
            return raw
        mean, std = (s.to(raw.device) for s in self._stats)
        return (raw - mean) / std

    def unnormalise_actions(self, x: torch.Tensor) -> torch.Tensor:
        if self._stats is None:
            return x
        mean, std = (s.to(x.device) for s in self._stats)
        return x * std + mean

    def plan(self, obs, goal, action_history=None, init_plan=None, env_ids=None) -> PlanResult:
        """Plan for B environments at once.

        obs: (B, H, h, w, 3) or (B, h, w, 3) when H = 1; uint8 pixels, or CHW, or float tensors that
             are already ImageNet-normalised. goal: (B, h, w, 3) (or with a frame axis: the last is used).
        action_history: when H > 1, the raw env actions that led through the H context frames,
             (B, (H-1) * frameskip, env_action_dim).
        init_plan: optional warm start, normalised blocks (B, t <= horizon, A); zero-padded.
        env_ids: which environments the B rows are (B distinct ints >= 0; default 0..B-1): row b draws
             its noise from environment env_ids[b]'s stream, so its plan does not depend on the batch.
        """
        cfg, H, T = self.cfg, self.history_len, self.horizon
        t0 = time.perf_counter()
        self._check_plan_inputs(obs, goal, init_plan)
        obs = frames_to_bhchw(obs, "obs", cfg.image_size, H)
        goal = frames_to_bhchw(goal, "goal", cfg.image_size, None)[:, -1:]
        B = obs.shape[0]
        if goal.shape[0] != B:
            raise ValueError(f"goal batch {goal.shape[0]} != obs batch {B}")
        hist = None
        if H > 1:
            if action_history is None:
                raise ValueError(f"history length H={H} needs action_history (B, {(H - 1) * cfg.frameskip}, "
                                 f"{cfg.env_action_dim}) raw env actions")
            hist = actions_to_blocks(action_history, "action_history", B, H - 1, cfg.frameskip,
                                     cfg.env_action_dim, self.normalise_actions).to(self.device)
        mean0 = torch.zeros(B, T, cfg.action_dim, device=self.device)
        if init_plan is not None:
            init_plan = torch.as_tensor(init_plan, dtype=torch.float32, device=self.device)
            if init_plan.ndim != 3 or init_plan.shape[0] != B or init_plan.shape[1] > T \
                    or init_plan.shape[2] != cfg.action_dim:
                raise ValueError(f"init_plan must be (B={B}, t<={T}, A={cfg.action_dim}), got "
                                 f"{tuple(init_plan.shape)}")
            mean0[:, :init_plan.shape[1]] = init_plan

        ids = self._env_ids(env_ids, B)
        gens = self.streams.generators(ids)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        with torch.inference_mode(), precision_flags(self.precision, self.device):
            ctx = self.engine.encode(obs.to(self.device))                 # (B, H, D)
            goal_emb = self.engine.encode(goal.to(self.device))[:, -1]    # (B, D)
            sync()
            t1 = time.perf_counter()
            if self._graph is not None:
                plan, cost = self._graph.solve(ctx, goal_emb, hist, mean0, gens)
            else:
                plan, cost = run_solve(self.engine, self.solver, ctx, goal_emb, hist, mean0, gens)
            plan, cost = plan.float().cpu(), cost.float().cpu()           # the one host sync of the solve
            t2 = time.perf_counter()
        actions = self.unnormalise_actions(plan.reshape(B, T * cfg.frameskip, cfg.env_action_dim))
        timing = {"encode_s": t1 - t0, "solve_s": t2 - t1, "total_s": time.perf_counter() - t0,
                  "per_env_solve_s": (t2 - t1) / B}
        info = {"solver": self.solver_name, "backend": self.backend, "kernels": self.kernels,
                "cuda_graph": self.cuda_graph, "predictor": self.predictor_name,
                "precision": self.precision,
                "device": str(self.device), "batch": B, "num_samples": self.solver.num_samples,
                "iterations": self.solver.iterations, "horizon": T, "history_len": H, "env_ids": ids}
        bad = (~torch.isfinite(actions)).flatten(1).any(1) | ~torch.isfinite(cost)
        if bad.any():
            envs = torch.nonzero(bad)[:, 0].tolist()
            raise FloatingPointError(f"the planner produced non-finite actions or costs for environment(s) "
                                     f"{envs[:10]} (costs {cost[envs[:10]].tolist()}); the model gives NaN/inf here")
        return PlanResult(actions=actions, blocks=plan, cost=cost, timing=timing, info=info)

    @staticmethod
    def _check_plan_inputs(obs, goal, init_plan) -> None:
        """Finite in: non-empty batches, float frames in the normalised range, a finite warm start."""
        check_frames("obs", obs)
        check_frames("goal", goal)
        if init_plan is not None:
            finite_tensor("init_plan", init_plan)
