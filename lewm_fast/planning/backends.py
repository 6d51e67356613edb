"""The predictor's planning step, defined once (`PredictorStep.window`), with two sets of operations.

One rollout step through the 6 AdaLN-zero blocks, as the engine (engine.py) calls it:

- `begin(act_emb)` once per row chunk and iteration: every block's AdaLN modulation of every action
  token, in one matmul / one launch (the conditioning of a token does not change across windows);
- `window(x, lo, pos0, cache, keep_cache) -> (last row after the final norm, cache)`: the window's
  new tokens from position pos0 on; keys/values of earlier positions come from `cache` (valid while
  the window grows: causal attention; spec C.1), so horizon 5 costs 9 token passes per candidate,
  not 12; in the last block only the last row gets a query, attention output and MLP (the only row
  pred_proj and the cost read).

Both backends read the weights from one pack built at construction (lewm_fast.model.pack_predictor)
and differ only in how a block half is computed:
- `EagerPredictor`: the model's own block halves (lewm_fast.model.attention_half / mlp_half, which
  training's Predictor.forward runs too) in plain PyTorch on any device; defines the semantics (fp32:
  the reference's maths);
- `TritonPredictor`: the fused kernels of `lewm_fast.kernels`, called directly (norm_modulate,
  attention with its KV-cache form, mlp, adaln_modulation).
"""
from __future__ import annotations

import dataclasses
import warnings

import torch
import torch.nn.functional as F

from lewm_fast.model import attention_half, mlp_half, pack_predictor


class PredictorStep:
    supports_kv_cache = True

    def __init__(self, model, precision: str = "fp32"):
        self.packed = pack_predictor(model.predictor, precision=precision, dtype=torch.float32)
        self.depth = len(self.packed.blocks)
        self.heads = self.packed.heads
        self.inner = self.packed.blocks[0].w_out.shape[1] if self.depth else 0
        self.dim_head = self.inner // max(self.heads, 1)
        self.num_frames = model.cfg.num_frames
        self.mods = None

    def begin(self, act_emb: torch.Tensor) -> None:
        """act_emb (n, L, D): the action embeddings of every window position the steps will use."""
        D = self.packed.dim
        if act_emb.ndim != 3 or act_emb.shape[-1] != D:
            raise ValueError(f"act_emb must be (n, L, {D}); got {tuple(act_emb.shape)}")
        self.mods = self.modulation(act_emb)

    def _check_window(self, x, lo, pos0, cache):
        # shape checks only (no host syncs: the step is captured in CUDA graphs); the kernels would
        # otherwise index past the modulation rows or the position table without an error
        if self.mods is None:
            raise RuntimeError("call begin(act_emb) before window()")
        n, L = self.mods.shape[:2]
        D = self.packed.dim
        if x.ndim != 3 or x.shape[0] != n or x.shape[2] != D or x.shape[1] < 1:
            raise ValueError(f"x must be ({n}, m >= 1, {D}) (begin() had {n} rows of width {D}); "
                             f"got {tuple(x.shape)}")
        m = x.shape[1]
        if pos0 < 0 or pos0 + m > self.num_frames:
            raise ValueError(f"window positions {pos0}..{pos0 + m - 1} pass the predictor's "
                             f"{self.num_frames} frames")
        if lo < 0 or lo + pos0 + m > L:
            raise ValueError(f"window needs action tokens {lo + pos0}..{lo + pos0 + m - 1}; begin() had {L}")
        if pos0 and cache is None:
            raise RuntimeError("a window starting at position > 0 needs the cache of the earlier positions")

    def window(self, x, lo, pos0, cache, keep_cache):
        """x (n, m, D): the window's frame embeddings from window position pos0 on (earlier positions
        are in `cache`, one entry per block; or pos0 == 0). Action index of window position p is lo + p.
        Returns (n, D) fp32: the last token after the final LayerNorm, and the cache if keep_cache."""
        self._check_window(x, lo, pos0, cache)
        return self._blocks(x, self.mods, lo, pos0, cache, keep_cache)

    def _blocks(self, x, mods, lo, pos0, cache, keep_cache):
        n, m, _ = x.shape
        x = x.float() + self.packed.pos[pos0:pos0 + m]
        mods = mods[:, lo + pos0:lo + pos0 + m]
        states = self.cache_in(cache, keep_cache, n, x.device)
        new_cache = [] if keep_cache else None
        for i in range(self.depth):
            sh_a, sc_a, g_a, sh_f, sc_f, g_f = self.block_mods(mods, i)
            last = i == self.depth - 1
            x, state = self.attention_half(i, x, sh_a, sc_a, g_a, states[i], pos0, keep_cache, last)
            if keep_cache:
                new_cache.append(state)
            if last:     # rows are per token from here on: the last token's modulation only
                sh_f, sc_f, g_f = sh_f[:, -1:], sc_f[:, -1:], g_f[:, -1:]
            x = self.mlp_half(i, x, sh_f, sc_f, g_f)
        return self.final_norm(x[:, -1]), new_cache


class EagerPredictor(PredictorStep):
    """The step in PyTorch: the model's own block halves (lewm_fast.model.attention_half / mlp_half, the
    maths training runs) over the pack's weights (matmul weights in the matmul dtype); the cache is kept as per-position
    tensors, never concatenated. Matmul operands in the precision's dtype; norms, softmax and the residual
    in fp32.

    compile=True runs the 6 blocks of each window through torch.compile (inductor; on CPU it fuses the
    norms, the per-key attention, the dtype casts and the residual updates between the GEMMs into
    generated C++ loops). Measured on the full-size PushT solve, 2-core EPYC, one thread
    (bench/reports/cem-pusht-cpu-compile.json): fp32 24.2 s against eager's 29.9 s (the same plan as the
    reference's); bf16 no gain (14.7 s against 14.1 s: its GEMMs already dominate). Same maths, other
    rounding order (within ~1e-6 in fp32, tests/test_planner_compile.py). The first call of each window shape
    compiles (seconds to a minute; inductor caches on disk); if compiling or running the compiled code
    fails, the step warns once and runs eagerly from then on (`compiled` says which ran, `compile_error`
    why)."""

    def __init__(self, model, precision: str = "fp32", compile: bool = False):
        super().__init__(model, precision)
        p = self.packed
        self.dtype = md = p.weight_dtype
        # the pack's blocks as they are; F.linear wants its bias in the weights' dtype (bf16: the three
        # bias vectors per block cast once, the matmul weights are the pack's own)
        self.weights = p.blocks if md == p.dtype else [
            dataclasses.replace(b, b_out=b.b_out.to(md), b1=b.b1.to(md), b2=b.b2.to(md)) for b in p.blocks]
        self.mod_b = p.mod_b.to(md)
        self.compiled, self.compile_error = bool(compile), None
        # dynamic=None: shapes are specialised first, row counts marked dynamic once they change (the
        # last row chunk, environments finishing in an evaluation) instead of one compile per count
        self._compiled_blocks = torch.compile(self._blocks) if compile else None

    def window(self, x, lo, pos0, cache, keep_cache):
        if not self.compiled:
            return super().window(x, lo, pos0, cache, keep_cache)
        self._check_window(x, lo, pos0, cache)      # outside the compiled region: its errors are the caller's
        try:
            return self._compiled_blocks(x, self.mods, lo, pos0, cache, keep_cache)
        except Exception as e:   # no C++ compiler, an inductor bug: the eager step computes the same thing
            self.compiled, self.compile_error = False, f"{type(e).__name__}: {e}"
            warnings.warn(f"torch.compile of the predictor step failed; running it eagerly: {self.compile_error}",
                          RuntimeWarning, stacklevel=2)
            return self._blocks(x, self.mods, lo, pos0, cache, keep_cache)

    def modulation(self, act_emb):
        """(n, L, depth, 6, D) fp32: block l, chunk k (shift/scale/gate msa, shift/scale/gate mlp), 1 + scale stored."""
        n, L, D = act_emb.shape
        c = F.silu(act_emb.reshape(n * L, D)).to(self.dtype)     # 2-D: one GEMM, no batched-matmul path
        m = F.linear(c, self.packed.mod_w, self.mod_b).float().view(n, L, self.depth, 6, D)
        m[:, :, :, 1] += 1.0     # modulate(x) = x * (1 + scale) + shift becomes one addcmul
        m[:, :, :, 4] += 1.0
        return m

    @staticmethod
    def block_mods(mods, i):
        return mods[:, :, i].unbind(2)

    def cache_in(self, cache, keep_cache, n, device):
        return [None] * self.depth if cache is None else cache

    def attention_half(self, i, x, shift, scale, gate, state, pos0, keep_cache, last):
        return attention_half(self.weights[i], x, shift, scale, gate, state, keep_cache, last_only=last)

    def mlp_half(self, i, x, shift, scale, gate):
        return mlp_half(self.weights[i], x, shift, scale, gate)

    def final_norm(self, x):
        p = self.packed
        return F.layer_norm(x, x.shape[-1:], p.final_w, p.final_b, p.final_eps)


def triton_kernels():
    """The launchers TritonPredictor calls: (adaln_modulation, attention, mlp, norm_modulate,
    attention_by_token). Raises
    ImportError without Triton (RuntimeError when Triton cannot initialise); switches.kernels_status
    asks the same question before a planner picks kernels='triton'."""
    from lewm_fast.kernels import adaln_modulation, attention, mlp, norm_modulate

    return (adaln_modulation.adaln_modulation, attention.attention, mlp.mlp, norm_modulate.norm_modulate,
            attention.attention_by_token)


class TritonPredictor(PredictorStep):
    """The step through the fused kernels; the KV cache is one tensor (depth, n, num_frames, 2, inner)
    updated in place, modulation rows are strided views of one (n, L, depth * 6D) tensor stored in the
    matmul dtype.

    split_window: an uncached window of m >= 2 output tokens (the slid windows, every block but the
    last) runs as m one-token attention launches through the KV-cache form (token t attends to tokens
    < t stored by the launches before it) instead of one launch holding m output accumulators. The
    one-token programs cover 64 sequences (one wgmma M tile per warpgroup; the whole-window kernel spills
    there and runs 32 on mma.sync), at the price of re-reading the weights per token and writing/reading
    the window's keys/values (bench/roofline.py models both; the first GPU run times both,
    bench/gpu_stages.py). Same maths, same kernel; the default is the one the roofline predicts faster."""

    SPLIT_WINDOW = False

    def __init__(self, model, precision: str = "fp32", split_window: bool | None = None):
        try:
            self._k = triton_kernels()
        except ImportError as e:
            raise ImportError(f"kernels='triton' needs lewm_fast.kernels (Triton): {e}") from e
        super().__init__(model, precision)
        self.kp = precision          # the planner's names are the kernels' (bf16: the weights' dtype decides)
        self.split_window = self.SPLIT_WINDOW if split_window is None else bool(split_window)

    def modulation(self, act_emb):
        p = self.packed
        # stored in the matmul dtype (bf16: half the bytes every block half reads); kernels upcast on load
        return self._k[0](act_emb.to(p.dtype).contiguous(), p.mod_w, p.mod_b, precision=self.kp,
                          out_dtype=p.weight_dtype)

    def block_mods(self, mods, i):
        D = self.packed.dim
        return tuple(mods[..., (6 * i + j) * D:(6 * i + j + 1) * D] for j in range(6))

    def cache_in(self, cache, keep_cache, n, device):
        if cache is None and keep_cache:
            p = self.packed
            cache = list(torch.empty(self.depth, n, self.num_frames, 2, self.inner, dtype=p.dtype,
                                     device=device).unbind(0))
        return [None] * self.depth if cache is None else cache

    def attention_half(self, i, x, shift, scale, gate, state, pos0, keep_cache, last):
        blk, norm_modulate, attention = self.packed.blocks[i], self._k[3], self._k[1]
        x = x.contiguous()
        xn = norm_modulate(x, shift, scale, blk.attn_ln_w, blk.attn_ln_b, blk.eps_plain1, blk.eps_attn)
        if self.split_window and pos0 == 0 and x.shape[1] >= 2 and not last:
            # one launch per token, chained through the step's cache when it is kept (else a scratch window)
            return self._k[4](xn, blk.w_qkv, blk.w_out, blk.b_out, x, gate, self.heads, precision=self.kp,
                              kv_cache=state, store_kv=keep_cache), state
        out = attention(xn, blk.w_qkv, blk.w_out, blk.b_out, x, gate, self.heads, precision=self.kp,
                        last_only=last, kv_cache=state, cached=pos0, store_kv=keep_cache)
        return out, state

    def mlp_half(self, i, x, shift, scale, gate):
        blk = self.packed.blocks[i]
        return self._k[2](x, shift, scale, gate, blk.mlp_ln_w, blk.mlp_ln_b, blk.w1, blk.b1, blk.w2, blk.b2,
                          precision=self.kp, eps_plain=blk.eps_plain2, eps_affine=blk.eps_mlp)

    def final_norm(self, x):
        p = self.packed
        return self._k[3](x, None, None, p.final_w, p.final_b, eps_affine=p.final_eps).float()


def make_predictor_backend(name: str, model, precision: str, compile: bool = False):
    if name in ("eager", "graph"):
        return EagerPredictor(model, precision, compile=compile)
    if compile:
        raise ValueError("compile=True applies to the torch kernels (EagerPredictor); the Triton step is "
                         "already fused")
    if name == "triton":
        return TritonPredictor(model, precision)
    raise ValueError(f"unknown predictor backend {name!r}")
