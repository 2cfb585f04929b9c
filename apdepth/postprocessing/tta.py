"""Uncertainty without an ensemble: test-time augmentation over one pipeline.

:func:`predict_tta` runs the pipeline on augmented copies of each image (horizontal flip, other
processing resolutions), maps every prediction back to the image frame, aligns each one to the
first with a least-squares scale and shift (depth is affine-invariant, so members may differ by an
affine map that is not uncertainty), and returns the per-pixel mean and standard deviation.

Works with any callable that behaves like :class:`apdepth.ApDepthPipeline` (same call signature,
``.depth`` output).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..image_utils import ImageInput, colorize_depth, to_rgb_images
from .affine import fit_affine

logger = logging.getLogger(__name__)


@dataclass
class TTAOutput:
    """Result of :func:`predict_tta`, one entry per input image.

    Attributes:
        depth: mean affine-invariant depth, float32 ``[N, H, W]`` clipped to [0, 1] (a list of
            ``[H, W]`` arrays when the inputs differ in size).
        depth_std: per-pixel standard deviation over the aligned members, same layout.
        members: ``[N, M, H, W]`` (or a list of ``[M, H, W]``) aligned member predictions, in the
            order ``for resolution: (original, flipped)``.
        depth_colored: the mean coloured with ``colormap`` (PIL RGB), or ``None``.
    """

    depth: np.ndarray | list
    depth_std: np.ndarray | list
    members: np.ndarray | list
    depth_colored: list | None = None

    def as_tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The mean depth and the spread of each image as float32 tensors ``[1, H, W]`` (the maps
        :class:`~apdepth.ApDepthPipeline` formats)."""
        return ([torch.from_numpy(np.asarray(m))[None] for m in self.depth],
                [torch.from_numpy(np.asarray(m))[None] for m in self.depth_std])


def uncertainty_options(processing_resolution: int, tta_kwargs: dict | None, output_prior: bool = False,
                        match_input_resolution: bool = True) -> dict:
    """The :func:`predict_tta` options behind the pipeline's ``output_uncertainty=True``: the image and its
    mirror image at ``processing_resolution``, updated by ``tta_kwargs`` (``flip``,
    ``processing_resolutions``, ``align``); at least two members. ValueError on anything else."""
    if output_prior or not match_input_resolution:
        raise ValueError("output_uncertainty=True needs output_prior=False and match_input_resolution=True "
                         "(the augmentation members are compared at the input's size).")
    options = {"flip": True, "processing_resolutions": (processing_resolution,), "align": True}
    unknown = set(tta_kwargs or {}) - set(options)
    if unknown:
        raise ValueError(f"tta_kwargs takes {sorted(options)}; got {sorted(unknown)}")
    options.update(tta_kwargs or {})
    if not options["flip"] and len(options["processing_resolutions"]) < 2:
        raise ValueError("output_uncertainty=True needs at least two augmentation members: flip=True or "
                         "several processing_resolutions in tta_kwargs.")
    return options


def _flip(pixels: torch.Tensor) -> torch.Tensor:
    return torch.flip(pixels, dims=[-1])


@torch.no_grad()
def predict_tta(
    pipe,
    image: ImageInput | list[ImageInput],
    *,
    flip: bool = True,
    processing_resolutions: Sequence[int | None] = (None,),
    align: bool = True,
    batch_size: int = 1,
    colormap: str | None = None,
    **call_kwargs,
) -> TTAOutput:
    """Mean depth and per-pixel spread over test-time augmentations.

    Args:
        pipe: an :class:`~apdepth.ApDepthPipeline` (or a callable with the same interface).
        image: anything the pipeline accepts (a list for several images).
        flip: add horizontally flipped copies (their predictions are flipped back).
        processing_resolutions: one pipeline run (or two with ``flip``) per entry; ``None`` is the
            checkpoint's default, ``0`` the native size. E.g. ``(None, 512)``.
        align: fit each member to the first with least squares (scale and shift) before averaging.
        batch_size: images per forward pass.
        colormap: colour the mean depth with this matplotlib colour map.
        call_kwargs: further pipeline arguments (``resample``, ...). ``match_input_resolution`` is
            always on: members must share the input's size.

    Returns:
        :class:`TTAOutput`. With one member (no flip, one resolution) the spread is zero.
    """
    if not processing_resolutions:
        raise ValueError("processing_resolutions must name at least one resolution (None = the default)")
    for key in ("match_input_resolution", "output_type", "colormap"):
        if key in call_kwargs:
            raise ValueError(f"predict_tta sets {key} itself; got {key}={call_kwargs[key]!r}")
    images = to_rgb_images(image)
    # 8-bit sources go back as uint8 so the pipeline treats them exactly as the originals
    pixels = [(img.pixels * 255.0).round().to(torch.uint8) if img.bits == 8 else img.pixels
              for img in images]  # each [3, H, W]
    members = _run_members(pipe, pixels, flip, processing_resolutions, batch_size, call_kwargs)
    means, stds, stacks = [], [], []
    for i, maps in enumerate(members):
        if align:
            maps = [maps[0]] + [_align_to(m, maps[0], i) for m in maps[1:]]
        stack = np.stack(maps).astype(np.float32)  # [M, H, W]
        means.append(np.clip(stack.mean(axis=0), 0.0, 1.0))
        stds.append(stack.std(axis=0))
        stacks.append(stack)
    colored = [colorize_depth(m, colormap) for m in means] if colormap is not None else None
    return TTAOutput(_stack(means), _stack(stds), _stack(stacks), colored)


def _run_members(pipe, pixels: list[torch.Tensor], flip: bool, processing_resolutions: Sequence[int | None],
                 batch_size: int, call_kwargs: dict) -> list[list[np.ndarray]]:
    """One pipeline run per resolution over the images (and their mirror images, which share the batches):
    per image, its members ``[H, W]`` in the order ``for resolution: (original, flipped back)``."""
    members: list[list[np.ndarray]] = [[] for _ in pixels]
    n = len(pixels)
    for resolution in processing_resolutions:
        batch = pixels + ([_flip(p) for p in pixels] if flip else [])  # originals and flips share batches
        out = pipe(batch, processing_resolution=resolution, match_input_resolution=True,
                   batch_size=batch_size, output_type="np", **call_kwargs)
        depths = [np.asarray(d, dtype=np.float32) for d in out.depth]
        for i in range(n):
            members[i].append(depths[i])
            if flip:
                members[i].append(np.ascontiguousarray(depths[n + i][:, ::-1]))  # flipped back
    return members


def _align_to(member: np.ndarray, reference: np.ndarray, index: int) -> np.ndarray:
    try:
        scale, shift = fit_affine(member, reference)
    except ValueError as e:  # a constant prediction cannot be aligned: keep it as it is
        logger.warning("image %d: cannot align a test-time augmentation member (%s); averaging it unaligned",
                       index, e)
        return member
    return (scale * member.astype(np.float64) + shift).astype(np.float32)


def _stack(arrays: list[np.ndarray]):
    return np.stack(arrays) if all(a.shape == arrays[0].shape for a in arrays) else arrays


def second_resolution(height: int, width: int, base: int, factor: float = 0.75) -> int:
    """A second processing resolution for TTA: ``factor`` times the base (the long edge when ``base`` is 0),
    rounded to a multiple of 8 and at least 64."""
    long_edge = base if base > 0 else max(height, width)
    return max(64, int(round(long_edge * factor / 8.0)) * 8)
