"""LeWorldModel (LeWM) in one file: ViT encoder, projectors, action embedder, AdaLN-zero predictor.

The math is the reference's (spec sections A and C.1); this is the eager path that defines the
semantics every fast path is tested against. Every size is a `LeWMConfig` field, so tests can build
tiny models; the default config is the paper's (~18.03 M parameters for PushT).

Shapes: B batch, S candidates, T time, D = embed_dim (192), A = action_dim (frameskip x env action
dim; 10 for PushT). Pixels enter as uint8 (..., 3, h, w) (normalised here) or as float tensors that
are already ImageNet-normalised.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class LeWMConfig:
    # encoder: ViT-Tiny (HuggingFace ViTModel semantics)
    image_size: int = 224
    patch_size: int = 14
    embed_dim: int = 192          # ViT width == latent width D
    enc_depth: int = 12
    enc_heads: int = 3
    enc_mlp_dim: int = 768
    enc_ln_eps: float = 1e-12
    # projector / pred_proj: Linear(D, proj_hidden) -> BatchNorm1d -> GELU -> Linear(proj_hidden, D)
    proj_hidden_dim: int = 2048
    # action embedder: Conv1d(A, act_smoothed_dim, 1) -> Linear(., act_mlp_scale * D) -> SiLU -> Linear(., D)
    env_action_dim: int = 2
    frameskip: int = 5            # raw env steps per action block (== action_block when planning)
    act_smoothed_dim: int = 10
    act_mlp_scale: int = 4
    # predictor: AdaLN-zero transformer over at most `num_frames` tokens
    num_frames: int = 3
    pred_depth: int = 6
    pred_heads: int = 16
    pred_dim_head: int = 64
    pred_mlp_dim: int = 2048
    pred_dropout: float = 0.1
    # planning context frames (history length H >= 1); the paper plans with 1
    history_len: int = 1

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.enc_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by enc_heads {self.enc_heads}")
        for name in ("num_frames", "history_len", "frameskip", "env_action_dim", "pred_depth", "enc_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def action_dim(self) -> int:
        """Width of one action block fed to the embedder (frameskip x env action dim)."""
        return self.frameskip * self.env_action_dim

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LeWMConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown LeWMConfig fields: {unknown}")
        return cls(**d)

    @classmethod
    def tiny(cls, **overrides) -> "LeWMConfig":
        """A few-thousand-parameter model for tests and CPU demos."""
        base = dict(image_size=32, patch_size=8, embed_dim=32, enc_depth=2, enc_heads=2, enc_mlp_dim=64,
                    proj_hidden_dim=64, pred_depth=2, pred_heads=4, pred_dim_head=8, pred_mlp_dim=64)
        base.update(overrides)
        return cls(**base)


def resize_frames(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, h, w) float frames -> (N, 3, size, size), bilinear with antialiasing. The one resize used
    everywhere (encode, collection at a reduced resolution), so stored and live frames match."""
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


# ----------------------------------------------------------------------------------------------
# Encoder: ViT with a CLS token (HuggingFace ViTModel semantics, fused qkv)
# ----------------------------------------------------------------------------------------------
class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, eps: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * dim)            # = cat(query, key, value) of the HF layout
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(B, N, C))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViTEncoder(nn.Module):
    def __init__(self, cfg: LeWMConfig):
        super().__init__()
        D = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.patch_embed = nn.Conv2d(3, D, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, D))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(ViTBlock(D, cfg.enc_heads, cfg.enc_mlp_dim, cfg.enc_ln_eps)
                                    for _ in range(cfg.enc_depth))
        self.norm = nn.LayerNorm(D, eps=cfg.enc_ln_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) normalised pixels -> (N, D) CLS token after the final LayerNorm."""
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        if x.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(f"image gives {x.shape[1]} patches; the encoder was built for "
                             f"{self.pos_embed.shape[1] - 1} (image {pixels.shape[-2]}x{pixels.shape[-1]}, "
                             f"patch {self.patch_size})")
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x[:, 0])   # LayerNorm is per-token: normalising CLS alone is the same


class ProjectorMLP(nn.Module):
    """Linear -> BatchNorm1d -> GELU -> Linear on flattened rows (projector and pred_proj)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, x.shape[-1])).view(x.shape)


class ActionEmbedder(nn.Module):
    """(B, T, A) action blocks -> (B, T, D): a per-step linear map (Conv1d, kernel 1) then an MLP."""

    def __init__(self, action_dim: int, smoothed_dim: int, dim: int, mlp_scale: int):
        super().__init__()
        self.patch_embed = nn.Conv1d(action_dim, smoothed_dim, kernel_size=1)
        self.embed = nn.Sequential(nn.Linear(smoothed_dim, mlp_scale * dim), nn.SiLU(), nn.Linear(mlp_scale * dim, dim))

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(actions.float().transpose(1, 2)).transpose(1, 2)
        return self.embed(x)


# ----------------------------------------------------------------------------------------------
# Predictor: AdaLN-zero conditioned causal transformer
# ----------------------------------------------------------------------------------------------
# The block is written once, as two halves over explicit weights (BlockWeights): the model's forward runs
# them on the live parameters (training: autograd, dropout; every row of the window; attention through
# SDPA, as the reference executes it), the planner's eager step on the packed weights (bf16 operands, KV
# cache while the window grows, the last row only in the last block, per-key fp32 attention;
# lewm_fast.planning.backends.EagerPredictor), and the Triton step fuses the same maths into its kernels
# (tested against these halves).
@dataclass
class BlockWeights:
    heads: int
    dim_head: int
    eps_plain1: float          # the block's norm1 (no affine), then modulation, then the attention's own norm
    attn_ln_w: torch.Tensor
    attn_ln_b: torch.Tensor
    eps_attn: float
    w_qkv: torch.Tensor        # (3 * inner, D); its dtype = the matmuls'
    sm_scale: float            # score scale dim_head ** -0.5 (applied to the fp32 queries / by the kernels)
    w_out: torch.Tensor
    b_out: torch.Tensor
    eps_plain2: float
    mlp_ln_w: torch.Tensor
    mlp_ln_b: torch.Tensor
    eps_mlp: float
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor


def modulated_norm(x, shift, scale1p, eps_plain, w, b, eps):
    """AdaLN-zero's branch input: LayerNorm without affine, x * (1 + scale) + shift (scale1p = 1 + scale,
    one addcmul), then the branch's own affine LayerNorm (as the reference: two norms per branch)."""
    h = torch.addcmul(shift, F.layer_norm(x, x.shape[-1:], eps=eps_plain), scale1p)
    return F.layer_norm(h, h.shape[-1:], w, b, eps)


def causal_attention(q, ks, vs, sm_scale: float = 1.0):
    """q (n, mq, H, dh): queries of the last mq of L positions whose keys/values are ks, vs (lists of L
    tensors (n, H, dh)); query i sees the first L - mq + i + 1. Written per key: the planner's windows
    hold <= num_frames (3-4) tokens, where a GEMM or flash kernel per (row, head) costs more than the
    arithmetic. fp32 in, fp32 out (n, mq, H * dh)."""
    n, mq, H, dh = q.shape
    if sm_scale != 1.0:
        q = q * sm_scale
    L = len(ks)
    outs = []
    for i in range(mq):
        qi = q[:, i]
        visible = L - mq + i + 1
        s = torch.stack([(qi * ks[j]).sum(-1) for j in range(visible)], dim=-1)
        p = torch.softmax(s, dim=-1)                                   # (n, H, visible)
        o = p[..., 0, None] * vs[0]
        for j in range(1, visible):
            o = torch.addcmul(o, p[..., j, None], vs[j])
        outs.append(o.reshape(n, 1, H * dh))
    return outs[0] if mq == 1 else torch.cat(outs, dim=1)


def attention_half(w: BlockWeights, x, shift, scale1p, gate, state=None, keep_cache=False, last_only=False,
                   dropout: float = 0.0, sdpa: bool = False):
    """x + gate * attention(modulated_norm(x)) for the m new tokens x (n, m, D); keys/values of earlier
    positions in `state` ((ks, vs) lists, or None). last_only: only the last row gets a query, output and
    residual (returns (n, 1, D)). Returns (x, (ks, vs) if keep_cache else None).

    sdpa: the whole window through causal scaled_dot_product_attention in the activations' dtype, with
    dropout on the probabilities (the model's forward: training and the reference's execution); else
    causal_attention in fp32 (the planner's step: KV cache, last_only)."""
    n, m, D = x.shape
    H, dh, md = w.heads, w.dim_head, w.w_qkv.dtype
    inner = H * dh
    if dropout and not sdpa:
        raise ValueError("dropout needs sdpa=True (the planner's per-key path is inference only)")
    h = modulated_norm(x, shift, scale1p, w.eps_plain1, w.attn_ln_w, w.attn_ln_b, w.eps_attn).to(md)
    if sdpa:
        if state is not None or keep_cache or last_only:
            raise ValueError("sdpa=True computes a whole window: no cache, no last_only")
        q, k, v = F.linear(h, w.w_qkv).view(n, m, 3, H, dh).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=w.sm_scale)
        out = F.linear(a.transpose(1, 2).reshape(n, m, inner), w.w_out, w.b_out)
        if dropout:
            out = F.dropout(out, dropout)
        return torch.addcmul(x, gate, out), None
    if last_only and m > 1:
        k, v = F.linear(h.reshape(n * m, D), w.w_qkv[inner:]).view(n, m, 2, H, dh).unbind(2)
        q = F.linear(h[:, -1], w.w_qkv[:inner]).view(n, 1, H, dh)
        x, gate = x[:, -1:], gate[:, -1:]
    else:
        q, k, v = F.linear(h.reshape(n * m, D), w.w_qkv).view(n, m, 3, H, dh).unbind(2)
    q, k, v = q.float(), k.float(), v.float()
    ks = ([] if state is None else list(state[0])) + list(k.unbind(1))
    vs = ([] if state is None else list(state[1])) + list(v.unbind(1))
    mq = q.shape[1]
    a = causal_attention(q, ks, vs, w.sm_scale).to(md)
    out = F.linear(a.reshape(n * mq, inner), w.w_out, w.b_out).view(n, mq, D)
    return torch.addcmul(x, gate, out), ((ks, vs) if keep_cache else None)


def mlp_half(w: BlockWeights, x, shift, scale1p, gate, dropout: float = 0.0):
    """x + gate * MLP(modulated_norm(x)), x (n, m, D); the matmuls as 2-D GEMMs over all n * m rows."""
    n, m, D = x.shape
    h = modulated_norm(x, shift, scale1p, w.eps_plain2, w.mlp_ln_w, w.mlp_ln_b, w.eps_mlp)
    h = F.gelu(F.linear(h.to(w.w1.dtype).reshape(n * m, D), w.w1, w.b1))
    if dropout:
        h = F.dropout(h, dropout)
    out = F.linear(h, w.w2, w.b2)
    if dropout:
        out = F.dropout(out, dropout)
    return torch.addcmul(x, gate, out.view(n, m, D))


class Attention(nn.Module):
    """Parameters of the attention branch (to_qkv, to_out, its own LayerNorm); computed by attention_half."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads, self.dim_head, self.dropout = heads, dim_head, dropout
        self.norm = nn.LayerNorm(dim)   # a second normalisation after the block's LN1, as the reference
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(dropout))


class FeedForward(nn.Module):
    """Parameters of the MLP branch (LayerNorm, Linear, GELU, Linear); computed by mlp_half."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))


class ConditionalBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.attn = Attention(dim, heads, dim_head, dropout)
        self.mlp = FeedForward(dim, mlp_dim, dropout)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.adaLN_modulation[1].weight)   # AdaLN-zero: every block starts as identity
        nn.init.zeros_(self.adaLN_modulation[1].bias)

    def weights(self, prep=None) -> BlockWeights:
        """The halves' weights: the live parameters (training, the model's forward), or each passed through
        prep(tensor, matmul: bool) (pack_predictor: detached copies, matmul weights in their dtype)."""
        a, net = self.attn, self.mlp.net
        p = prep or (lambda t, matmul=False: t)
        return BlockWeights(
            heads=a.heads, dim_head=a.dim_head, eps_plain1=self.norm1.eps, attn_ln_w=p(a.norm.weight),
            attn_ln_b=p(a.norm.bias), eps_attn=a.norm.eps, w_qkv=p(a.to_qkv.weight, True),
            sm_scale=a.dim_head ** -0.5, w_out=p(a.to_out[0].weight, True), b_out=p(a.to_out[0].bias),
            eps_plain2=self.norm2.eps, mlp_ln_w=p(net[0].weight), mlp_ln_b=p(net[0].bias), eps_mlp=net[0].eps,
            w1=p(net[1].weight, True), b1=p(net[1].bias), w2=p(net[4].weight, True), b2=p(net[4].bias))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        w = self.weights()
        p = self.attn.dropout if self.training else 0.0
        x, _ = attention_half(w, x, shift_msa, 1 + scale_msa, gate_msa, dropout=p, sdpa=True)
        return mlp_half(w, x, shift_mlp, 1 + scale_mlp, gate_mlp, dropout=p)


class PredictorTransformer(nn.Module):
    def __init__(self, cfg: LeWMConfig):
        super().__init__()
        D = cfg.embed_dim
        self.layers = nn.ModuleList(ConditionalBlock(D, cfg.pred_heads, cfg.pred_dim_head, cfg.pred_mlp_dim,
                                                     cfg.pred_dropout) for _ in range(cfg.pred_depth))
        self.norm = nn.LayerNorm(D)


class Predictor(nn.Module):
    def __init__(self, cfg: LeWMConfig):
        super().__init__()
        self.num_frames = cfg.num_frames
        self.pos_embedding = nn.Parameter(torch.randn(1, cfg.num_frames, cfg.embed_dim))
        self.transformer = PredictorTransformer(cfg)

    def forward(self, emb: torch.Tensor, act_emb: torch.Tensor) -> torch.Tensor:
        """(B, T, D) frame embeddings + (B, T, D) action embeddings -> (B, T, D); T <= num_frames."""
        T = emb.shape[1]
        if T > self.num_frames:
            raise ValueError(f"predictor window has {T} frames; at most num_frames={self.num_frames}")
        x = emb + self.pos_embedding[:, :T]
        for blk in self.transformer.layers:
            x = blk(x, act_emb)
        return self.transformer.norm(x)


# The predictor's weights gathered once for inference (the planner's eager and Triton steps and the
# kernels' whole-window forward all read this one pack): contiguous, detached, AdaLN linears stacked.
@dataclass
class PackedPredictor:
    pos: torch.Tensor          # (num_frames, D)
    mod_w: torch.Tensor        # (depth * 6D, D): every block's adaLN_modulation Linear, stacked
    mod_b: torch.Tensor        # (depth * 6D,)
    blocks: list               # BlockWeights per block (ConditionalBlock.weights through prep)
    final_w: torch.Tensor
    final_b: torch.Tensor
    final_eps: float
    heads: int

    @property
    def dtype(self) -> torch.dtype:
        """Activation dtype: residual stream, norms, outputs."""
        return self.pos.dtype

    @property
    def weight_dtype(self) -> torch.dtype:
        """Matmul weights' dtype = the dots' operand type."""
        return self.mod_w.dtype

    @property
    def dim(self) -> int:
        return self.pos.shape[1]


PACK_PRECISIONS = ("ieee", "fp32", "tf32", "bf16")


def check_pack_precision(precision: str) -> str:
    if precision not in PACK_PRECISIONS:
        raise ValueError(f"precision must be one of {PACK_PRECISIONS}, got {precision!r}")
    return precision


def pack_predictor(predictor, precision: str = "ieee", dtype: torch.dtype | None = None) -> PackedPredictor:
    """Gather a lewm_fast.model.Predictor's weights (detached, contiguous). dtype: activation dtype
    (default the module's); matmul weights are bf16 when precision == "bf16", else dtype."""
    check_pack_precision(precision)
    dtype = dtype or predictor.pos_embedding.dtype
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"unsupported compute dtype {dtype}")
    wdtype = torch.bfloat16 if precision == "bf16" else dtype

    def prep(t: torch.Tensor, matmul: bool = False) -> torch.Tensor:
        return t.detach().to(wdtype if matmul else dtype).contiguous()

    layers = predictor.transformer.layers
    blocks = [blk.weights(prep) for blk in layers]     # the block halves' own weight record, packed
    norm = predictor.transformer.norm
    return PackedPredictor(
        pos=prep(predictor.pos_embedding[0]),
        mod_w=prep(torch.cat([blk.adaLN_modulation[1].weight for blk in layers]), True),
        mod_b=prep(torch.cat([blk.adaLN_modulation[1].bias for blk in layers])),
        blocks=blocks, final_w=prep(norm.weight), final_b=prep(norm.bias), final_eps=norm.eps,
        heads=layers[0].attn.heads if len(layers) else 1)


# ----------------------------------------------------------------------------------------------
# LeWM
# ----------------------------------------------------------------------------------------------
class LeWM(nn.Module):
    def __init__(self, cfg: LeWMConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or LeWMConfig()
        self.encoder = ViTEncoder(cfg)
        self.projector = ProjectorMLP(cfg.embed_dim, cfg.proj_hidden_dim)
        self.predictor = Predictor(cfg)
        self.action_encoder = ActionEmbedder(cfg.action_dim, cfg.act_smoothed_dim, cfg.embed_dim, cfg.act_mlp_scale)
        self.pred_proj = ProjectorMLP(cfg.embed_dim, cfg.proj_hidden_dim)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    def normalize_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, h, w) -> ImageNet-normalised float; float input is taken as already normalised."""
        if pixels.dtype == torch.uint8:
            return (pixels.float() / 255.0 - self.pixel_mean) / self.pixel_std
        if not pixels.is_floating_point():
            raise TypeError(f"pixels must be uint8 or floating point, got {pixels.dtype}")
        return pixels

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(..., 3, h, w) pixels -> (..., D) embeddings: projector(CLS(encoder(pixels))).
        Frames whose size differs from cfg.image_size are resized (bilinear, antialiased) first."""
        lead = pixels.shape[:-3]
        x = self.normalize_pixels(pixels).reshape(-1, *pixels.shape[-3:])
        x = x.to(self.encoder.patch_embed.weight.dtype)
        if x.shape[-2:] != (self.cfg.image_size,) * 2:
            # frames of another size (e.g. 224 px env frames for a small CPU model) are resized here, the
            # one place training, planning and the science tools all go through; said once per size
            self._warn_resize(*x.shape[-2:])
            x = resize_frames(x, self.cfg.image_size)
        return self.projector(self.encoder(x)).view(*lead, -1)

    def _warn_resize(self, h: int, w: int) -> None:
        seen = self.__dict__.setdefault("_resize_warned", set())
        if (h, w) in seen:
            return
        seen.add((h, w))
        s = self.cfg.image_size
        warnings.warn(f"frames are {h}x{w} but the model takes {s}x{s}: resizing them (bilinear, antialiased)"
                      + (f"; this changes their aspect ratio from {h}:{w} to 1:1" if h != w else ""), stacklevel=3)

    def embed_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, T, A) action blocks -> (B, T, D)."""
        if actions.shape[-1] != self.cfg.action_dim:
            raise ValueError(f"action blocks have width {actions.shape[-1]}; the model expects "
                             f"{self.cfg.action_dim} (frameskip {self.cfg.frameskip} x env_action_dim "
                             f"{self.cfg.env_action_dim})")
        return self.action_encoder(actions)

    def predict(self, emb: torch.Tensor, act_emb: torch.Tensor) -> torch.Tensor:
        """(B, T, D) embeddings + (B, T, D) action embeddings -> (B, T, D): output t predicts frame t+1."""
        return self.pred_proj(self.predictor(emb, act_emb))

    def rollout(self, actions: torch.Tensor, *, pixels: torch.Tensor | None = None, emb: torch.Tensor | None = None,
                action_history: torch.Tensor | None = None) -> torch.Tensor:
        """Autoregressive rollout of S candidate action sequences from H context frames (spec C.1).

        actions: (B, S, T, A) candidate blocks; context as pixels (B, H, 3, h, w) or embeddings (B, H, D),
        encoded once and shared over S; action_history: (B, S, H-1, A) or (B, H-1, A), required when H > 1
        (block k leaves context frame k). Returns (B, S, H+T, D): the H context embeddings then T predictions.
        """
        if (pixels is None) == (emb is None):
            raise ValueError("pass exactly one of pixels= or emb= as the context")
        if actions.ndim != 4:
            raise ValueError(f"actions must be (B, S, T, A), got shape {tuple(actions.shape)}")
        ctx = self.encode(pixels) if emb is None else emb
        B, S, T, A = actions.shape
        H = ctx.shape[1]
        if ctx.shape[0] != B:
            raise ValueError(f"context batch {ctx.shape[0]} != actions batch {B}")
        if H > 1:
            if action_history is None:
                raise ValueError(f"history of {H} context frames needs action_history with {H - 1} blocks")
            if action_history.ndim == 3:
                action_history = action_history.unsqueeze(1).expand(B, S, -1, -1)
            if action_history.shape[:3] != (B, S, H - 1):
                raise ValueError(f"action_history must be (B, S, H-1, A) = ({B}, {S}, {H - 1}, {A}), "
                                 f"got {tuple(action_history.shape)}")
            actions = torch.cat([action_history.to(actions.dtype), actions], dim=2)
        act = self.embed_actions(actions.reshape(B * S, H - 1 + T, A))          # (BS, H-1+T, D)
        frames = list(ctx.unsqueeze(1).expand(B, S, H, ctx.shape[-1]).reshape(B * S, H, -1).unbind(1))
        W = self.cfg.num_frames
        for t in range(T):
            lo = max(0, H + t - W)
            window = torch.stack(frames[lo:], dim=1)
            frames.append(self.predict(window, act[:, lo:H + t])[:, -1])
        return torch.stack(frames, dim=1).view(B, S, H + T, -1)

    @staticmethod
    def cost(pred: torch.Tensor, goal_emb: torch.Tensor) -> torch.Tensor:
        """Planning cost (spec C.2): squared distance of the last prediction to the goal, summed over D.
        pred (B, S, T, D), goal_emb (B, D) -> (B, S)."""
        return (pred[:, :, -1] - goal_emb[:, None]).pow(2).sum(-1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

