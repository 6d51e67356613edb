"""Batched frame rendering for the 2-D environments (native C++, `lewm_fast._native`).

One call renders N states into one (N, 224, 224, 3) uint8 array with the GIL released and the frames
split across threads, so rendering goal images or whole datasets costs no per-frame Python work.

PushT frames reproduce the reference renderer pixel for pixel: the scene is rasterised on a 512x512
canvas with the reference's integer drawing rules and resampled with OpenCV-compatible bilinear
arithmetic. The reference also marks contact points with small red anti-aliased lines while bodies
touch; `PushTEnv.render()` passes its contacts so those appear too, while rendering bare states (e.g.
re-rendering a dataset) has no contact information and draws none.
"""
from __future__ import annotations

import numpy as np

from lewm_fast import _native

PUSHT_GOAL_POSE = (256.0, 256.0, np.pi / 4)  # the light-green target T drawn in every frame
# The reference's named colours, palette order of csrc/render.cpp: outline colours of the objects; a
# filled shape is drawn in its outline colour * 1.2 (rounded, capped at 255) with the outline around it.
PUSHT_COLOURS = {"goal": (144, 238, 144), "agent": (65, 105, 225), "block": (119, 136, 153)}


def _rgb(what: str, v) -> tuple[int, int, int]:
    c = tuple(int(x) for x in v)
    if len(c) != 3 or min(c) < 0 or max(c) > 255:
        raise ValueError(f"{what} must be 3 integers in [0, 255], got {c}")
    return c


def _fill(rgb) -> tuple[int, int, int]:
    return tuple(min(255, int(np.floor(c * 1.2 + 0.5))) for c in rgb)


def pusht_palette(colours: dict | None) -> np.ndarray | None:
    """The renderer's (7, 3) palette with objects recoloured: colours maps "goal", "agent" and/or "block"
    to an RGB outline colour (fills derive from it as in the reference). None: the default palette."""
    if not colours:
        return None
    unknown = sorted(set(colours) - set(PUSHT_COLOURS))
    if unknown:
        raise ValueError(f"unknown PushT objects {unknown}; colours can be set for {sorted(PUSHT_COLOURS)}")
    c = {**PUSHT_COLOURS, **{k: _rgb(f"colour of {k}", v) for k, v in colours.items()}}
    # the goal T is drawn filled in its own colour; block and agent are a fill inside a rim
    return np.array([(255, 255, 255), c["goal"], c["agent"], _fill(c["agent"]), _fill(c["block"]), c["block"],
                     (211, 211, 211)], dtype=np.int32)
TWOROOM_AGENT_RADIUS = 7.0
TWOROOM_AGENT_COLOUR = (255, 0, 0)


def _as_states(states, min_dim: int, what: str) -> tuple[np.ndarray, bool]:
    arr = np.asarray(states, dtype=np.float64)
    single = arr.ndim == 1
    if single:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] < min_dim:
        raise ValueError(f"{what} states must have shape (N, >={min_dim}) or ({min_dim},), got {arr.shape}")
    if not np.isfinite(arr[:, :min_dim]).all():
        raise ValueError(f"{what} states contain NaN or inf")
    return np.ascontiguousarray(arr), single


def render_pusht(states, size: int = 224, goal_pose=PUSHT_GOAL_POSE, draw_goal: bool = True,
                 contacts=None, threads: int = 0, colours: dict | None = None) -> np.ndarray:
    """PushT frames for states (N, >=5) = agent x, y, block x, y, angle (...): (N, size, size, 3) uint8.

    contacts: optional (N, K, 4) contact-marker segments (ax, ay, bx, by; NaN rows = none), drawn as the
    reference's small red anti-aliased lines; for one state a (K, 4) array. A single state (shape (5,)
    or (7,)) gives one (size, size, 3) frame. size=512 returns the raw canvas. threads=0 uses every core.
    colours: recolour objects, e.g. {"block": (200, 40, 40)} (see pusht_palette); geometry is unchanged.
    """
    arr, single = _as_states(states, 5, "PushT")
    if contacts is not None:
        contacts = np.asarray(contacts, dtype=np.float64)
        if single:
            contacts = contacts[None]
        if contacts.ndim != 3 or contacts.shape[0] != arr.shape[0] or contacts.shape[2] != 4:
            raise ValueError(f"contacts must have shape (N, K, 4) (or (K, 4) for one state), got {contacts.shape}")
        contacts = np.ascontiguousarray(contacts)
    out = _native.render_pusht(arr, int(size), np.asarray(goal_pose, dtype=np.float64), bool(draw_goal),
                               contacts, int(threads), pusht_palette(colours))
    return out[0] if single else out


def render_tworoom(states, radius: float = TWOROOM_AGENT_RADIUS, threads: int = 0,
                   colour=TWOROOM_AGENT_COLOUR) -> np.ndarray:
    """TwoRoom frames for agent positions (N, >=2): (N, 224, 224, 3) uint8 (one frame for shape (2,)).
    colour: the agent dot's RGB (the reference's red by default)."""
    arr, single = _as_states(states, 2, "TwoRoom")
    out = _native.render_tworoom(arr, float(radius), int(threads), _rgb("colour", colour))
    return out[0] if single else out
