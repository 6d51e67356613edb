"""Compile every predictor kernel for Hopper (sm_90) on a machine without a GPU.

    python -m lewm_fast.kernels.compile_check [--quick]

Triton can lower a kernel all the way to a cubin with no GPU or driver present (its wheel ships ptxas);
this catches what the CPU interpreter cannot: code the real compiler rejects, shared memory beyond
what an H100 offers per block, and register spills (reported from cuobjdump). It needs the kernels
built for the compiler, so it refuses to run with TRITON_INTERPRET=1. The configurations checked are every
GPU autotune config (mlp, adaln_modulation, attention) and norm_modulate's fixed launch config;
tests/kernels/test_kernel_compile_sm90.py checks they stay in sync. Arguments get the alignment hints
the JIT gives them at the paper's shapes (DIVISIBLE_INTS), without which the compiler cannot vectorise
loads and the spill figures are several times the real ones. Each line also says whether the PTX
holds Hopper's wgmma.mma_async (tensor-core dots from >= 64-row tiles per warpgroup).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

SMEM_LIMIT = 227 * 1024          # H100/H200: max dynamic shared memory per block
FLOAT_ARGS = {"sm_scale", "eps_plain", "eps_affine"}
# mode -> (activation element type, matmul weight element type, tl.dot input_precision)
MODES = {"fp32-ieee": ("fp32", "fp32", "ieee"), "fp32-tf32": ("fp32", "fp32", "tf32"),
         "bf16-weights": ("fp32", "bf16", "ieee"), "bf16": ("bf16", "bf16", "ieee")}
WEIGHT_PTRS = {"w_ptr", "wqkv_ptr", "wout_ptr", "w1_ptr", "w2_ptr"}   # matmul weights (the dot operand type)
MOD_PTRS = {"shift_ptr", "scale_ptr", "gate_ptr"}                     # AdaLN modulation chunks
# integer arguments that are multiples of 16 for the paper's model (D 192, hidden 2048, 16 x 64 heads,
# 6 x 6 x 192 modulation rows); every stride_* is too (rows of 192-multiples). Per kernel: N is a width
# in adaln_modulation but the sequence count in attention
DIVISIBLE_INTS = {"_adaln_modulation_kernel": {"N", "K"}, "_mlp_kernel": {"D", "HIDDEN"},
                  "_attention_kernel": {"D", "HEADS", "DH"}, "_norm_modulate_kernel": {"D"}}
# register spill (cuobjdump STACK bytes per thread) above which a kernel fails the check. Exact fp32
# attention (FMA dots: whole operand tiles in registers) with 2 stages spilled 5.4 KB/thread at T = 3
# under triton 3.6 (without alignment hints); with 1 stage (attention.default_stages) and the hints its
# worst is 0.8 KB under 3.7.1, the 64-row exact fp32 mlp 1.2 KB; tensor-core modes <= 288 B (the 64-row
# tf32 mlp). The bounds catch a return to the 3.6 figure; configs above them are left out of the lists.
MAX_SPILL = {"fp32-ieee": 1536, "fp32-tf32": 512, "bf16-weights": 512, "bf16": 512}


# attention's window shapes (name, window tokens T, cached C, store_kv, last_only): the uncached windows
# and the planner's steps: the first (1 token, keys/values stored), the growing window (1 new token,
# stored), the full window's last token (2 cached) and the slid window's last block (uncached, last row)
ATTENTION_WINDOWS = [("T=1", 1, 0, False, False), ("T=2", 2, 0, False, False), ("T=3", 3, 0, False, False),
                     ("T=1 kv", 1, 0, True, False), ("T=2 C=1 kv", 2, 1, True, False),
                     ("T=3 C=2 last", 3, 2, False, True), ("T=3 last", 3, 0, False, True)]


def _tiles(config: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items() if k.startswith("BLOCK"))


def specs(quick: bool):
    """(name, kernel, constexprs, num_warps, num_stages, mode): every GPU autotune config of mlp and
    attention (per mode their dot class's lists; attention's per window shape in ATTENTION_WINDOWS, its
    output kind's list) and adaln_modulation, and norm_modulate's launch default."""
    import torch
    import triton.language as tl

    from . import adaln_modulation as am, attention as at, mlp as ml, norm_modulate as nm
    from ._common import dot_class

    out = []
    for mode, (_, wdt, prec) in MODES.items():
        if quick and mode in ("fp32-tf32", "bf16-weights"):
            continue
        dot = tl.float32 if wdt == "fp32" else tl.bfloat16
        weight_dtype = torch.float32 if wdt == "fp32" else torch.bfloat16
        for c in am.GPU_CONFIGS:
            consts = {k: v for k, v in c.items() if k.startswith("BLOCK")}
            out.append((f"adaln_modulation {_tiles(c)}", am._adaln_modulation_kernel,
                        dict(consts, DOT_DTYPE=dot, PRECISION=prec), c["num_warps"], c["num_stages"], mode))
        cls = dot_class(weight_dtype, prec)
        for window, T, C, store_kv, last_only in ATTENTION_WINDOWS:
            if quick and window not in ("T=3", "T=3 C=2 last"):     # the heaviest of each output kind
                continue
            flags = at.window_flags(T, C, last_only)
            for c in at.GPU_CONFIGS[cls, at.output_kind(T, flags["OUT0"], flags["OUT1"])]:
                consts = dict(T=T, C=C, STORE_KV=store_kv, **flags, BLOCK_N=c["BLOCK_N"], BLOCK_D=256, BLOCK_DH=64,
                              BLOCK_K=c["BLOCK_K"], DOT_DTYPE=dot, PRECISION=prec)
                out.append((f"attention {window} {_tiles(c)}", at._attention_kernel, consts, c["num_warps"],
                            c["num_stages"], mode))
        for c in ml.GPU_CONFIGS[cls]:
            consts = {k: v for k, v in c.items() if k.startswith("BLOCK")}
            out.append((f"mlp {_tiles(c)}", ml._mlp_kernel, dict(consts, BLOCK_D=256, DOT_DTYPE=dot, PRECISION=prec),
                        c["num_warps"], c["num_stages"], mode))
        if mode in ("fp32-ieee", "bf16"):
            out.append(("norm_modulate", nm._norm_modulate_kernel, dict(MODULATE=True, BLOCK_M=16, BLOCK_D=256),
                        4, 1, mode))
    return out


def compile_sm90(kernel, constexprs: dict, num_warps: int, num_stages: int, elem: str, weight_elem: str) -> dict:
    """Lower one kernel to a cubin for sm_90; returns shared memory bytes, whether the PTX uses wgmma
    and, if cuobjdump is there, registers and stack (spill) bytes per thread."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    # the modulation (and the adaln kernel's output, which is the modulation) is stored in the matmul dtype
    mods = MOD_PTRS | ({"out_ptr"} if kernel.fn.__name__ == "_adaln_modulation_kernel" else set())
    signature = {n: ("constexpr" if n in constexprs else f"*{weight_elem}" if n in WEIGHT_PTRS | mods
                     else f"*{elem}" if n.endswith("_ptr") else "fp32" if n in FLOAT_ARGS else "i32")
                 for n in kernel.arg_names}
    # what the JIT specialises on at the paper's shapes: 16-byte aligned pointers (modulation chunks
    # start at multiples of D = 192 elements) and integers that are multiples of 16 (D, hidden, the row
    # strides); row counts (M, N sequences) vary with the batch and get no hint
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(kernel.arg_names)
             if n not in constexprs and (n.endswith("_ptr") or n.startswith("stride_")
                                             or n in DIVISIBLE_INTS[kernel.fn.__name__])}
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    info = {"shared_bytes": compiled.metadata.shared, "registers": None, "stack_bytes": None,
            "wgmma": "wgmma.mma_async" in compiled.asm["ptx"]}
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if os.path.exists(cuobjdump):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "k.cubin")
            with open(path, "wb") as f:
                f.write(compiled.asm["cubin"])
            usage = subprocess.run([cuobjdump, "--dump-resource-usage", path], capture_output=True, text=True).stdout
        m = re.search(r"REG:(\d+) STACK:(\d+)", usage)
        if m:
            info["registers"], info["stack_bytes"] = int(m.group(1)), int(m.group(2))
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="compile the predictor kernels for sm_90 without a GPU")
    ap.add_argument("--quick", action="store_true", help="T=3, exact fp32 and bf16 only (a third of the work)")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("compile_check: unset TRITON_INTERPRET (the kernels must be built for the compiler)")
        return 2
    failures = 0
    for name, kernel, consts, warps, stages, mode in specs(args.quick):
        elem, weight_elem, _ = MODES[mode]
        try:
            info = compile_sm90(kernel, consts, warps, stages, elem, weight_elem)
        except Exception as exc:  # report every kernel, then fail
            failures += 1
            print(f"FAIL {name:48s} {mode:12s} {type(exc).__name__}: {str(exc)[:300]}")
            continue
        spill = info["stack_bytes"]
        ok = info["shared_bytes"] <= SMEM_LIMIT and (spill is None or spill <= MAX_SPILL[mode])
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name:48s} {mode:12s} warps={warps} stages={stages} "
              f"smem={info['shared_bytes'] // 1024}KB regs={info['registers']} spill={spill}B (max {MAX_SPILL[mode]}) "
              f"wgmma={'yes' if info['wgmma'] else 'no'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
