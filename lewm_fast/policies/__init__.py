"""Data-collection policies, one module per environment (`lewm_fast.policies.<env>`).

Each module exposes `make(env, seed) -> policy`; a policy has `reset(obs, info)` (called after every
`env.reset`) and `act(obs, info) -> action` (float32, inside env.action_space).
"""
from __future__ import annotations

import importlib

_MODULES = {"pusht": "pusht_expert", "tworoom": "tworoom_expert"}


def make_policy(env_name: str, env, seed: int | None = None, noise: float | None = None):
    """The collection policy for env_name (pusht, tworoom, or any `lewm_fast.policies.<env_name>` module).
    `noise` (PushT only) overrides the policy's Gaussian action-noise std; None keeps its default."""
    name = env_name.lower()
    module_name = _MODULES.get(name, name)
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{module_name}":
            raise
        raise ValueError(f"no policy for env {env_name!r} (looked for lewm_fast.policies.{module_name})") from None
    if noise is None:
        return module.make(env, seed)
    if not (noise >= 0 and noise < float("inf")):
        raise ValueError(f"policy noise must be a finite number >= 0, got {noise}")
    policy = module.make(env, seed)
    if not hasattr(policy, "noise"):
        raise ValueError(f"the {env_name} policy ({type(policy).__name__}) has no action-noise setting")
    policy.noise = float(noise)
    return policy
