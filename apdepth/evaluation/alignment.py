"""Least-squares scale and shift alignment of an affine-invariant prediction to metric ground truth.

Paper Eq. 19: ``d~ = a * m^ + b`` with ``a, b`` minimising ``sum (a * m^ + b - d)^2`` over the valid
pixels (``[pred, 1] x = gt``); then the result is clipped to the data set's range and to >= 1e-6.
``space="disparity"`` is for predictions of affine-invariant *disparity* (Depth Anything, MiDaS):
the fit targets ``1 / gt`` and the aligned disparity is inverted back to depth.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SPACES = ("depth", "disparity")
DEPTH_FLOOR = 1e-6  # aligned depth is clipped to at least this before the metrics (they divide and log)
DISPARITY_FLOOR = 1e-3  # aligned disparity is clipped to at least this before inversion (as Marigold)


def _accumulate_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def fit_scale_shift(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Ordinary least squares ``y ~ scale * x + shift`` over 1-D ``x``, ``y``.

    A constant ``x`` has no unique solution; the minimum is then ``scale = 0, shift = mean(y)``.
    """
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"fit_scale_shift needs two 1-D tensors of one length; got {tuple(x.shape)}, {tuple(y.shape)}")
    if x.numel() < 2:
        raise ValueError(f"Least-squares alignment needs at least 2 valid pixels, got {x.numel()}")
    dtype = _accumulate_dtype(x.device)
    x, y = x.to(dtype), y.to(dtype)
    x_mean, y_mean = x.mean(), y.mean()
    xc = x - x_mean
    var = (xc * xc).sum()
    if not bool(var > 0):
        return 0.0, float(y_mean)
    scale = (xc * (y - y_mean)).sum() / var
    return float(scale), float(y_mean - scale * x_mean)


def _downsample(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``[H, W]`` (bool or float) to ``size``."""
    out = F.interpolate(t[None, None].float(), size=size, mode="nearest")[0, 0]
    return out.bool() if t.dtype == torch.bool else out


def fit_size(height: int, width: int, max_resolution: int | None) -> tuple[int, int]:
    """Size at which the alignment is fitted: the long side at most ``max_resolution`` (aspect kept)."""
    if max_resolution is None or max(height, width) <= max_resolution:
        return height, width
    factor = max_resolution / max(height, width)
    return max(1, math.floor(height * factor)), max(1, math.floor(width * factor))


def align_least_squares(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid_mask: torch.Tensor,
    space: str = "depth",
    max_resolution: int | None = None,
) -> tuple[torch.Tensor, float, float]:
    """Align ``pred`` to ``gt`` by least-squares scale and shift on ``valid_mask``.

    Args:
        pred: affine-invariant prediction ``[H, W]`` (depth, or disparity with ``space="disparity"``).
        gt: metric depth ``[H, W]`` in metres.
        valid_mask: bool ``[H, W]``.
        space: ``"depth"`` (default, the paper) or ``"disparity"``.
        max_resolution: fit on a nearest-neighbour subsample whose long side is at most this (ETH3D:
            1024); the fitted scale and shift are applied at full resolution.

    Returns:
        ``(aligned_depth [H, W] float32, scale, shift)``. Not yet clipped: see :func:`clip_depth`.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if not (pred.shape == gt.shape == valid_mask.shape) or pred.ndim != 2:
        raise ValueError(f"pred, gt and valid_mask must all be [H, W]; got {tuple(pred.shape)}, "
                         f"{tuple(gt.shape)}, {tuple(valid_mask.shape)}")
    size = fit_size(*pred.shape, max_resolution)
    p, g, m = (pred, gt, valid_mask) if size == tuple(pred.shape) else (
        _downsample(pred, size), _downsample(gt, size), _downsample(valid_mask, size))
    if space == "depth":
        scale, shift = fit_scale_shift(p[m], g[m])
        return (pred.float() * scale + shift), scale, shift
    m = m & (g > 0) & (p > 0)
    scale, shift = fit_scale_shift(p[m], 1.0 / g[m])
    disparity = (pred.float() * scale + shift).clamp_min(DISPARITY_FLOOR)
    return 1.0 / disparity, scale, shift


def clip_depth(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Clip to the data set's ``[min_depth, max_depth]`` and then to at least :data:`DEPTH_FLOOR`."""
    return depth.clamp(min=min_depth, max=max_depth).clamp_min(DEPTH_FLOOR)
