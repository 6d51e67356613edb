"""The kernels compile for Hopper (sm_90) in every configuration they launch with (every GPU autotune
config of mlp and adaln_modulation, attention's and norm_modulate's fixed configs), fit its shared
memory and stay under compile_check.MAX_SPILL bytes of register spill per thread; runs on the CPU
(Triton lowers to a cubin without a GPU). A subprocess, because here the test process defines the
kernels for the interpreter."""
import inspect
import os
import re
import subprocess
import sys

import pytest
import torch

from lewm_fast.kernels import _common, adaln_modulation, attention, mlp


def _defaults(fn):
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect._empty}


def _launch(consts, warps, stages, names):
    return tuple(consts[n] for n in names) + (warps, stages)


def _listed(configs, names):
    return sorted(tuple(c[n] for n in names) + (c["num_warps"], c["num_stages"]) for c in configs)


def test_checked_configs_are_the_launch_configs():
    """compile_check lists every configuration a launch can pick: each autotune list in full, per mode
    the mlp list of that mode's dot class, and attention's defaults."""
    from lewm_fast.kernels.compile_check import MODES, specs

    for mode, (_, wdt, prec) in MODES.items():
        checked = [s for s in specs(quick=False) if s[5] == mode]
        weight_dtype = torch.float32 if wdt == "fp32" else torch.bfloat16
        names = ("BLOCK_M", "BLOCK_N", "BLOCK_K")
        assert sorted(_launch(c, w, st, names) for n, _, c, w, st, _ in checked if n.startswith("adaln")) == \
            _listed(adaln_modulation.GPU_CONFIGS, names), mode
        names = ("BLOCK_M", "BLOCK_H")
        assert sorted(_launch(c, w, st, names) for n, _, c, w, st, _ in checked if n.startswith("mlp")) == \
            _listed(mlp.GPU_CONFIGS[_common.dot_class(weight_dtype, prec)], names), mode
        for name, _, consts, warps, stages, _ in checked:
            if name.startswith("attention"):
                assert stages == attention.default_stages(weight_dtype, prec), (name, mode)
    a = _defaults(attention.attention)
    consts, warps = next((c, w) for n, _, c, w, _, _ in specs(quick=True) if n.startswith("attention"))
    assert (consts["BLOCK_N"], consts["BLOCK_K"], warps) == (a["block_n"], a["block_k"], a["num_warps"])
    assert a["num_stages"] is None            # chosen per mode by default_stages, which compile_check uses


def test_autotuners_use_the_listed_configs():
    """On a GPU the tuners get every listed config; under the interpreter exactly one (no benchmarking)."""
    for gpu, interp in ((adaln_modulation.GPU_CONFIGS, adaln_modulation.INTERPRETER_CONFIG),
                        (mlp.GPU_CONFIGS["bf16"], mlp.INTERPRETER_CONFIG)):
        tuned = _common.tuning_configs(gpu, interp, interpreted=False)
        assert [dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages) for c in tuned] == gpu
        assert all(c["BLOCK_M"] >= 64 for c in gpu[:2])      # Hopper-sized tiles lead each list
    if _common.interpreting():
        assert len(adaln_modulation._TUNED.configs) == 1
        assert all(len(t.configs) == 1 for t in mlp._TUNED.values())
    assert set(mlp._TUNED) == set(mlp.GPU_CONFIGS) == {"bf16", "tf32", "ieee"}


@pytest.mark.slow
def test_kernels_compile_for_sm90():
    pytest.importorskip("triton.backends.nvidia", reason="Triton's NVIDIA backend is not installed")
    from lewm_fast.kernels.compile_check import specs

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "lewm_fast.kernels.compile_check", "--quick"],
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("ok", "FAIL"))]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert len(lines) == len(specs(quick=True)) and all(ln.startswith("ok") for ln in lines), proc.stdout
    # the spill bound was really checked: cuobjdump reported every kernel's stack bytes
    assert all(re.search(r"spill=\d+B \(max \d+\)", ln) for ln in lines), proc.stdout
    # the 64-row bf16 tiles lower to Hopper's warpgroup MMA; the 32-row ones (the former defaults) do not
    wgmma = {ln.split(" bf16 ")[0].split(None, 1)[1].strip(): ln.endswith("wgmma=yes")
             for ln in lines if " bf16 " in ln}
    assert wgmma["mlp BLOCK_M=64 BLOCK_H=32"] and wgmma["adaln_modulation BLOCK_M=64 BLOCK_N=128 BLOCK_K=64"]
    assert not wgmma["mlp BLOCK_M=32 BLOCK_H=32"]
