"""Data-collection policies, one module per environment (`lewm_fast.policies.<env>`).

Each module exposes `make(env, seed) -> policy`; a policy has `reset(obs, info)` (called after every
`env.reset`) and `act(obs, info) -> action` (float32, inside env.action_space).
"""
from __future__ import annotations

import importlib

_MODULES = {"pusht": "pusht_expert", "tworoom": "tworoom_expert"}


def make_policy(env_name: str, env, seed: int | None = None):
    """The collection policy for env_name (pusht, tworoom, or any `lewm_fast.policies.<env_name>` module)."""
    name = env_name.lower()
    module_name = _MODULES.get(name, name)
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{module_name}":
            raise
        raise ValueError(f"no policy for env {env_name!r} (looked for lewm_fast.policies.{module_name})") from None
    return module.make(env, seed)
