"""Differences between the diffusers / transformers versions we support."""

from __future__ import annotations

import transformers
from packaging.version import Version

try:  # diffusers and transformers renamed `torch_dtype=` to `dtype=`; the old name still works but warns
    from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401

    _DIFFUSERS_DTYPE_KEY = "dtype"
except ImportError:
    _DIFFUSERS_DTYPE_KEY = "torch_dtype"
_TRANSFORMERS_DTYPE_KEY = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def diffusers_dtype(dtype) -> dict:
    """``from_pretrained`` keyword for a dtype in the installed diffusers (empty for ``None``)."""
    return {} if dtype is None else {_DIFFUSERS_DTYPE_KEY: dtype}


def transformers_dtype(dtype) -> dict:
    """``from_pretrained`` keyword for a dtype in the installed transformers.

    ``None`` asks for float32 explicitly: transformers 5 defaults to ``dtype="auto"`` (the dtype the
    weights are stored in, fp16 for the embedded model), while diffusers loads float32 by default, so
    leaving it out would run the prior and text encoder in another dtype than the UNet and VAE.
    """
    import torch

    return {_TRANSFORMERS_DTYPE_KEY: torch.float32 if dtype is None else dtype}


def pop_dtype(kwargs: dict):
    """Take ``dtype`` / ``torch_dtype`` out of user kwargs (either spelling)."""
    a, b = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)
    return a if a is not None else b
