"""Predictor backends: how one rollout step's window goes through the 6 AdaLN-zero blocks.

The rollout engine (engine.py) owns the loop over steps; a backend owns the per-window maths and
is swapped to change *how* it is computed, never *what*:

- `EagerPredictor`: plain PyTorch, CPU or GPU; defines the semantics. It reuses keys/values of
  earlier tokens while the window grows (causal attention makes them valid; spec C.1), computes the
  AdaLN modulation of every action token once per iteration for all 6 blocks in one matmul, and in
  the last block runs query/attention-output/MLP for the last token only (the only row pred_proj
  and the cost ever read).
- `TritonPredictor`: the same step through the fused kernels of `lewm_fast.kernels` (modulation
  once per iteration, KV cache while the window grows, last_only in the last block: 9 token passes
  per candidate at horizon 5), calling the kernel launchers directly.

Protocol (duck-typed): `supports_kv_cache`, `begin(act_emb)` once per row chunk and iteration, and
`window(x, lo, pos0, cache, keep_cache) -> (last_row_after_final_norm, cache)`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .precision import matmul_dtype


def _ln(x, w=None, b=None, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], w, b, eps)


class EagerPredictor:
    supports_kv_cache = True

    def __init__(self, model, precision: str = "fp32"):
        pred = model.predictor
        self.dtype = md = matmul_dtype(precision)
        self.heads = pred.transformer.layers[0].attn.heads
        self.dim_head = pred.transformer.layers[0].attn.dim_head
        inner = self.heads * self.dim_head
        D = model.cfg.embed_dim
        self.D = D
        self.pos = pred.pos_embedding.detach()[0].float()              # (W, D)
        w = lambda t: t.detach().to(md).contiguous()  # noqa: E731 - matmul operands in the compute dtype
        f = lambda t: t.detach().float().contiguous()  # noqa: E731 - norms, biases and residuals stay fp32
        self.layers = []
        mod_w, mod_b = [], []
        for blk in pred.transformer.layers:
            # fold attention's 1/sqrt(dh) into the query rows (exact for dh = 64: a power of two)
            qkv = torch.cat([blk.attn.to_qkv.weight[:inner] * self.dim_head ** -0.5, blk.attn.to_qkv.weight[inner:]])
            lin = blk.adaLN_modulation[1]
            mod_w.append(lin.weight)
            mod_b.append(lin.bias)
            self.layers.append(dict(
                eps1=blk.norm1.eps, eps2=blk.norm2.eps,
                attn_ln=(f(blk.attn.norm.weight), f(blk.attn.norm.bias), blk.attn.norm.eps),
                w_qkv=w(qkv), w_q=w(qkv[:inner]), w_kv=w(qkv[inner:]),
                w_out=w(blk.attn.to_out[0].weight), b_out=blk.attn.to_out[0].bias.detach().to(md),
                ff_ln=(f(blk.mlp.net[0].weight), f(blk.mlp.net[0].bias), blk.mlp.net[0].eps),
                w1=w(blk.mlp.net[1].weight), b1=blk.mlp.net[1].bias.detach().to(md),
                w2=w(blk.mlp.net[4].weight), b2=blk.mlp.net[4].bias.detach().to(md),
            ))
        # all blocks' AdaLN linears stacked: one (depth*6D, D) matmul per iteration instead of 6 per step
        self.mod_w = w(torch.cat(mod_w, 0))
        self.mod_b = torch.cat(mod_b, 0).detach().to(md)
        n = pred.transformer.norm
        self.final_ln = (f(n.weight), f(n.bias), n.eps)
        self.mods = None

    def begin(self, act_emb: torch.Tensor) -> None:
        """act_emb (n, L, D) for this row chunk: precompute every block's 6 modulation vectors."""
        n, L, D = act_emb.shape
        c = F.silu(act_emb.reshape(n * L, D)).to(self.dtype)       # 2-D: one GEMM, no batched-matmul path
        m = F.linear(c, self.mod_w, self.mod_b).float()
        # (n, L, depth, 6, D): block l, chunk k (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp)
        m = m.view(n, L, len(self.layers), 6, D)
        m[:, :, :, 1] += 1.0     # store 1 + scale: modulate(x) = x * (1 + scale) + shift becomes one addcmul
        m[:, :, :, 4] += 1.0
        self.mods = m

    @staticmethod
    def _attend(q, ks, vs):
        """Causal attention for windows of <= num_frames tokens, written per key: at these lengths
        (<= 3 keys) a GEMM/flash kernel per (row, head) costs more than the arithmetic, and keeping
        the cache as per-position tensors means it is never concatenated.
        q (n, mq, H, dh) holds the last mq of the L positions whose keys/values are ks, vs: lists of
        L tensors (n, H, dh), all fp32. The 1/sqrt(dh) scale is folded into the query weights.
        Returns (n, mq, H*dh) fp32."""
        n, mq, H, dh = q.shape
        L = len(ks)
        outs = []
        for i in range(mq):
            qi = q[:, i]
            visible = L - mq + i + 1
            s = torch.stack([(qi * ks[j]).sum(-1) for j in range(visible)], dim=-1)
            p = torch.softmax(s, dim=-1)                                   # (n, H, visible), fp32
            o = p[..., 0, None] * vs[0]
            for j in range(1, visible):
                o = torch.addcmul(o, p[..., j, None], vs[j])
            outs.append(o.reshape(n, 1, H * dh))
        return outs[0] if mq == 1 else torch.cat(outs, dim=1)

    def window(self, x, lo, pos0, cache, keep_cache):
        """x (n, m, D): the window's frame embeddings from window position pos0 on (earlier positions are
        in `cache`: per block, lists of per-position keys and values; or pos0 == 0). Action index of
        window position p is lo + p. Returns (n, D): the last token after the final LayerNorm, and the
        per-block (keys, values) if keep_cache."""
        n, m, D = x.shape
        H, dh, md = self.heads, self.dim_head, self.dtype
        inner = H * dh
        x = x.float() + self.pos[pos0:pos0 + m]
        mods = self.mods[:, lo + pos0:lo + pos0 + m]                    # (n, m, depth, 6, D)
        new_cache = [] if keep_cache else None
        last_block = len(self.layers) - 1
        for li, p in enumerate(self.layers):
            sh_a, sc_a, g_a, sh_f, sc_f, g_f = mods[:, :, li].unbind(2)
            h = torch.addcmul(sh_a, _ln(x, eps=p["eps1"]), sc_a)
            h = _ln(h, *p["attn_ln"][:2], eps=p["attn_ln"][2]).to(md)
            last_only = li == last_block and m > 1
            if last_only:
                # only the last row is read after this block: its query, and every row's key/value
                kv = F.linear(h.reshape(n * m, D), p["w_kv"]).view(n, m, 2, H, dh)
                k, v = kv[:, :, 0], kv[:, :, 1]
                q = F.linear(h[:, -1], p["w_q"]).view(n, 1, H, dh)
            else:
                qkv = F.linear(h.reshape(n * m, D), p["w_qkv"]).view(n, m, 3, H, dh)
                q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            # attention runs in fp32 (softmax statistics included): upcast once per block, cache fp32
            q, k, v = q.float(), k.float(), v.float()
            ks = ([] if cache is None else list(cache[li][0])) + list(k.unbind(1))
            vs = ([] if cache is None else list(cache[li][1])) + list(v.unbind(1))
            if keep_cache:
                new_cache.append((ks, vs))
            a = self._attend(q, ks, vs).to(md)
            mq = q.shape[1]
            if last_only:
                x, g_a, sh_f, sc_f, g_f = x[:, -1:], g_a[:, -1:], sh_f[:, -1:], sc_f[:, -1:], g_f[:, -1:]
            x = torch.addcmul(x, g_a, F.linear(a.reshape(n * mq, inner), p["w_out"], p["b_out"]).view(n, mq, D))
            h = torch.addcmul(sh_f, _ln(x, eps=p["eps2"]), sc_f)
            h = _ln(h, *p["ff_ln"][:2], eps=p["ff_ln"][2]).to(md).reshape(n * mq, D)
            h = F.gelu(F.linear(h, p["w1"], p["b1"]))
            x = torch.addcmul(x, g_f, F.linear(h, p["w2"], p["b2"]).view(n, mq, D))
        out = _ln(x[:, -1], self.final_ln[0], self.final_ln[1], self.final_ln[2])
        return out, new_cache


class TritonPredictor:
    """The same step through the fused kernels of lewm_fast.kernels, weights packed once here.

    Like EagerPredictor: the AdaLN modulation of every action token is computed once per row chunk
    and iteration (one adaln_modulation launch for all blocks), keys/values of earlier window tokens
    come from a KV cache (N, depth, num_frames, 2, inner) while the window grows (9 token passes per
    candidate at horizon 5, not 12), and the last block computes only the row pred_proj reads."""
    supports_kv_cache = True

    def __init__(self, model, precision: str = "fp32"):
        try:
            from lewm_fast.kernels import adaln_modulation, attention, mlp, norm_modulate, predictor
        except ImportError as e:
            raise ImportError(f"kernels='triton' needs lewm_fast.kernels (Triton): {e}") from e
        self._k = (adaln_modulation.adaln_modulation, attention.attention, mlp.mlp, norm_modulate.norm_modulate)
        self.packed = predictor.pack_predictor(model.predictor, precision=precision,
                                               dtype=torch.float32)
        self.kp = "tf32" if precision == "tf32" else "ieee"   # the tl.dot knob (bf16 = the weights' dtype)
        self.num_frames = model.cfg.num_frames
        blk = model.predictor.transformer.layers[0].attn
        self.inner = blk.heads * blk.dim_head
        self.mods = None

    def begin(self, act_emb):
        """act_emb (n, L, D): every block's modulation of every action token, once (activation dtype)."""
        adaln, p = self._k[0], self.packed
        self.mods = adaln(act_emb.to(p.dtype).contiguous(), p.mod_w, p.mod_b, precision=self.kp)

    def window(self, x, lo, pos0, cache, keep_cache):
        """As EagerPredictor.window; the cache is one tensor (depth, n, num_frames, 2, inner), updated in place."""
        _, attention, mlp, norm_modulate = self._k
        p, D = self.packed, self.packed.dim
        n, m, _ = x.shape
        depth = len(p.blocks)
        if pos0 and cache is None:
            raise RuntimeError("a window starting at position > 0 needs the cache of the earlier positions")
        if cache is None and keep_cache:
            cache = torch.empty(depth, n, self.num_frames, 2, self.inner, dtype=p.dtype, device=x.device)
        x = (x.to(p.dtype) + p.pos[pos0:pos0 + m]).contiguous()
        mods = self.mods[:, lo + pos0:lo + pos0 + m]
        for i, blk in enumerate(p.blocks):
            sh_a, sc_a, g_a, sh_f, sc_f, g_f = (mods[..., (6 * i + j) * D:(6 * i + j + 1) * D] for j in range(6))
            xn = norm_modulate(x, sh_a, sc_a, blk.attn_ln_w, blk.attn_ln_b, blk.eps_plain1, blk.eps_attn)
            last = i == depth - 1            # only the last row is read after the last block
            x = attention(xn, blk.w_qkv, blk.w_out, blk.b_out, x, g_a, p.heads, precision=self.kp, last_only=last,
                          kv_cache=None if cache is None else cache[i], cached=pos0, store_kv=keep_cache)
            if last:
                sh_f, sc_f, g_f = sh_f[:, -1:], sc_f[:, -1:], g_f[:, -1:]
            x = mlp(x, sh_f, sc_f, g_f, blk.mlp_ln_w, blk.mlp_ln_b, blk.w1, blk.b1, blk.w2, blk.b2,
                    precision=self.kp, eps_plain=blk.eps_plain2, eps_affine=blk.eps_mlp)
        out = norm_modulate(x[:, -1], None, None, p.final_w, p.final_b, eps_affine=p.final_eps)
        return out.float(), (cache if keep_cache else None)


def make_predictor_backend(name: str, model, precision: str):
    if name in ("eager", "graph"):
        return EagerPredictor(model, precision)
    if name == "triton":
        return TritonPredictor(model, precision)
    raise ValueError(f"unknown predictor backend {name!r}")
