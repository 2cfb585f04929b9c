"""A transformers-style one-liner: ``depth_pipeline("depth-estimation")`` -> a callable on images.

::

    from apdepth.hf_pipeline import pipeline   # or: apdepth.depth_pipeline

    estimator = pipeline("depth-estimation", model="developy/ApDepth", device="cuda")
    result = estimator("photo.jpg")
    result["predicted_depth"]  # torch.Tensor [H, W], affine-invariant depth in [0, 1], near small
    result["depth"]            # PIL "L" image, the depth stretched to 0..255

The result has the keys of transformers' ``depth-estimation`` pipeline: one dict per image, a list of dicts
for a list of images. Unlike the Depth Anything models in transformers (relative *inverse* depth, near large),
``predicted_depth`` is ApDepth's affine-invariant *depth* (near small, far large).

(The package's ``apdepth.pipeline`` is the module that defines :class:`~apdepth.ApDepthPipeline`, so the
top-level name of this function is ``apdepth.depth_pipeline``.)
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from .hub import EMBEDDED, resolve_device, resolve_model
from .io import read_image
from .pipeline import ApDepthPipeline

TASKS = ("depth-estimation",)


class DepthEstimationPipeline:
    """Callable wrapper: image(s) -> transformers-style dicts. ``pipe`` is the :class:`ApDepthPipeline`."""

    def __init__(self, pipe: ApDepthPipeline, **call_kwargs):
        self.pipe = pipe
        self.call_kwargs = call_kwargs

    def __call__(self, inputs, **kwargs) -> dict | list[dict]:
        """``inputs``: a path, PIL image, array or tensor, or a list of them. ``kwargs``: further
        :meth:`ApDepthPipeline.__call__` arguments (``processing_resolution``, ...)."""
        single = not isinstance(inputs, (list, tuple))
        images = [inputs] if single else list(inputs)
        images = [read_image(x) if isinstance(x, (str, os.PathLike)) else x for x in images]
        out = self.pipe(images, output_type="pt", **{**self.call_kwargs, **kwargs})
        results = [self._format(d) for d in out.depth]  # each [1, H, W]
        return results[0] if single else results

    @staticmethod
    def _format(depth: torch.Tensor) -> dict:
        depth = depth[0] if depth.ndim == 3 else depth[0, 0]  # [H, W]
        values = depth.float().numpy()
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        return {"predicted_depth": depth, "depth": Image.fromarray((scaled * 255.0).astype(np.uint8))}


def depth_pipeline(
    task: str = "depth-estimation",
    model: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **call_kwargs,
) -> Callable:
    """Load ApDepth for ``task`` (only ``"depth-estimation"``) the way transformers' ``pipeline()`` does.

    Args:
        model: a folder or hub id of an ApDepth checkpoint; ``"embedded"``: the packaged demo model; ``None``:
            as the command line without ``--model`` (the released checkpoint when it is in the local cache,
            else the embedded demo model).
        device: e.g. ``"cuda"``, ``"cpu"``; ``None``: CUDA, else MPS, else CPU (a name torch does not know
            raises ``ValueError``).
        dtype: e.g. ``torch.float16``; ``None``: float32.
        call_kwargs: defaults for every call (``processing_resolution``, ``batch_size``, ...).
    """
    if task not in TASKS:
        raise ValueError(f"Unsupported task {task!r}; apdepth provides {TASKS}.")
    _, source = resolve_model(model)
    pipe = ApDepthPipeline.from_pretrained(source, dtype=dtype or torch.float32)
    pipe.to(resolve_device(str(device) if device is not None else None))
    pipe.set_progress_bar_config(disable=True)
    return DepthEstimationPipeline(pipe, **call_kwargs)


pipeline = depth_pipeline  # transformers' name, for ``from apdepth.hf_pipeline import pipeline``
__all__ = ["EMBEDDED", "DepthEstimationPipeline", "depth_pipeline", "pipeline"]

