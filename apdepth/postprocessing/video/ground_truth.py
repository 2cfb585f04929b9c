"""Video depth against ground truth: the error after one affine fit per video.

A temporally consistent video needs *one* scale and shift for all its frames. So the sequence
(per-frame or stabilised) is fitted to the ground truth once, by least squares over the valid pixels
of all frames, and scored by AbsRel (mean ``|fit - gt| / gt``). Flicker and drift that an aligner
leaves show up as error; a depth the aligner bent the wrong way does too. For reference,
``absrel_per_frame_fit`` fits every frame on its own (what no temporal error can affect).

:func:`evaluate_clip` runs the whole protocol on a clip from :mod:`apdepth.synth.clip`, optionally
with known random per-frame affine drifts added to the predictions (a model whose per-frame outputs
are already consistent leaves the aligner nothing to fix).
"""

from __future__ import annotations

import logging

import numpy as np

from ..affine import fit_affine

logger = logging.getLogger(__name__)


def _valid(gt: np.ndarray) -> np.ndarray:
    return np.isfinite(gt) & (gt > 0)


def one_fit_absrel(pred: np.ndarray, gt: np.ndarray) -> float:
    """AbsRel of ``pred`` ``[N, H, W]`` after one least-squares affine fit to ``gt`` ``[N, H, W]`` over all
    frames (pixels where ``gt`` is finite and positive)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    m = _valid(gt) & np.isfinite(pred)
    scale, shift = fit_affine(pred[m], gt[m])
    return float(np.mean(np.abs(scale * pred[m] + shift - gt[m]) / gt[m]))


def per_frame_fit_absrel(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean over frames of the AbsRel after fitting each frame on its own."""
    return float(np.mean([one_fit_absrel(p[None], g[None]) for p, g in zip(pred, gt)]))


def ground_truth_report(raw: np.ndarray, stabilized: np.ndarray, gt: np.ndarray) -> dict:
    """``absrel_raw`` / ``absrel_stabilized`` (one fit per video each), ``absrel_per_frame_fit`` (raw,
    each frame fitted) and ``improvement`` (relative drop of AbsRel, positive = the stabiliser helped)."""
    raw_err, stab_err = one_fit_absrel(raw, gt), one_fit_absrel(stabilized, gt)
    return {"absrel_raw": raw_err, "absrel_stabilized": stab_err,
            "absrel_per_frame_fit": per_frame_fit_absrel(raw, gt),
            "improvement": (raw_err - stab_err) / max(raw_err, 1e-12),
            "protocol": "one least-squares affine fit per video to the ground truth, AbsRel over all frames"}


def random_drifts(num_frames: int, strength: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame ``(scales, shifts)``: ``scale = exp(N(0, strength))``, ``shift = N(0, strength / 2)``,
    frame 0 left unchanged (``1, 0``)."""
    rng = np.random.default_rng(seed)
    scales, shifts = np.exp(rng.normal(0.0, strength, num_frames)), rng.normal(0.0, strength / 2, num_frames)
    scales[0], shifts[0] = 1.0, 0.0
    return scales, shifts


def predict_clip(pipe, clip, *, processing_resolution: int | None = None, batch_size: int = 4) -> np.ndarray:
    """``pipe``'s per-frame depth of ``clip``'s frames, float32 ``[N, H, W]``."""
    return np.asarray(pipe(list(clip.rgb), processing_resolution=processing_resolution, batch_size=batch_size,
                           output_type="np").depth, np.float32)


def evaluate_clip(pipe, clip, *, motion: str = "auto", drift: float = 0.0, seed: int = 0,
                  processing_resolution: int | None = None, batch_size: int = 4, predictions: np.ndarray | None = None,
                  **stabilizer_kwargs) -> dict:
    """Predict ``clip`` (:class:`apdepth.synth.clip.Clip`) frame by frame, optionally distort each frame by
    :func:`random_drifts` (``drift`` > 0), stabilise it with ``motion`` and compare with the exact depth.
    ``predictions`` (``[N, H, W]``, from :func:`predict_clip`) skips the prediction (``pipe`` unused).

    Returns :func:`ground_truth_report`'s dict plus the stabiliser's ``flicker_*`` and ``drift_*``
    (motion-compensated, from its own correspondences) and the per-frame ``motions`` it chose.
    """
    from .stabilize import DepthStabilizer

    raw = predictions if predictions is not None else predict_clip(
        pipe, clip, processing_resolution=processing_resolution, batch_size=batch_size)  # [N, H, W]
    raw = np.asarray(raw, np.float32)
    if drift > 0:
        scales, shifts = random_drifts(len(raw), drift, seed)
        raw = raw * scales[:, None, None].astype(np.float32) + shifts[:, None, None].astype(np.float32)
    stab = DepthStabilizer(motion=motion, **stabilizer_kwargs)
    aligned = np.stack([stab(d, f) for d, f in zip(raw, clip.rgb)])
    report = ground_truth_report(raw, aligned, clip.depth)
    flick, drifts = stab.flicker(), stab.drift()
    report.update({"motion": clip.motion, "alignment": motion, "drift_added": drift,
                   "expansion": stab.expansion,
                   "flicker_raw": flick["raw"], "flicker_stabilized": flick["stabilized"],
                   "drift_raw": drifts["raw"], "drift_stabilized": drifts["stabilized"],
                   "motions": [f.motion for f in stab.frames[1:]]})
    return report
