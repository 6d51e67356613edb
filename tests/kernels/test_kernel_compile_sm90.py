"""The kernels compile for Hopper (sm_90) in every configuration they launch with (every GPU autotune
config of mlp, adaln_modulation and attention, norm_modulate's fixed config), fit its shared
memory and stay under compile_check.MAX_SPILL bytes of register spill per thread; runs on the CPU
(Triton lowers to a cubin without a GPU). A subprocess, because here the test process defines the
kernels for the interpreter."""
import os
import re
import subprocess
import sys

import pytest
import torch

from lewm_fast.kernels import _common, adaln_modulation, attention, mlp
from lewm_fast.kernels.compile_check import ATTENTION_WINDOWS


def _launch(consts, warps, stages, names):
    return tuple(consts[n] for n in names) + (warps, stages)


def _listed(configs, names):
    return sorted(tuple(c[n] for n in names) + (c["num_warps"], c["num_stages"]) for c in configs)


def test_checked_configs_are_the_launch_configs():
    """compile_check lists every configuration a launch can pick: each autotune list in full, per mode
    the mlp list of that mode's dot class, and per attention window shape its (dot class, output kind)
    list."""
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
        cls = _common.dot_class(weight_dtype, prec)
        names = ("BLOCK_N", "BLOCK_K")
        for window, T, C, store_kv, last_only in ATTENTION_WINDOWS:
            flags = attention.window_flags(T, C, last_only)
            listed = attention.GPU_CONFIGS[cls, attention.output_kind(T, flags["OUT0"], flags["OUT1"])]
            ours = [(c, w, st) for n, _, c, w, st, _ in checked if n.startswith(f"attention {window} BLOCK")]
            assert sorted(_launch(c, w, st, names) for c, w, st in ours) == _listed(listed, names), (window, mode)
            for c, _, _ in ours:        # compiled as the launcher specialises this window
                assert {k: c[k] for k in ("T", "C", "STORE_KV", *flags)} == dict(T=T, C=C, STORE_KV=store_kv, **flags)


def test_attention_output_kinds():
    """Which list a window uses, against the kernel's accumulators counted by hand: "one" when a single
    token's output rows are accumulated, "window" for two or three; and compile_check's window shapes
    cover every one the planner launches (horizon 5, history 1: grow 1 -> 2 -> 3 tokens with the
    cache, then slid 3-token windows; the last block keeps only its last row)."""
    def kind(T, C, last_only):
        f = attention.window_flags(T, C, last_only)
        return attention.output_kind(T, f["OUT0"], f["OUT1"])

    assert [kind(*w) for w in [(1, 0, False), (2, 1, False), (2, 1, True), (3, 2, False), (3, 2, True),
                               (3, 0, True), (2, 0, True)]] == ["one"] * 7
    assert [kind(*w) for w in [(2, 0, False), (3, 0, False), (3, 1, False)]] == ["window"] * 3
    def specialisation(T, C, store_kv, last_only):
        return tuple(sorted(dict(T=T, C=C, STORE_KV=store_kv, **attention.window_flags(T, C, last_only)).items()))

    checked = {specialisation(*w[1:]) for w in ATTENTION_WINDOWS}
    # (window tokens, cached, keys/values kept for the next step) per rollout step, as engine.py steps
    for T, C, keep in [(1, 0, True), (2, 1, True), (3, 2, False), (3, 0, False), (3, 0, False)]:
        for last_only in (False, True):                      # blocks 0-4, then the last block
            assert specialisation(T, C, keep, last_only) in checked, (T, C, keep, last_only)

def test_autotuners_use_the_listed_configs():
    """On a GPU the tuners get every listed config; under the interpreter exactly one (no benchmarking)."""
    for gpu, interp in ((adaln_modulation.GPU_CONFIGS, adaln_modulation.INTERPRETER_CONFIG),
                        (mlp.GPU_CONFIGS["bf16"], mlp.INTERPRETER_CONFIG)):
        tuned = _common.tuning_configs(gpu, interp, interpreted=False)
        assert [dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages) for c in tuned] == gpu
        assert all(c["BLOCK_M"] >= 64 for c in gpu[:2])      # Hopper-sized tiles lead each list
    former_default = dict(BLOCK_N=16, BLOCK_K=32, num_warps=8)      # attention's fixed launch before autotuning
    stages = {"bf16": attention.default_stages(torch.bfloat16, "ieee"),
              "tf32": attention.default_stages(torch.float32, "tf32"),
              "ieee": attention.default_stages(torch.float32, "ieee")}
    for (cls, kind), gpu in attention.GPU_CONFIGS.items():
        tuned = _common.tuning_configs(gpu, attention.INTERPRETER_CONFIG, interpreted=False)
        assert [dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages) for c in tuned] == gpu
        assert gpu[-1] == dict(former_default, num_stages=stages[cls]), (cls, kind)     # kept as the fallback
    # one-token windows (the planner's cached steps) lead with a wgmma-sized 64 sequences per program
    assert [attention.GPU_CONFIGS[cls, "one"][0]["BLOCK_N"] for cls in ("bf16", "tf32")] == [64, 64]
    if _common.interpreting():
        assert len(adaln_modulation._TUNED.configs) == 1
        assert all(len(t.configs) == 1 for t in mlp._TUNED.values())
        assert all(len(t.configs) == 1 for t in attention._TUNED.values())
    assert set(mlp._TUNED) == set(mlp.GPU_CONFIGS) == {"bf16", "tf32", "ieee"}
    assert set(attention._TUNED) == set(attention.GPU_CONFIGS) == \
        {(cls, kind) for cls in ("bf16", "tf32", "ieee") for kind in ("one", "window")}


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
    # the 64-row bf16 tiles lower to Hopper's warpgroup MMA; 32 / 16-row ones (the former defaults) do not
    wgmma = {ln.split(" bf16 ")[0].split(None, 1)[1].strip(): ln.endswith("wgmma=yes")
             for ln in lines if " bf16 " in ln}
    assert wgmma["mlp BLOCK_M=64 BLOCK_H=32"] and wgmma["adaln_modulation BLOCK_M=64 BLOCK_N=128 BLOCK_K=64"]
    assert not wgmma["mlp BLOCK_M=32 BLOCK_H=32"]
    assert wgmma["attention T=3 C=2 last BLOCK_N=64 BLOCK_K=32"]
    assert not wgmma["attention T=3 C=2 last BLOCK_N=16 BLOCK_K=32"]
