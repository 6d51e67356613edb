"""bench/roofline.py: its FLOP counts agree with bench/flops.py's independent count, its launch counts
with the kernels' structure, and the committed report is what the script computes."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import roofline  # noqa: E402
from bench.flops import lewm_solve_flops  # noqa: E402
from lewm_fast.model import LeWMConfig  # noqa: E402

KERNELS = ("adaln_modulation", "norm_modulate", "attention", "mlp", "final_norm")


def _by_kernel(path, precision="bf16", B=50):
    return {lc.kernel: lc for lc in roofline.solve_launches(LeWMConfig(), B=B, precision=precision, path=path)}


def test_whole_window_flops_are_the_reference_count_with_causal_attention():
    cfg, B, S, it = LeWMConfig(), 50, 300, 30
    k = _by_kernel("whole_window")
    ref = lewm_solve_flops(cfg, num_samples=S, iterations=it, mode="reference")
    inner = cfg.pred_heads * cfg.pred_dim_head
    causal_pairs = sum(n * (n + 1) // 2 for n in (1, 2, 3, 3, 3))       # windows at horizon 5, history 1
    want = B * (ref["predictor_linear"] + cfg.pred_depth * causal_pairs * 4 * inner * S * it)
    assert sum(k[name].flops for name in ("adaln_modulation", "attention", "mlp")) == pytest.approx(want, rel=1e-12)


def test_kv_cache_path_does_the_floor_minus_last_only():
    cfg, B, S, it = LeWMConfig(), 50, 300, 30
    k = _by_kernel("kv_cache")
    floor = lewm_solve_flops(cfg, num_samples=S, iterations=it)
    D, inner, M = cfg.embed_dim, cfg.pred_heads * cfg.pred_dim_head, cfg.pred_mlp_dim
    # last block, per step: rows computed but not needed (new tokens minus the last one) skip q, out, MLP
    skipped_rows = sum(new - 1 for _, new in ((1, 1), (2, 1), (3, 1), (3, 3), (3, 3)))
    skipped = skipped_rows * (2 * D * inner + 2 * inner * D + 4 * D * M) * S * it
    # the causal pairs those skipped queries would have formed (windows of 3 recomputed: queries 0 and 1)
    skipped += 2 * (1 + 2) * 4 * inner * S * it
    # the floor runs the AdaLN linear with every token pass (9); computed once per iteration it is 5 tokens
    skipped += (9 - 5) * cfg.pred_depth * 2 * D * 6 * D * S * it
    want = B * (floor["predictor_linear"] + floor["predictor_attention"] - skipped)
    assert sum(k[name].flops for name in ("adaln_modulation", "attention", "mlp")) == pytest.approx(want, rel=1e-12)


def test_launch_counts():
    ww, kv = _by_kernel("whole_window"), _by_kernel("kv_cache")
    assert ww["adaln_modulation"].count == 5 * 30 and kv["adaln_modulation"].count == 30   # once per iteration
    for d in (ww, kv):
        assert d["attention"].count == d["mlp"].count == d["norm_modulate"].count == 6 * 5 * 30


def test_committed_report_is_current():
    committed = json.loads((ROOT / "bench" / "reports" / "roofline-pusht-h200.json").read_text())
    assert committed == json.loads(json.dumps(roofline.model()))
    bf16 = committed["paths"]["kv_cache/bf16"]
    assert bf16["predicted_ms_graph"] < committed["target_ms"]        # the design can reach the target


def test_split_window_path_moves_keys_and_values_not_flops():
    """kv_cache_split launches each uncached 3-token window (2 slid windows x 5 blocks per iteration; the
    last block is last_only) as 3 one-token launches: the same FLOPs, 2 more launches per window, and
    more DRAM traffic by the keys/values round trip (tokens 0, 1 written; token 0 read by the second
    launch, tokens 0 and 1 by the third) plus the weights read twice more."""
    cfg, B, it = LeWMConfig(), 50, 30
    today, split = _by_kernel("kv_cache_today"), _by_kernel("kv_cache_split")
    N, D, inner = B * 300, cfg.embed_dim, cfg.pred_heads * cfg.pred_dim_head
    windows = 2 * (cfg.pred_depth - 1) * it
    assert split["attention"].flops == pytest.approx(today["attention"].flops, rel=1e-12)
    assert split["attention"].count - today["attention"].count == 2 * windows
    kv_token = N * 2 * inner * 4                          # one token's keys + values, fp32 activations
    weights = (3 * inner * D + D * inner) * 2             # bf16
    extra = windows * (5 * kv_token + 2 * weights)
    assert split["attention"].dram_bytes - today["attention"].dram_bytes == pytest.approx(extra, rel=1e-12)
    # 32-sequence window programs are mma.sync; the split's one-token programs (64) are wgmma
    assert roofline.launch("attention", cfg, N, 3, "bf16", path="kv_cache_today").mma_sync
    assert not roofline.launch("attention", cfg, N, 3, "bf16", path="kv_cache_split", new=1).mma_sync
    with pytest.raises(ValueError, match="one-token"):
        roofline.launch("attention", cfg, N, 3, "bf16", path="kv_cache_split")
