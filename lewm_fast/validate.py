"""Entry checks shared by the public API: finite numbers in, finite numbers out, clear errors naming
the offending argument. (Frame / action-history layout checks live in lewm_fast.planning.inputs.)"""
from __future__ import annotations

import math

import numpy as np
import torch

# ImageNet normalisation of pixels in [0, 1] (lewm_fast.model): the range float frames must lie in.
_MEAN = np.array([0.485, 0.456, 0.406])
_STD = np.array([0.229, 0.224, 0.225])
NORMALISED_RANGE = (float((-_MEAN / _STD).min()), float(((1 - _MEAN) / _STD).max()))   # (-2.118, 2.640)


def finite_tensor(name: str, x) -> torch.Tensor:
    """x as a float32 tensor; ValueError naming `name` and the first bad index if any entry is NaN/inf."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    bad = ~torch.isfinite(t)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0]) if t.ndim else ()
        raise ValueError(f"{name} contains NaN or inf (first at index {idx}: {t[idx].item()})")
    return t


def finite_number(name: str, value, low: float | None = None, high: float | None = None,
                  low_open: bool = False) -> float:
    """A finite float in [low, high] (or (low, high] with low_open); ValueError naming `name` otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {v}")
    return v


def check_stats(name: str, stats: dict) -> None:
    """Normalisation statistics {"mean", "std"}: finite, std > 0."""
    if not isinstance(stats, dict) or not {"mean", "std"} <= set(stats):
        raise ValueError(f"{name} must be a dict with 'mean' and 'std', got {type(stats).__name__}"
                         + (f" with keys {sorted(stats)}" if isinstance(stats, dict) else ""))
    finite_tensor(f"{name}['mean']", stats["mean"])
    std = finite_tensor(f"{name}['std']", stats["std"])
    if not (std > 0).all():
        raise ValueError(f"{name}['std'] must be > 0 everywhere, got min {std.min().item()}")


def check_frames(name: str, x) -> None:
    """A non-empty batch; float frames finite; float frames that can only be raw pixels (nothing negative,
    above the ImageNet-normalised range) refused with the fix, others outside that range warned about."""
    shape = tuple(getattr(x, "shape", ()))
    if shape and shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {shape}); pass at least one environment")
    is_float = (x.is_floating_point() if isinstance(x, torch.Tensor)
                else isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating))
    if not is_float or not shape:
        return
    t = finite_tensor(name, x)
    lo, hi = NORMALISED_RANGE
    mn, mx = t.min().item(), t.max().item()
    if mn < lo - 1e-3 or mx > hi + 1e-3:
        what = (f"{name} are float frames with values in [{mn:.3g}, {mx:.3g}], outside the ImageNet-normalised "
                f"range [{lo:.3f}, {hi:.3f}] of float frames")
        if mn >= 0:   # nothing negative yet above the range: raw pixels, never normalised ones
            raise ValueError(f"{what}; they look like raw pixels: pass them as uint8")
        import warnings
        warnings.warn(f"{what}; planning with them as given", stacklevel=3)


def check_solver_options(var_scale, num_samples, iterations, topk, options: dict) -> None:
    finite_number("var_scale", var_scale, 0, low_open=True)
    for k in ("num_samples", "iterations", "topk"):
        v = {"num_samples": num_samples, "iterations": iterations, "topk": topk}[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{k} must be an integer >= 1, got {v!r}")
    if topk > num_samples:
        raise ValueError(f"topk ({topk}) must not exceed num_samples ({num_samples})")
    ranges = {"temperature": (0, None, True), "alpha": (0, 1, False), "noise_beta": (None, None, False)}
    for k, (low, high, low_open) in ranges.items():
        if k in options:
            finite_number(k, options[k], low, high, low_open)
    for k in ("action_low", "action_high"):
        if options.get(k) is not None:
            finite_tensor(k, options[k])


def parse_json(text: str, source: str):
    """json.loads whose error names the file (or argument) it came from."""
    import json
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def read_json(path, what: str = "JSON file") -> dict:
    """A JSON object from a file; errors name the file (missing, unreadable, malformed, not an object)."""
    from pathlib import Path
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    data = parse_json(path.read_text(), str(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
