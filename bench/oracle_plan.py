"""The protocol's ceiling: the same CEM planner with the simulator as its world model.

    python -m bench.oracle_plan --env reacher --seeds 42 --out results/reacher-recipe/oracle.json

Everything but the model is what `lewm_fast.eval` runs: the same start/goal pairs (the env's data
policy, or --dataset), CEM (300 samples, 10 iterations, 30 elites; 30 on PushT) over the same
normalised action blocks (the checkpoint's action statistics), horizon 5, 5 blocks executed before
replanning, a 50-step budget and the env's own success test. Only the cost differs: each candidate is
executed in a copy of the real env from its true state, and the cost is the reached state's distance
to the goal state in units of the success test (`bench.cost_ranking.true_distance`), last step only
as the latent cost is. It is what this search achieves with an exact model and the success test's own
distance (a latent cost of another shape may do better or worse), so it separates "the model is not good
enough" from "the search or the protocol cannot do it". Cube is not offered: its scripted controller
makes a step ~1.5 ms of Python, hours for 50 pairs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.cost_ranking import true_distance


class SimulatorPlanner:
    """Plans for live envs by CEM, scoring candidates by simulating them (no pixels, no model)."""

    plans_from_states = True     # lewm_fast.eval.run_episodes hands it the envs instead of frames

    def __init__(self, env_name: str, action_stats: dict, horizon: int = 5, frameskip: int = 5,
                 num_samples: int = 300, iterations: int = 10, topk: int = 30, seed: int = 42):
        from lewm_fast.envs import make
        from lewm_fast.planning.noise import EnvStreams
        from lewm_fast.planning.solvers import CEM

        self.env_name, self.horizon, self.frameskip = env_name, horizon, frameskip
        self.mean = torch.as_tensor(action_stats["mean"], dtype=torch.float32).reshape(-1)
        self.std = torch.as_tensor(action_stats["std"], dtype=torch.float32).reshape(-1)
        self.solver = CEM(num_samples=num_samples, iterations=iterations, topk=topk)
        self.generator = EnvStreams(seed, "cpu")
        self.scratch = make(env_name) if env_name != "reacher" else None   # never rendered

    def _raw(self, blocks: torch.Tensor) -> np.ndarray:
        """(..., T, frameskip * E) normalised blocks -> (..., T * frameskip, E) raw actions in [-1, 1]."""
        E = self.mean.numel()
        raw = blocks.reshape(*blocks.shape[:-2], -1, E) * self.std + self.mean
        return raw.clamp(-1, 1).numpy().astype(np.float64)

    def simulate(self, env, actions: np.ndarray) -> np.ndarray:
        """Final state of each candidate (S, steps, E) executed from env's current state."""
        if self.env_name == "reacher":
            return _reacher_final_states(env, actions)
        start = env.get_state()
        finals = []
        for seq in actions:
            self.scratch.set_state(start)
            for a in seq:
                self.scratch.step(a)
            finals.append(self.scratch.get_state())
        return np.stack(finals)

    def plan_states(self, envs: list, goal_states: np.ndarray, env_ids) -> np.ndarray:
        """Raw actions (B, horizon * frameskip, E) for each env towards its goal state."""
        B, T, A = len(envs), self.horizon, self.frameskip * self.mean.numel()
        gens = self.generator.generators(env_ids)

        def cost_fn(cand):                       # (B, S, T, A) -> (B, S)
            raw = self._raw(cand)
            out = np.empty(cand.shape[:2])
            for b, env in enumerate(envs):
                finals = self.simulate(env, raw[b])
                out[b] = [true_distance(self.env_name, s, goal_states[b]) for s in finals]
            return torch.from_numpy(out).float()

        state = self.solver.init(torch.zeros(B, T, A))
        for _ in range(self.solver.iterations):
            state = self.solver.step(state, cost_fn, gens)
        plan, _ = self.solver.result(state)
        return self._raw(plan)


def _reacher_final_states(env, actions: np.ndarray) -> np.ndarray:
    """Reacher candidates through mujoco.rollout (C, no Python per step): each env step repeats its
    action for ACTION_REPEAT physics steps, as ReacherEnv.step does. Returns [qpos, qvel] per candidate."""
    import mujoco
    from mujoco import rollout

    from lewm_fast.envs.reacher import ACTION_REPEAT

    model, data = env.model, env.data
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    start = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, start, spec)
    ctrl = np.repeat(actions, ACTION_REPEAT, axis=1)                        # (S, steps * repeat, nu)
    scratch = mujoco.MjData(model)
    states, _ = rollout.rollout(model, scratch, start[None], ctrl)
    nq, nv = model.nq, model.nv
    return states[:, -1, 1:1 + nq + nv]         # FULLPHYSICS = [time, qpos, qvel, ...]


def main(argv=None) -> dict:
    from lewm_fast.checkpoint import atomic_write, load_checkpoint
    from lewm_fast.eval import DEFAULT_ITERATIONS, dataset_pairs, expert_pairs, make_envs, run_episodes

    ap = argparse.ArgumentParser(prog="python -m bench.oracle_plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", required=True, choices=["pusht", "tworoom", "reacher"])
    ap.add_argument("--checkpoint", help="whose action statistics define the search space (default: the shipped ENV)")
    ap.add_argument("--dataset", help="HDF5 file for spec C.4 start/goal pairs; default: the env's data policy")
    ap.add_argument("--seeds", default="42", help="comma-separated; one evaluation per seed")
    ap.add_argument("--num-eval", type=int, default=50)
    ap.add_argument("--num-samples", type=int, default=300)
    ap.add_argument("--iterations", type=int, default=None, help="default: 30 on pusht, 10 elsewhere (the paper)")
    ap.add_argument("--topk", type=int, default=30)
    ap.add_argument("--out", help="JSON report (written atomically)")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    ckpt = load_checkpoint(args.checkpoint or args.env, device="cpu")
    iters = args.iterations or DEFAULT_ITERATIONS.get(args.env, 10)
    ds = None
    if args.dataset:
        from lewm_fast.data import EpisodeDataset
        ds = EpisodeDataset(args.dataset, columns=("state",))
    runs, t0 = {}, time.perf_counter()
    # one planner and one set of envs for all seeds, as lewm_fast.eval.evaluate: reseeded / reset per seed
    planner = SimulatorPlanner(args.env, ckpt.stats["action"], frameskip=ckpt.model.cfg.frameskip,
                               num_samples=args.num_samples, iterations=iters, topk=args.topk, seed=seeds[0])
    envs = make_envs(args.env, args.num_eval)
    for seed in seeds:
        planner.generator.manual_seed(seed)
        pairs = dataset_pairs(ds, args.num_eval, 25, seed) if ds is not None else \
            expert_pairs(args.env, args.num_eval, 25, seed)
        runs[str(seed)] = run_episodes(args.env, pairs, "cem", planner, seed=seed, envs=envs)
        print(f"[oracle] {args.env} seed {seed}: {runs[str(seed)]['success_rate']:.0%}", flush=True)
    for e in envs + [planner.scratch]:
        if e is not None:
            e.close()
    rates = np.array([r["success_rate"] for r in runs.values()])
    report = {"env": args.env, "policy": "cem over the simulator (true-state cost)",
              "action_stats_from": str(args.checkpoint or args.env),
              "pairs": "dataset" if ds is not None else "expert", "dataset": args.dataset,
              "planner": {"num_samples": args.num_samples, "iterations": iters, "topk": args.topk, "horizon": 5,
                          "frameskip": ckpt.model.cfg.frameskip},
              "protocol": {"num_eval": args.num_eval, "goal_offset": 25, "budget": 50, "receding_horizon": 5,
                           "seeds": seeds},
              "success_rate_mean": float(rates.mean()), "success_rate_std": float(rates.std()),
              "wall_time_s": time.perf_counter() - t0, "command": "python -m bench.oracle_plan " + " ".join(
                  sys.argv[1:] if argv is None else argv), "runs": runs}
    if args.out:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    print(json.dumps({k: report[k] for k in ("env", "success_rate_mean", "success_rate_std", "wall_time_s")}))
    return report


if __name__ == "__main__":
    main()
