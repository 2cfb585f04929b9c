"""Feed-forward depth priors (M_FFD) behind one factory, :func:`load_prior`."""

from __future__ import annotations

import json
import logging
import os

import torch
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

from .._compat import diffusers_dtype, transformers_dtype
from .depth_anything import (
    POSITION_EMBEDDINGS,
    PREPROCESSING_MODES,
    DepthAnythingPrior,
    OriginalDinov2Embeddings,
    check_position_embedding,
    check_preprocessing,
    set_position_embedding,
)
from .original_checkpoint import convert_original_state_dict, load_original_checkpoint
from .variants import VARIANTS, DA2Variant, get_variant

logger = logging.getLogger(__name__)

__all__ = [
    "DepthAnythingPrior",
    "OriginalDinov2Embeddings",
    "POSITION_EMBEDDINGS",
    "PREPROCESSING_MODES",
    "VARIANTS",
    "PriorSpec",
    "check_position_embedding",
    "check_preprocessing",
    "DA2Variant",
    "convert_original_state_dict",
    "get_variant",
    "load_original_checkpoint",
    "load_prior",
    "set_position_embedding",
]

PriorSpec = str | os.PathLike | DepthAnythingPrior | DepthAnythingForDepthEstimation


def _is_size_name(spec: str) -> bool:
    try:
        get_variant(spec)
        return True
    except ValueError:
        return False


def _hub_pth(spec: str, cache_dir: str | None, local_files_only: bool) -> str:
    """``owner/repo/path/file.pth`` on the hub -> local cached path."""
    from huggingface_hub import hf_hub_download

    owner, repo, filename = spec.split("/", 2)
    return hf_hub_download(f"{owner}/{repo}", filename, cache_dir=cache_dir, local_files_only=local_files_only)


def load_prior(
    spec: PriorSpec,
    *,
    preprocessing: str | None = None,
    config: DepthAnythingConfig | None = None,
    dtype: torch.dtype | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
    position_embedding: str | None = None,
) -> DepthAnythingPrior:
    """Build a frozen Depth Anything V2 prior from any of the forms users have.

    Args:
        spec: a size (``small``/``base``/``large``/``giant`` or ``vits``...``vitg``), a transformers
            checkpoint (hub id such as ``depth-anything/Depth-Anything-V2-Large-hf`` or a local
            folder), a saved :class:`DepthAnythingPrior` folder, an original
            ``depth_anything_v2_vit*.pth`` file (local, or ``owner/repo/file.pth`` on the hub), or an
            already built model.
        preprocessing: ``"compat"`` or ``"normalized"``; ``None`` keeps what a saved prior records
            (``"compat"`` otherwise). Pipelines pass the mode their UNet was trained with.
        config: architecture for an original ``.pth`` of non-standard size (tests, custom models).
        dtype: dtype of the loaded weights.
        position_embedding: ``"original"`` (DINOv2's own interpolation, as Depth Anything V2 and the
            authors' release run it) or ``"transformers"``; ``None`` keeps what a saved prior records
            (``"original"`` otherwise).
    """
    if preprocessing is not None:
        check_preprocessing(preprocessing)
    if position_embedding is not None:
        check_position_embedding(position_embedding)
    mode = preprocessing or "compat"

    if isinstance(spec, DepthAnythingPrior):
        prior = spec
    elif isinstance(spec, DepthAnythingForDepthEstimation):
        prior = DepthAnythingPrior.from_model(spec, preprocessing=mode)
    else:
        prior = _load_from_string(os.fspath(spec), mode, config, dtype, cache_dir, local_files_only)
    if preprocessing is not None and prior.preprocessing != preprocessing:
        prior.register_to_config(preprocessing=preprocessing)
    if position_embedding is not None and prior.position_embedding != position_embedding:
        prior.set_position_embedding(position_embedding)
    if dtype is not None:
        prior.to(dtype=dtype)
    return prior.eval()


def _load_from_string(spec, mode, config, dtype, cache_dir, local_files_only) -> DepthAnythingPrior:
    """A prior from a ``.pth`` file, a folder, a size name or a hub id (tried in that order)."""
    kwargs = {"cache_dir": cache_dir, "local_files_only": local_files_only}
    if spec.endswith((".pth", ".pt")):
        return _from_original_checkpoint(spec, mode, config, dtype, cache_dir, local_files_only)
    if os.path.isdir(spec):
        return _from_folder(spec, mode, dtype, kwargs)
    if _is_size_name(spec):
        variant = get_variant(spec)
        if variant.hub_id is None:
            raise ValueError(
                f"Depth Anything V2 {variant.name} ({variant.encoder}) was never publicly released; "
                f"pass the path of your {variant.pth_filename} instead."
            )
        model = DepthAnythingForDepthEstimation.from_pretrained(
            variant.hub_id, **transformers_dtype(dtype), **kwargs
        )
        return DepthAnythingPrior.from_model(model, preprocessing=mode, variant=variant.name)
    if spec.count("/") == 1 and not os.path.exists(spec):
        model = DepthAnythingForDepthEstimation.from_pretrained(spec, **transformers_dtype(dtype), **kwargs)
        variant = next((v.name for v in VARIANTS.values() if v.hub_id == spec), None)
        return DepthAnythingPrior.from_model(model, preprocessing=mode, variant=variant)
    raise FileNotFoundError(
        f"Cannot load a prior from {spec!r}: not a size name ({', '.join(VARIANTS)}), an existing folder, "
        f"a .pth file or a hub id (owner/name)."
    )


def _from_original_checkpoint(spec, mode, config, dtype, cache_dir, local_files_only) -> DepthAnythingPrior:
    """An original ``depth_anything_v2_vit*.pth``: a local file, or ``owner/repo/file.pth`` on the hub."""
    path = spec if os.path.exists(spec) else None
    if path is None and spec.count("/") >= 2 and not os.path.isabs(spec):
        path = _hub_pth(spec, cache_dir, local_files_only)
    if path is None:
        raise FileNotFoundError(f"Depth Anything V2 checkpoint not found: {spec}")
    model = load_original_checkpoint(path, config=config, dtype=dtype)
    name = os.path.basename(path)
    variant = next((v.name for v in VARIANTS.values() if v.pth_filename == name), None)
    return DepthAnythingPrior.from_model(model, preprocessing=mode, variant=variant)


def _from_folder(spec, mode, dtype, kwargs: dict) -> DepthAnythingPrior:
    """A saved :class:`DepthAnythingPrior` folder or a transformers Depth Anything checkpoint folder."""
    cfg_path = os.path.join(spec, "config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"{spec}: no config.json; not a Depth Anything V2 checkpoint folder")
    with open(cfg_path) as f:
        cfg = json.load(f)
    if cfg.get("_class_name") == DepthAnythingPrior.__name__:
        return DepthAnythingPrior.from_pretrained(spec, **diffusers_dtype(dtype), **kwargs)
    if cfg.get("model_type") != "depth_anything":
        raise ValueError(f"{spec}: config.json describes {cfg.get('model_type')!r}, not depth_anything")
    model = DepthAnythingForDepthEstimation.from_pretrained(spec, **transformers_dtype(dtype), **kwargs)
    return DepthAnythingPrior.from_model(model, preprocessing=mode)
