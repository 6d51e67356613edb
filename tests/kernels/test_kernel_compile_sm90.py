"""The kernels compile for Hopper (sm_90) with the launchers' default configurations, fit its
shared memory and stay under compile_check.MAX_SPILL bytes of register spill per thread; runs on the CPU (Triton lowers to a cubin without a GPU). A subprocess, because here
the test process defines the kernels for the interpreter."""
import inspect
import re
import os
import subprocess
import sys

import pytest
import torch

from lewm_fast.kernels import adaln_modulation, attention, mlp


def _defaults(fn):
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect._empty}


def test_checked_configs_are_the_launcher_defaults():
    """compile_check lists configurations by hand: they must be the ones the launchers really use."""
    from lewm_fast.kernels.compile_check import MODES, specs

    checked = {name.split()[0]: (consts, warps, stages) for name, _, consts, warps, stages, _ in specs(quick=True)}
    a = _defaults(adaln_modulation.adaln_modulation)
    consts, warps, stages = checked["adaln_modulation"]
    assert (consts["BLOCK_M"], consts["BLOCK_N"], consts["BLOCK_K"], warps, stages) == \
        (a["block_m"], a["block_n"], a["block_k"], a["num_warps"], a["num_stages"])
    a = _defaults(attention.attention)
    consts, warps, stages = checked["attention"]
    assert (consts["BLOCK_N"], consts["BLOCK_K"], warps) == (a["block_n"], a["block_k"], a["num_warps"])
    assert a["num_stages"] is None            # chosen per mode by default_stages, which compile_check uses
    for name, _, consts, _, stages, mode in specs(quick=False):
        if name.startswith("attention"):
            wdt = torch.float32 if MODES[mode][1] == "fp32" else torch.bfloat16
            assert stages == attention.default_stages(wdt, MODES[mode][2]), (name, mode)
    a = _defaults(mlp.mlp)
    consts, warps, stages = checked["mlp"]
    assert (consts["BLOCK_M"], consts["BLOCK_H"], warps, stages) == \
        (a["block_m"], a["block_h"], a["num_warps"], a["num_stages"])


@pytest.mark.slow
def test_kernels_compile_for_sm90():
    pytest.importorskip("triton.backends.nvidia", reason="Triton's NVIDIA backend is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "lewm_fast.kernels.compile_check", "--quick"],
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("ok", "FAIL"))]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert len(lines) == 10 and all(ln.startswith("ok") for ln in lines), proc.stdout
    # the spill bound was really checked: cuobjdump reported every kernel's stack bytes
    assert all(re.search(r"spill=\d+B \(max \d+\)", ln) for ln in lines), proc.stdout
