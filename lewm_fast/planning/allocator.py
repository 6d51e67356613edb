"""Keep freed CPU memory in the process instead of handing it back to the OS after every tensor.

A CEM solve allocates and frees the same large temporaries every iteration (the 1500 x 6912 AdaLN
modulation of a 300-sample PushT solve is 41 MB in fp32). glibc serves blocks above its mmap threshold
(at most 32 MB) with fresh mmap pages and returns them on free, so every iteration can pay a page fault
per 4 KB: the likely reason copy_ took 34% of a profiled bf16 solve
(bench/reports/profile-cem-pusht-bf16-before-allocator-cpu.json). With mmap off for the heap and
trimming disabled, freed blocks are reused. Values are untouched: only where the bytes live changes.

Process-wide (it is the C allocator) and freed memory is never returned to the OS, so a library user
opts in: the CPU Planner applies it once when the environment sets LEWM_FAST_KEEP_FREED_MEMORY=1.
Evaluation processes (`python -m lewm_fast.eval`, `bench.learning_curve`) turn it on by default
(`default_on_in_this_process`; LEWM_FAST_KEEP_FREED_MEMORY=0 opts out): the whole 50-episode PushT
evaluation took 838 s with it against 916 s without (bench/reports/eval-pusht-cpu-50ep*.json). Measured: with
another job on the second core the profiled bf16 solve went 11.8 -> 9.0 s; on an idle machine, two
bench.cem runs gave 9.0 s without and 9.6 s with it (bench/reports/cem-pusht-cpu-epyc*.json), no gain;
on a later EPYC host (2026-12-04, idle) it helped every variant: reference 41.2 -> 33.2 s, eager bf16
14.1 -> 12.7 s, eager fp32 29.9 -> 22.9 s (bench/reports/cem-pusht-cpu-compile*.json; separate runs).
A no-op off glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4        # glibc malloc.h
ENV_VAR = "LEWM_FAST_KEEP_FREED_MEMORY"
_applied: bool | None = None


def default_on_in_this_process() -> bool:
    """For a process that only evaluates (its memory goes back at exit anyway): apply now unless the
    environment says LEWM_FAST_KEEP_FREED_MEMORY=0. True when applied."""
    return keep_freed_memory(default=True)


def opted_in(default: bool = False) -> bool:
    """Whether the environment asks for it (LEWM_FAST_KEEP_FREED_MEMORY=1), or `default` when it is unset."""
    return os.environ.get(ENV_VAR, "1" if default else "0") == "1"


def keep_freed_memory(default: bool = False) -> bool:
    """Apply once per process when opted in (the environment variable, else `default`); True when glibc
    accepted both settings. The first call decides for the whole process."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not opted_in(default):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):    # musl, macOS, Windows: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    return _applied
