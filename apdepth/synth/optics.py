"""Lens effects applied to rendered radiance: depth-dependent defocus blur (a thin-lens circle of confusion)."""

from __future__ import annotations

import numpy as np

LEVELS = (0.0, 1.0, 2.0, 4.0, 8.0)  # blur radii (pixels) rendered once each; pixels blend the two nearest


def box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Separable box filter of half-width ``radius`` over the first two axes of ``image`` ``[H, W, C]``
    (edges clamped), applied twice: close to a Gaussian of sigma ``radius * 0.8``."""
    if radius <= 0:
        return image
    out = image.astype(np.float32)
    for _ in range(2):
        for axis in (0, 1):
            n = out.shape[axis]
            pad = [(0, 0)] * out.ndim
            pad[axis] = (radius + 1, radius)
            c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis, dtype=np.float32)
            hi = np.take(c, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
            lo = np.take(c, np.arange(0, n), axis=axis)
            out = (hi - lo) / np.float32(2 * radius + 1)
    return out


def defocus(radiance: np.ndarray, depth: np.ndarray, focus: float, strength: float) -> np.ndarray:
    """Blur ``radiance`` ``[H, W, 3]`` by each pixel's circle of confusion ``strength * |1/depth - 1/focus|``
    (pixels; capped at the largest of :data:`LEVELS`), ``depth`` ``[H, W]`` in metres (inf: the sky).

    Each pixel blends the two precomputed blur levels around its radius, so the cost is a few box filters.
    """
    inv = np.where(np.isfinite(depth), 1.0 / np.maximum(depth, 1e-3), 0.0)
    coc = np.clip(strength * np.abs(inv - 1.0 / focus), 0.0, LEVELS[-1]).astype(np.float32)  # [H, W]
    out = np.zeros_like(radiance, dtype=np.float32)
    prev = radiance.astype(np.float32)
    for lo, hi in zip(LEVELS[:-1], LEVELS[1:]):
        nxt = box_blur(radiance, int(hi))
        w = np.clip((coc - lo) / (hi - lo), 0.0, 1.0)[..., None]
        band = ((coc >= lo) & ((coc < hi) | (hi == LEVELS[-1])))[..., None]
        out += np.where(band, prev * (1 - w) + nxt * w, 0.0)
        prev = nxt
    return out
