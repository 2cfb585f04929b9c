"""Load the original ``depth_anything_v2_vit{s,b,l,g}.pth`` files into the transformers model.

The original release stores a DINOv2 backbone under ``pretrained.`` and a DPT head under
``depth_head.``. We rename those keys to the transformers checkpoint layout used on the hub
(``backbone.encoder.layer.N.attention.attention.query`` ...) and hand the result to
``DepthAnythingForDepthEstimation.from_pretrained``, so whatever key conversions the installed
transformers applies to hub checkpoints apply here too.
"""

from __future__ import annotations

import logging
import os
import re

import torch
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

from .._compat import transformers_dtype
from .variants import variant_for_width

logger = logging.getLogger(__name__)

# (original pattern, transformers replacement); applied to keys of the original checkpoint.
_BACKBONE_RULES = [
    (r"^pretrained\.cls_token$", "backbone.embeddings.cls_token"),
    (r"^pretrained\.mask_token$", "backbone.embeddings.mask_token"),
    (r"^pretrained\.pos_embed$", "backbone.embeddings.position_embeddings"),
    (r"^pretrained\.patch_embed\.proj\.", "backbone.embeddings.patch_embeddings.projection."),
    (r"^pretrained\.norm\.", "backbone.layernorm."),
    (r"^pretrained\.blocks\.(\d+)\.norm1\.", r"backbone.encoder.layer.\1.norm1."),
    (r"^pretrained\.blocks\.(\d+)\.norm2\.", r"backbone.encoder.layer.\1.norm2."),
    (r"^pretrained\.blocks\.(\d+)\.attn\.proj\.", r"backbone.encoder.layer.\1.attention.output.dense."),
    (r"^pretrained\.blocks\.(\d+)\.ls1\.gamma$", r"backbone.encoder.layer.\1.layer_scale1.lambda1"),
    (r"^pretrained\.blocks\.(\d+)\.ls2\.gamma$", r"backbone.encoder.layer.\1.layer_scale2.lambda1"),
    (r"^pretrained\.blocks\.(\d+)\.mlp\.fc1\.", r"backbone.encoder.layer.\1.mlp.fc1."),
    (r"^pretrained\.blocks\.(\d+)\.mlp\.fc2\.", r"backbone.encoder.layer.\1.mlp.fc2."),
    # ViT-G uses a fused SwiGLU feed-forward block.
    (r"^pretrained\.blocks\.(\d+)\.mlp\.w12\.", r"backbone.encoder.layer.\1.mlp.weights_in."),
    (r"^pretrained\.blocks\.(\d+)\.mlp\.w3\.", r"backbone.encoder.layer.\1.mlp.weights_out."),
]

# The original DPT fuses from the deepest level (refinenet4) to the shallowest (refinenet1);
# transformers numbers its fusion layers in that order of use.
_FUSION_INDEX = {"4": "0", "3": "1", "2": "2", "1": "3"}

# layerN_rn and refinenetN are renumbered in _rename_key.
_HEAD_RULES = [
    (r"^depth_head\.projects\.(\d)\.", r"neck.reassemble_stage.layers.\1.projection."),
    (r"^depth_head\.resize_layers\.(\d)\.", r"neck.reassemble_stage.layers.\1.resize."),
    (r"^depth_head\.scratch\.output_conv1\.", "head.conv1."),
    (r"^depth_head\.scratch\.output_conv2\.0\.", "head.conv2."),
    (r"^depth_head\.scratch\.output_conv2\.2\.", "head.conv3."),
]

_FUSION_PARTS = [
    (r"out_conv\.", "projection."),
    (r"resConfUnit1\.conv1\.", "residual_layer1.convolution1."),
    (r"resConfUnit1\.conv2\.", "residual_layer1.convolution2."),
    (r"resConfUnit2\.conv1\.", "residual_layer2.convolution1."),
    (r"resConfUnit2\.conv2\.", "residual_layer2.convolution2."),
]


def _rename_key(key: str) -> str | None:
    for pattern, repl in _BACKBONE_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    m = re.match(r"^depth_head\.scratch\.layer(\d)_rn\.(.*)$", key)
    if m:
        return f"neck.convs.{int(m.group(1)) - 1}.{m.group(2)}"
    m = re.match(r"^depth_head\.scratch\.refinenet(\d)\.(.*)$", key)
    if m:
        rest = m.group(2)
        for pattern, repl in _FUSION_PARTS:
            if re.match(pattern, rest):
                return f"neck.fusion_stage.layers.{_FUSION_INDEX[m.group(1)]}." + re.sub(pattern, repl, rest, count=1)
        return None
    for pattern, repl in _HEAD_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def convert_original_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original Depth Anything V2 state dict to the transformers (hub) layout.

    The fused ``attn.qkv`` projection is split into query, key and value. Raises ``ValueError``
    listing the keys it does not recognise, so a wrong file is never half-loaded.
    """
    if any(k.startswith("module.") for k in state_dict):
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        m = re.match(r"^pretrained\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", key)
        if m:
            layer, kind = m.groups()
            q, k, v = value.chunk(3, dim=0)
            base = f"backbone.encoder.layer.{layer}.attention.attention"
            converted[f"{base}.query.{kind}"] = q.clone()
            converted[f"{base}.key.{kind}"] = k.clone()
            converted[f"{base}.value.{kind}"] = v.clone()
            continue
        new_key = _rename_key(key)
        if new_key is None:
            unknown.append(key)
        else:
            converted[new_key] = value
    if unknown:
        shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        raise ValueError(f"{len(unknown)} keys are not part of a Depth Anything V2 checkpoint: {shown}")
    return converted


def read_original_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an original ``.pth`` safely (``weights_only=True``); accepts a bare or wrapped state dict."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Depth Anything V2 checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return obj


def load_original_checkpoint(
    path: str | os.PathLike,
    config: DepthAnythingConfig | None = None,
    dtype: torch.dtype | None = None,
) -> DepthAnythingForDepthEstimation:
    """Build a transformers Depth Anything V2 model from an original ``.pth`` file.

    The architecture is recognised from the ViT width (``pretrained.cls_token``) unless ``config``
    is given. Every weight must be used and every parameter filled; otherwise ``ValueError``.
    """
    original = read_original_checkpoint(path)
    if config is None:
        if "pretrained.cls_token" not in original:
            raise ValueError(f"{path}: no 'pretrained.cls_token'; not an original Depth Anything V2 checkpoint")
        config = variant_for_width(original["pretrained.cls_token"].shape[-1]).to_config()
    try:
        state_dict = convert_original_state_dict(original)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    model, info = DepthAnythingForDepthEstimation.from_pretrained(
        None, config=config, state_dict=state_dict, output_loading_info=True, **transformers_dtype(dtype)
    )
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise ValueError(f"{path}: weights do not fit the Depth Anything V2 architecture: {problems}")
    logger.info("Loaded original Depth Anything V2 checkpoint %s", path)
    return model.eval()
