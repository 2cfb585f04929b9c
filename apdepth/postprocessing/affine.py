"""Scale-and-shift fits ``y ~ scale * x + shift``: plain weighted least squares and a robust variant.

One implementation shared by metric alignment (:mod:`apdepth.postprocessing.metric_scale`), video stabilisation
(:mod:`apdepth.postprocessing.video.stabilize`) and test-time augmentation (:mod:`apdepth.postprocessing.tta`). Inputs are any array-likes;
the fits run in float64 numpy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

LOSSES = ("huber", "tukey")
RESIDUALS = ("absolute", "relative")


@dataclass
class AffineFit:
    """Result of a robust fit ``y ~ scale * x + shift``.

    Attributes:
        scale, shift: the fitted parameters.
        inlier_mask: bool ``[N]``, points whose residual is within the inlier threshold.
        num_inliers, num_points: counts.
        residual_rms: root mean square residual over the inliers (absolute or relative, as fitted).
    """

    scale: float
    shift: float
    inlier_mask: np.ndarray
    num_inliers: int
    num_points: int
    residual_rms: float

    def apply(self, x):
        return self.scale * x + self.shift


def _usable_points(x, y, weights=None):
    """The finite, positively weighted pairs (flattened, float64), their weights (ones if none) and the
    weighted means ``mx, my``; at least two points or ValueError."""
    x, y, w = _flat_pairs(x, y, weights)
    keep = np.isfinite(x) & np.isfinite(y)
    if w is not None:
        keep &= np.isfinite(w) & (w > 0)
    x, y = x[keep], y[keep]
    w = np.ones_like(x) if w is None else w[keep]
    if x.size < 2:
        raise ValueError(f"an affine fit needs at least 2 valid points; got {x.size}")
    sw = w.sum()
    return x, y, w, (w * x).sum() / sw, (w * y).sum() / sw


def _flat_pairs(x, y, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must hold the same number of values; got {x.size} and {y.size}")
    w = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != x.shape:
            raise ValueError(f"weights must match x ({x.size} values); got {w.size}")
    return x, y, w


def fit_affine(x, y, weights=None) -> tuple[float, float]:
    """Weighted least squares ``min sum w (scale * x + shift - y)^2``; returns ``(scale, shift)``.

    Args:
        x, y: values of the same size (any shape; flattened). Non-finite pairs are ignored.
        weights: optional non-negative weights of the same size.

    Raises:
        ValueError: fewer than two usable points, or ``x`` constant over them (no unique fit).
    """
    x, y, w, mx, my = _usable_points(x, y, weights)
    var = (w * (x - mx) ** 2).sum()
    if var <= 1e-12 * max(1.0, (w * x**2).sum()):
        raise ValueError("an affine fit needs x to vary over the points; all x values are (nearly) equal")
    scale = (w * (x - mx) * (y - my)).sum() / var
    return float(scale), float(my - scale * mx)


def fit_affine_symmetric(x, y, weights=None) -> tuple[float, float]:
    """Reduced-major-axis fit ``y ~ scale * x + shift``: ``scale = sign(cov) * std(y) / std(x)``.

    Unlike least squares, it treats ``x`` and ``y`` alike (the fit of ``x`` on ``y`` is its inverse), so it
    does not shrink the scale when both sides differ by more than an affine map (regression dilution).
    Chained fits (video frames) therefore do not drift towards a flat depth. Same arguments as
    :func:`fit_affine`.
    """
    x, y, w, mx, my = _usable_points(x, y, weights)
    vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
    if vx <= 1e-12 * max(1.0, (w * x**2).sum()):
        raise ValueError("an affine fit needs x to vary over the points; all x values are (nearly) equal")
    cov = (w * (x - mx) * (y - my)).sum()
    scale = np.sign(cov) * np.sqrt(vy / vx) if cov != 0 else 0.0
    return float(scale), float(my - scale * mx)


def _robust_weights(r: np.ndarray, loss: str, c: float) -> np.ndarray:
    a = np.abs(r)
    if loss == "huber":
        return np.where(a <= c, 1.0, c / np.maximum(a, 1e-300))
    return np.where(a < c, (1.0 - (a / c) ** 2) ** 2, 0.0)  # Tukey biweight


def _residuals(x, y, scale, shift, relative):
    r = y - (scale * x + shift)
    return r / np.abs(y) if relative else r


def robust_fit_affine(
    x,
    y,
    *,
    residual: str = "absolute",
    threshold: float | None = None,
    loss: str = "tukey",
    ransac_iterations: int = 100,
    irls_iterations: int = 10,
    max_points: int | None = 50_000,
    symmetric: bool = False,
    seed: int = 0,
) -> AffineFit:
    """Robust ``y ~ scale * x + shift``: RANSAC for the inlier set, then IRLS with a Huber or Tukey loss.

    RANSAC scores two-point models by their median absolute residual (least median of squares), so it
    needs no noise level in advance and tolerates up to half of the points being outliers.

    Args:
        x, y: values of the same size (flattened); non-finite pairs are ignored.
        residual: ``"absolute"`` (``y - fit``) or ``"relative"`` (``(y - fit) / |y|``, for metric depth
            where errors grow with distance; ``y`` must then be non-zero).
        threshold: inlier threshold on the residual. ``None``: 3 robust standard deviations of the
            residuals of the best RANSAC model (MAD estimate), at least 1e-6.
        loss: IRLS loss, ``"tukey"`` (outliers get weight 0) or ``"huber"`` (linear tails).
        ransac_iterations: minimal two-point samples to try; ``0`` starts IRLS from least squares.
        irls_iterations: re-weighting rounds after RANSAC.
        max_points: fit on a random subset of at most this many points (all points are still scored
            for ``inlier_mask``); ``None`` uses all.
        symmetric: make the final estimate a reduced-major-axis fit (:func:`fit_affine_symmetric`) on
            the IRLS weights instead of weighted least squares.
        seed: for the RANSAC samples and the subset; the fit is deterministic given the seed.

    Returns:
        :class:`AffineFit`; ``inlier_mask`` refers to the flattened input, non-finite pairs ``False``.
    """
    if residual not in RESIDUALS:
        raise ValueError(f"residual must be one of {RESIDUALS}, got {residual!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if threshold is not None and not threshold > 0:
        raise ValueError(f"threshold must be > 0 or None, got {threshold!r}")
    relative = residual == "relative"
    x_all, y_all, _ = _flat_pairs(x, y)
    valid = np.isfinite(x_all) & np.isfinite(y_all)
    if relative:
        valid &= y_all != 0
    idx = np.flatnonzero(valid)
    if idx.size < 2:
        raise ValueError(f"a robust affine fit needs at least 2 valid points; got {idx.size}")
    rng = np.random.default_rng(seed)
    if max_points is not None and idx.size > max_points:
        idx = np.sort(rng.choice(idx, size=max_points, replace=False))
    xs, ys = x_all[idx], y_all[idx]
    if np.ptp(xs) <= 1e-12 * max(1.0, float(np.abs(xs).max())):
        raise ValueError("a robust affine fit needs x to vary over the points; all x values are (nearly) equal")
    rel_w = 1.0 / ys**2 if relative else np.ones_like(ys)  # relative residuals = weighted absolute ones

    def mad(r):
        return 1.4826 * float(np.median(np.abs(r)))

    # 1. RANSAC: the two-point model with the smallest median absolute residual (LMedS scoring, then
    #    thresholded), robust without knowing the noise level in advance.
    scale, shift = fit_affine(xs, ys, rel_w)
    best = np.inf if ransac_iterations > 0 else mad(_residuals(xs, ys, scale, shift, relative))
    for _ in range(ransac_iterations):
        i, j = rng.choice(xs.size, size=2, replace=False)
        dx = xs[j] - xs[i]
        if abs(dx) <= 1e-12:
            continue
        s = (ys[j] - ys[i]) / dx
        t = ys[i] - s * xs[i]
        score = mad(_residuals(xs, ys, s, t, relative))
        if score < best:
            best, scale, shift = score, s, t
    thr = threshold if threshold is not None else max(3.0 * best, 1e-6)

    # 2. Least squares on the RANSAC inliers, then IRLS over all points with the chosen loss.
    r = _residuals(xs, ys, scale, shift, relative)
    inl = np.abs(r) <= thr
    if inl.sum() >= 2 and np.ptp(xs[inl]) > 0:
        scale, shift = fit_affine(xs[inl], ys[inl], rel_w[inl])
    sigma = thr / 3.0  # the inlier threshold is 3 robust standard deviations
    c = 4.685 if loss == "tukey" else 1.345  # the usual 95%-efficiency tuning constants
    for _ in range(irls_iterations):
        r = _residuals(xs, ys, scale, shift, relative)
        w = _robust_weights(r / sigma, loss, c) * rel_w
        if np.count_nonzero(w) < 2:
            break
        try:
            new = fit_affine(xs, ys, w)
        except ValueError:
            break
        converged = np.allclose(new, (scale, shift), rtol=1e-10, atol=1e-12)
        scale, shift = new
        if converged:
            break
    if symmetric:
        w = _robust_weights(_residuals(xs, ys, scale, shift, relative) / sigma, loss, c) * rel_w
        if np.count_nonzero(w) >= 2:
            try:
                scale, shift = fit_affine_symmetric(xs, ys, w)
            except ValueError:
                pass

    # 3. Score every valid point against the final model.
    mask = np.zeros(x_all.shape, dtype=bool)
    r_all = _residuals(x_all[valid], y_all[valid], scale, shift, relative)
    mask[valid] = np.abs(r_all) <= thr
    r_in = r_all[np.abs(r_all) <= thr]
    rms = float(np.sqrt(np.mean(r_in**2))) if r_in.size else float("nan")
    n_in = int(mask.sum())
    logger.debug("robust affine fit: scale %.6g shift %.6g, %d/%d inliers (threshold %.3g)",
                 scale, shift, n_in, int(valid.sum()), thr)
    return AffineFit(float(scale), float(shift), mask, n_in, int(valid.sum()), rms)
