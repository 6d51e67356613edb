"""Build the reference implementation (stable-worldmodel 0.1.1) for parity tests and benchmarks.

Test/bench-only: lewm_fast never imports the reference at run time. `import_reference()` returns None
(with the reason in REFERENCE_ERROR) when the package cannot be imported, so callers skip cleanly.
"""
from __future__ import annotations

import warnings

import torch

REFERENCE_ERROR: str | None = None
_swm = None


def import_reference():
    """Import stable_worldmodel on a CPU torch build; None if impossible (reason in REFERENCE_ERROR)."""
    global _swm, REFERENCE_ERROR
    if _swm is not None or REFERENCE_ERROR is not None:
        return _swm
    try:
        # PyPI's torchvision is a CUDA build: with CPU torch, `import torchvision` fails unless the two
        # operator schemas it registers kernels for exist (platform-notes.md).
        if not torch.cuda.is_available():
            try:
                torch.ops.torchvision.nms
            except (AttributeError, RuntimeError):
                lib = torch.library.Library("torchvision", "DEF")
                lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                import_reference._lib = lib  # keep the library object alive
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import stable_worldmodel as swm
            import stable_worldmodel.solver  # noqa: F401
            import stable_worldmodel.wm.lewm  # noqa: F401
            from transformers import ViTConfig, ViTModel  # noqa: F401
        _swm = swm
    except Exception as e:  # any import failure means: skip, and say why
        REFERENCE_ERROR = f"stable-worldmodel==0.1.1 not importable: {type(e).__name__}: {e}"
    return _swm


def build_reference_lewm(cfg):
    """A reference `LeWM` (HF ViTModel encoder + the reference's predictor/embedder/MLPs) shaped like cfg."""
    swm = import_reference()
    if swm is None:
        raise RuntimeError(REFERENCE_ERROR)
    from stable_worldmodel.wm.lewm import LeWM as RefLeWM
    from stable_worldmodel.wm.lewm import module as M
    from transformers import ViTConfig, ViTModel

    vit = ViTModel(ViTConfig(hidden_size=cfg.embed_dim, num_hidden_layers=cfg.enc_depth,
                             num_attention_heads=cfg.enc_heads, intermediate_size=cfg.enc_mlp_dim,
                             image_size=cfg.image_size, patch_size=cfg.patch_size,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                   add_pooling_layer=False)
    D = cfg.embed_dim
    predictor = M.Predictor(num_frames=cfg.num_frames, depth=cfg.pred_depth, heads=cfg.pred_heads,
                            mlp_dim=cfg.pred_mlp_dim, input_dim=D, hidden_dim=D, output_dim=D,
                            dim_head=cfg.pred_dim_head, dropout=cfg.pred_dropout, emb_dropout=0.0)
    embedder = M.Embedder(input_dim=cfg.action_dim, smoothed_dim=cfg.act_smoothed_dim, emb_dim=D,
                          mlp_scale=cfg.act_mlp_scale)
    proj = M.MLP(D, cfg.proj_hidden_dim, D, norm_fn=torch.nn.BatchNorm1d)
    pred_proj = M.MLP(D, cfg.proj_hidden_dim, D, norm_fn=torch.nn.BatchNorm1d)
    return RefLeWM(vit, predictor, embedder, proj, pred_proj)


def reference_from_ours(model):
    """A reference LeWM holding exactly our model's weights (via the official key layout), eval mode."""
    from lewm_fast.checkpoint import lewm_fast_to_official

    ref = build_reference_lewm(model.cfg)
    ref.load_state_dict(lewm_fast_to_official(model.state_dict(), model.cfg.enc_depth, naming="hf5"), strict=True)
    return ref.eval()
