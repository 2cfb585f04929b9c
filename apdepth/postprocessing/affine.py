"""Scale-and-shift fits ``y ~ scale * x + shift``: plain weighted least squares and a robust variant.

One implementation shared by metric alignment (:mod:`apdepth.postprocessing.metric_scale`), video stabilisation
(:mod:`apdepth.postprocessing.video.stabilize`) and test-time augmentation (:mod:`apdepth.postprocessing.tta`). Inputs are any array-likes;
the fits run in float64 numpy. The least-squares step is the evaluation's
(:func:`apdepth.evaluation.alignment.least_squares_line`), so both compute one fit the same way.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np

from ..evaluation.alignment import least_squares_line

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
    x, y, w, _, _ = _usable_points(x, y, weights)
    fit = least_squares_line(x, y, w, min_variance=1e-12 * max(1.0, (w * x**2).sum()))
    if fit is None:
        raise ValueError("an affine fit needs x to vary over the points; all x values are (nearly) equal")
    return fit


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


def _mad(r: np.ndarray) -> float:
    """Robust standard deviation: 1.4826 x the median absolute value."""
    return 1.4826 * float(np.median(np.abs(r)))


@dataclass
class _FitPoints:
    """The points a robust fit works on: ``xs``, ``ys`` float64 ``[M]`` (a subset of the valid pairs),
    ``rel_w`` the weights that turn absolute into relative squared residuals (ones for absolute ones)."""

    xs: np.ndarray
    ys: np.ndarray
    relative: bool

    def __post_init__(self):
        self.rel_w = 1.0 / self.ys**2 if self.relative else np.ones_like(self.ys)

    def residuals(self, scale: float, shift: float) -> np.ndarray:
        return _residuals(self.xs, self.ys, scale, shift, self.relative)

    def robust_weights(self, scale: float, shift: float, sigma: float, loss: str, c: float) -> np.ndarray:
        return _robust_weights(self.residuals(scale, shift) / sigma, loss, c) * self.rel_w


def _check_robust_options(residual: str, loss: str, threshold: float | None) -> None:
    if residual not in RESIDUALS:
        raise ValueError(f"residual must be one of {RESIDUALS}, got {residual!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if threshold is not None and not threshold > 0:
        raise ValueError(f"threshold must be > 0 or None, got {threshold!r}")


def _valid_pairs(x, y, relative: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened float64 ``x``, ``y`` and the bool mask of the usable pairs (finite; ``y != 0`` for
    relative residuals); at least two or ValueError."""
    x_all, y_all, _ = _flat_pairs(x, y)
    valid = np.isfinite(x_all) & np.isfinite(y_all)
    if relative:
        valid &= y_all != 0
    if np.count_nonzero(valid) < 2:
        raise ValueError(f"a robust affine fit needs at least 2 valid points; got {np.count_nonzero(valid)}")
    return x_all, y_all, valid


def _subset(x_all, y_all, valid, max_points: int | None, rng: np.random.Generator, relative: bool) -> _FitPoints:
    """The valid pairs, a random ``max_points`` of them when there are more; ``x`` must vary over them."""
    idx = np.flatnonzero(valid)
    if max_points is not None and idx.size > max_points:
        idx = np.sort(rng.choice(idx, size=max_points, replace=False))
    xs, ys = x_all[idx], y_all[idx]
    if np.ptp(xs) <= 1e-12 * max(1.0, float(np.abs(xs).max())):
        raise ValueError("a robust affine fit needs x to vary over the points; all x values are (nearly) equal")
    return _FitPoints(xs, ys, relative)


def _ransac(pts: _FitPoints, iterations: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """The two-point model with the smallest median absolute residual (least median of squares), robust
    without knowing the noise level in advance: ``(scale, shift, its MAD)``. Starts from weighted least
    squares, which it returns (with its MAD) when ``iterations`` is 0."""
    xs, ys = pts.xs, pts.ys
    scale, shift = fit_affine(xs, ys, pts.rel_w)
    best = np.inf if iterations > 0 else _mad(pts.residuals(scale, shift))
    for _ in range(iterations):
        i, j = rng.choice(xs.size, size=2, replace=False)
        dx = xs[j] - xs[i]
        if abs(dx) <= 1e-12:
            continue
        s = (ys[j] - ys[i]) / dx
        t = ys[i] - s * xs[i]
        score = _mad(pts.residuals(s, t))
        if score < best:
            best, scale, shift = score, s, t
    return scale, shift, best


def _irls(pts: _FitPoints, scale: float, shift: float, thr: float, loss: str, iterations: int,
          symmetric: bool) -> tuple[float, float]:
    """Least squares on the inliers of ``(scale, shift)`` (residual within ``thr``), then iteratively
    re-weighted least squares over all points with ``loss``; optionally a final reduced-major-axis fit."""
    xs, ys = pts.xs, pts.ys
    inl = np.abs(pts.residuals(scale, shift)) <= thr
    if inl.sum() >= 2 and np.ptp(xs[inl]) > 0:
        scale, shift = fit_affine(xs[inl], ys[inl], pts.rel_w[inl])
    sigma = thr / 3.0  # the inlier threshold is 3 robust standard deviations
    c = 4.685 if loss == "tukey" else 1.345  # the usual 95%-efficiency tuning constants
    for _ in range(iterations):
        w = pts.robust_weights(scale, shift, sigma, loss, c)
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
        w = pts.robust_weights(scale, shift, sigma, loss, c)
        if np.count_nonzero(w) >= 2:
            with contextlib.suppress(ValueError):
                scale, shift = fit_affine_symmetric(xs, ys, w)
    return scale, shift


def _score(x_all, y_all, valid, scale: float, shift: float, thr: float, relative: bool) -> AffineFit:
    """Every valid point scored against the final model."""
    mask = np.zeros(x_all.shape, dtype=bool)
    r_all = _residuals(x_all[valid], y_all[valid], scale, shift, relative)
    mask[valid] = np.abs(r_all) <= thr
    r_in = r_all[np.abs(r_all) <= thr]
    rms = float(np.sqrt(np.mean(r_in**2))) if r_in.size else float("nan")
    n_in = int(mask.sum())
    logger.debug("robust affine fit: scale %.6g shift %.6g, %d/%d inliers (threshold %.3g)",
                 scale, shift, n_in, int(valid.sum()), thr)
    return AffineFit(float(scale), float(shift), mask, n_in, int(valid.sum()), rms)


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
    _check_robust_options(residual, loss, threshold)
    relative = residual == "relative"
    x_all, y_all, valid = _valid_pairs(x, y, relative)
    rng = np.random.default_rng(seed)
    pts = _subset(x_all, y_all, valid, max_points, rng, relative)
    # 1. RANSAC: the best two-point model (LMedS scoring); its residuals set the inlier threshold.
    scale, shift, best = _ransac(pts, ransac_iterations, rng)
    thr = threshold if threshold is not None else max(3.0 * best, 1e-6)
    # 2. Least squares on the RANSAC inliers, then IRLS over all points with the chosen loss.
    scale, shift = _irls(pts, scale, shift, thr, loss, irls_iterations, symmetric)
    # 3. Score every valid point against the final model.
    return _score(x_all, y_all, valid, scale, shift, thr, relative)
