"""Temporally stable video depth: per-video affine normalisation, flicker and drift metrics.

Each frame's prediction is affine-invariant on its own, so independent per-frame maps flicker: the
same wall changes value from frame to frame. :class:`DepthStabilizer` fixes one affine frame for the
whole video. Frame k's depth is fitted (robust least squares, :func:`apdepth.postprocessing.affine.robust_fit_affine`)
to a reference, the previous aligned frame or a running average of them, on *corresponding* pixels
(:mod:`apdepth.postprocessing.video.flow`): the same pixel where the grey level did not change (a static camera), or
optical-flow matches that pass a forward-backward check and stay inside the frame (a moving camera).
Moving objects and disoccluded pixels that slip through are rejected by the robust loss. Under a move
along the optical axis the reference is first moved to the depth frame k should have, with each
pixel's depth ratio from the flow's expansion about the focus of expansion
(:func:`apdepth.postprocessing.video.flow.radial_expansion`; ``DepthStabilizer(expansion=True)``).

Flicker is the mean absolute change of depth between matched pixels of consecutive frames; drift the
same between frame k and frame 0 along the chained matches; both are divided by the sequence's depth
range (its 1% to 99% quantiles), so shrinking the depth cannot fake stability. :func:`flicker` is the
same-pixel version for given masks. :func:`process_video` runs the pipeline on a video or frame folder
and writes the outputs; with ground truth it also scores them (:mod:`apdepth.postprocessing.video.ground_truth`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...image_utils import colorize_depth, depth_to_uint16
from ...io import save_image, save_json
from ..affine import LOSSES, robust_fit_affine
from .flow import MOTIONS, FlowMatcher, Matches, have_cv2, radial_expansion
from .frames import FrameReader, VideoWriter

logger = logging.getLogger(__name__)

REFERENCES = ("previous", "running")
VIDEO_FORMATS = ("video", "sbs", "png16", "npy")
QUANTILES = (0.01, 0.99)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> float32 grey ``[H, W]`` in [0, 1], smoothed by a 3x3 box filter (noise)."""
    gray = np.asarray(rgb, dtype=np.float32)[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0
    padded = np.pad(gray, 1, mode="edge")
    H, W = gray.shape
    return sum(padded[dy:dy + H, dx:dx + W] for dy in range(3) for dx in range(3)) / 9.0


def static_mask(prev_gray: np.ndarray, gray: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Bool ``[H, W]``: pixels whose grey level (see :func:`to_gray`) changed by at most ``threshold``."""
    return np.abs(gray - prev_gray) <= threshold


def depth_range(depths) -> tuple[float, float]:
    """``(lo, hi)``: the lowest 1% quantile and the highest 99% quantile over the frames ``[H, W]``."""
    lo = min(float(np.quantile(d, QUANTILES[0])) for d in depths)
    hi = max(float(np.quantile(d, QUANTILES[1])) for d in depths)
    return lo, hi


def flicker(depths: Sequence[np.ndarray], masks: Sequence[np.ndarray], value_range: tuple[float, float] | None = None
            ) -> float:
    """Mean over frames k >= 1 of ``mean(|depth_k - depth_{k-1}|)`` on ``masks[k - 1]`` (the static
    pixels between frames k - 1 and k), divided by the depth range (``value_range`` or
    :func:`depth_range`). Frames with no static pixel are left out; ``nan`` if none is left."""
    if len(masks) != len(depths) - 1:
        raise ValueError(f"need one mask per consecutive frame pair ({len(depths) - 1}); got {len(masks)}")
    lo, hi = value_range if value_range is not None else depth_range(depths)
    diffs = [float(np.abs(depths[k] - depths[k - 1])[masks[k - 1]].mean())
             for k in range(1, len(depths)) if masks[k - 1].any()]
    return float(np.mean(diffs)) / max(hi - lo, 1e-12) if diffs else float("nan")


@dataclass
class FrameAlignment:
    """How one frame was aligned: ``aligned = scale * depth + shift``. ``motion``: the correspondences used
    (``static`` or ``flow``); ``matched_fraction``: pixels with a trusted match in the previous frame;
    ``first_frame_overlap``: pixels traced back to frame 0 (the drift is measured on them); ``depth_ratio``:
    the median depth ratio to the previous frame the fit assumed (:func:`apdepth.postprocessing.video.flow.radial_expansion`;
    1 without it, below 1 when the camera moved forward); ``refitted``: a new fit was taken (False: the
    previous frame's was kept, see ``DepthStabilizer.min_gain``)."""

    name: str
    scale: float
    shift: float
    motion: str
    matched_fraction: float
    first_frame_overlap: float
    num_inliers: int
    depth_ratio: float = 1.0
    refitted: bool = False


@dataclass
class DepthStabilizer:
    """Online per-video affine normalisation; call it on frames in order.

    Attributes:
        reference: ``previous`` (align to the previous aligned frame) or ``running`` (to an exponential
            average of the aligned frames, carried along the correspondences, updated with ``momentum``).
        motion: correspondences between frames (:mod:`apdepth.postprocessing.video.flow`): ``static`` (same pixel
            where the grey level did not change: a camera on a tripod; the fastest), ``flow`` (optical
            flow with forward-backward and out-of-frame rejection: a moving camera) or ``auto`` (flow
            when a cheap test sees the image move; static when OpenCV is not installed).
        static_threshold: grey-level change (0-1) below which a pixel counts as static.
        min_static_fraction: below this fraction of matched pixels all (in-frame) pixels are used (the
            robust loss then rejects what moved).
        flow_preset: OpenCV DIS preset for the flow, ``ultrafast``, ``fast`` or ``medium`` (2-3x slower,
            sharper at the edges of small moving objects; as accurate on camera motion).
        expansion: on flow matches, expect the depth change a camera translation causes: the reference
            (the previous aligned frame seen from frame k) is multiplied by each pixel's depth ratio from
            the flow's radial expansion (:func:`apdepth.postprocessing.video.flow.radial_expansion`), taken
            about ``depth_zero``. Without it a move along the optical axis, which changes every depth by
            the distance travelled, is absorbed into the fitted shift as if it were drift (``auto`` then
            fits such frame pairs on same-pixel matches instead, a heuristic). No effect on the static
            path (no flow is computed there); about 1 under a pan (the FOE is at infinity).
        depth_zero: the aligned (= first frame's) depth value of a point at the camera, about which the
            ratios are taken; 0 for depth that is proportional to distance (see docs/features.md for
            what a wrong value costs).
        loss: ``huber`` or ``tukey``.
        max_points: pixels sampled per fit.
        enabled: ``False`` passes frames through unchanged (the flicker statistics are still kept).
        min_gain: a frame takes a new fit only when it lowers the median |disagreement| with the reference
            on the matched pixels by this fraction against keeping the previous frame's fit; otherwise the
            previous fit is kept. Frames that already agree (a model whose outputs barely flicker) are then
            left alone instead of collecting a random walk of small, noisy refits. 0 refits every frame.

    Each fit is robust (RANSAC, then IRLS) and symmetric (reduced major axis on the IRLS weights): plain
    least squares shrinks the scale a little at every noisy frame, which chained fits would compound
    into a drift towards flat depth. A frame that cannot be fitted (constant, or a non-positive scale)
    keeps the previous frame's fit.

    Besides the fits it keeps, for the raw and the aligned sequence, the flicker (mean |depth change|
    between matched pixels of consecutive frames) and the drift (mean |depth change| between frame k
    and frame 0 along the chained matches), see :meth:`flicker` and :meth:`drift`.
    """

    reference: str = "previous"
    momentum: float = 0.5
    static_threshold: float = 0.02
    min_static_fraction: float = 0.05
    loss: str = "huber"
    max_points: int = 20_000
    enabled: bool = True
    motion: str = "auto"
    flow_preset: str = "fast"
    expansion: bool = True
    depth_zero: float = 0.0
    seed: int = 0
    min_gain: float = 0.05
    frames: list[FrameAlignment] = field(default_factory=list, init=False)  # one entry per frame seen

    def __post_init__(self):
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not 0 <= self.min_gain < 1:
            raise ValueError(f"min_gain must be in [0, 1), got {self.min_gain!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.motion not in MOTIONS:
            raise ValueError(f"motion must be one of {', '.join(MOTIONS)}, got {self.motion!r}")
        if self.motion == "auto" and not have_cv2():
            logger.warning("OpenCV is not installed: video stabilisation assumes a static camera "
                           "(pip install 'apdepth[video]' for motion-compensated alignment)")
            self.motion = "static"
        self.matcher = FlowMatcher(self.motion, preset=self.flow_preset, static_threshold=self.static_threshold,
                                   expansion=self.expansion)
        self._prev_gray = self._ref = self._prev_raw = self._prev_aligned = None
        self._gray0 = self._raw0 = self._to_first = None
        self._ratio_to_first = self._ratio_valid = None  # [H, W] chained depth ratios to frame 0 (expansion)
        self._diffs: dict[str, list[float]] = {"raw": [], "stabilized": []}
        self._drifts: dict[str, list[float]] = {"raw": [], "stabilized": []}
        self._ranges: dict[str, list[float]] = {"raw": [np.inf, -np.inf], "stabilized": [np.inf, -np.inf]}

    def __call__(self, depth: np.ndarray, rgb: np.ndarray, name: str | None = None) -> np.ndarray:
        """Align one frame: ``depth`` float ``[H, W]`` (the pipeline's), ``rgb`` uint8 ``[H, W, 3]`` at the
        same size. Returns the aligned depth, float32 ``[H, W]``, in the first frame's units."""
        depth = np.asarray(depth, dtype=np.float32)
        if rgb.shape[:2] != depth.shape:
            raise ValueError(f"frame {name}: rgb {rgb.shape[:2]} and depth {depth.shape} differ in size")
        gray = to_gray(rgb)
        name = name if name is not None else f"{len(self.frames):06d}"
        if self._ref is None:
            aligned, fit, n_in, kind, matched, overlap = depth, (1.0, 0.0), depth.size, "static", 1.0, 1.0
            refitted = False
            ratio = 1.0
            self._gray0, self._raw0 = gray, depth
            next_ref = aligned
        else:
            if depth.shape != self._ref.shape:
                raise ValueError(f"frame {name}: size {depth.shape} differs from the first frame's {self._ref.shape}")
            matches, measure = self.matcher(self._prev_gray, gray)  # frame k -> frame k - 1: to fit, to measure
            kind, valid = matches.kind, matches.valid
            # depth ratios from the flow's expansion, on the measurement's flow (the fit's when it is the same)
            expansion = radial_expansion(measure) if self._use_expansion(matches, measure) else None
            ref = matches.warp(self._ref)  # [H, W]: the reference seen from frame k
            ratio = 1.0
            if expansion is not None and matches.map_x is measure.map_x:
                ref = self._expected(ref, expansion.ratio)  # what frame k's depth should be there
                valid = valid & expansion.valid
                ratio = float(np.median(expansion.ratio[valid])) if valid.any() else 1.0
            fit, n_in, refitted = (1.0, 0.0), 0, False
            if self.enabled:
                use = valid if valid.mean() >= self.min_static_fraction else matches.inside
                fit, n_in, refitted = self._fit(depth[use], ref[use], name)
            aligned = (fit[0] * depth + fit[1]).astype(np.float32)
            on = measure.valid if expansion is None else measure.valid & expansion.valid
            if on.any():  # the change beyond what the camera's translation explains (expansion on)
                ratios = None if expansion is None else expansion.ratio
                prev_raw = self._expected(measure.warp(self._prev_raw), ratios)
                prev_aligned = self._expected(measure.warp(self._prev_aligned), ratios)
                self._diffs["raw"].append(float(np.abs(depth - prev_raw)[on].mean()))
                self._diffs["stabilized"].append(float(np.abs(aligned - prev_aligned)[on].mean()))
            overlap = self._track_first_frame(measure, gray, depth, aligned, expansion)
            matched = float(valid.mean())
            next_ref = aligned
            if self.reference == "running":  # the running reference, carried along the matches
                blend = self.momentum * ref + (1 - self.momentum) * aligned
                next_ref = np.where(valid, blend, aligned).astype(np.float32)
        self._ref = next_ref
        for key, d in (("raw", depth), ("stabilized", aligned)):
            lo, hi = np.quantile(d, QUANTILES)
            self._ranges[key] = [min(self._ranges[key][0], float(lo)), max(self._ranges[key][1], float(hi))]
        self._prev_gray, self._prev_raw, self._prev_aligned = gray, depth, aligned
        self.frames.append(FrameAlignment(name, float(fit[0]), float(fit[1]), kind, float(matched), float(overlap),
                                          int(n_in), float(ratio), refitted))
        return aligned

    def _fit(self, depth: np.ndarray, ref: np.ndarray, name: str) -> tuple[tuple[float, float], int, bool]:
        """``(scale, shift), inliers, refitted`` for one frame from its matched pixels ``depth`` and the
        reference there ``ref`` (both 1-D). The previous frame's fit is kept (``refitted`` False) when the
        new one does not lower the median disagreement on those pixels by ``min_gain`` (relative), and when
        no fit is possible."""
        prev = (self.frames[-1].scale, self.frames[-1].shift)
        try:
            result = robust_fit_affine(depth, ref, loss=self.loss, ransac_iterations=20, symmetric=True,
                                       max_points=self.max_points, seed=self.seed + len(self.frames))
            if not (np.isfinite(result.scale) and result.scale > 0):
                raise ValueError(f"the fitted scale {result.scale:.3g} is not positive")
        except ValueError as e:  # a constant frame (black, fade): keep the previous frame's fit
            logger.warning("frame %s: cannot align (%s); reusing the previous frame's fit", name, e)
            return prev, 0, False
        fit = (float(result.scale), float(result.shift))
        if self.min_gain > 0:
            kept = float(np.median(np.abs(prev[0] * depth + prev[1] - ref)))
            new = float(np.median(np.abs(fit[0] * depth + fit[1] - ref)))
            if new > (1.0 - self.min_gain) * kept:  # consistent already: a new fit would only add noise
                return prev, result.num_inliers, False
        return fit, result.num_inliers, True

    def _use_expansion(self, matches: Matches, measure: Matches) -> bool:
        """Expansion on flow matches: every pair with ``motion="flow"``; with ``auto``, the pairs the probe
        calls ``forward`` (a pan then stays exactly as without it: its FOE is at infinity anyway)."""
        if not self.expansion or measure.identity:
            return False
        return self.motion == "flow" or matches.kind == "forward"

    def _expected(self, depth: np.ndarray, ratio: np.ndarray | None) -> np.ndarray:
        """``depth`` ``[H, W]`` moved by the depth ratios ``ratio`` ``[H, W]`` (``None``: unchanged), about
        ``depth_zero``: ``zero + ratio * (depth - zero)``."""
        if ratio is None:
            return depth
        zero = np.float32(self.depth_zero)
        return (zero + ratio * (depth - zero)).astype(np.float32)

    def _track_first_frame(self, matches: Matches, gray, depth, aligned, expansion=None) -> float:
        """Chain the matches (and the depth ratios, with ``expansion``) back to frame 0 and record the
        drift of this frame; returns the overlap."""
        if matches.identity and (self._to_first is None or self._to_first.identity):
            # a static camera so far: compare with frame 0 directly (no chained masks)
            valid = np.abs(gray - self._gray0) <= self.static_threshold
            self._to_first = Matches(None, None, valid, np.ones_like(valid), "static")
        else:
            self._to_first = matches if self._to_first is None else matches.compose(self._to_first)
        if expansion is not None:  # ratio_to_first(p) = ratio(p) * ratio_to_first(match(p))
            if self._ratio_to_first is None:
                self._ratio_to_first, self._ratio_valid = expansion.ratio, expansion.valid
            else:
                self._ratio_to_first = expansion.ratio * matches.warp(self._ratio_to_first)
                self._ratio_valid = expansion.valid & matches.warp_mask(self._ratio_valid)
        elif self._ratio_to_first is not None and not matches.identity:  # flow without ratios: carry them
            self._ratio_to_first = matches.warp(self._ratio_to_first)
            self._ratio_valid = matches.warp_mask(self._ratio_valid)
        valid = self._to_first.valid
        if self._ratio_valid is not None:
            valid = valid & self._ratio_valid
        if valid.mean() >= 0.01:
            # frame 0's depth (raw = aligned there) seen from frame k, moved by the chained depth ratios
            first = self._expected(self._to_first.warp(self._raw0), self._ratio_to_first)
            self._drifts["raw"].append(float(np.abs(depth - first)[valid].mean()))
            self._drifts["stabilized"].append(float(np.abs(aligned - first)[valid].mean()))
        return float(valid.mean())

    @property
    def output_range(self) -> tuple[float, float]:
        """``(lo, hi)`` of the aligned sequence so far (1% / 99% quantiles over frames)."""
        lo, hi = self._ranges["stabilized"]
        return lo, hi

    def _normalised(self, values: dict[str, list[float]]) -> dict[str, float]:
        out = {}
        for key in ("raw", "stabilized"):
            lo, hi = self._ranges[key]
            out[key] = float(np.mean(values[key])) / max(hi - lo, 1e-12) if values[key] else float("nan")
        return out

    def flicker(self) -> dict[str, float]:
        """Flicker of the raw and of the aligned sequence so far: mean over frame pairs of
        ``mean |depth_k(p) - depth_(k-1)(match(p))|`` on matched pixels, divided by the depth range."""
        return self._normalised(self._diffs)

    def drift(self) -> dict[str, float]:
        """Drift against the first frame: mean over frames of ``mean |depth_k(p) - depth_0(match_0(p))|``
        on pixels traced back to frame 0 (frames with under 1% of them are left out), divided by the
        depth range."""
        return self._normalised(self._drifts)


@dataclass
class VideoResult:
    """What :func:`process_video` did; also written to ``OUTDIR/video.json``."""

    source: str
    num_frames: int
    fps: float
    size: tuple[int, int]
    stabilized: bool
    motion: str
    flicker_raw: float
    flicker_stabilized: float
    drift_raw: float
    drift_stabilized: float
    value_range: tuple[float, float]
    files: dict[str, str]
    frames: list[dict]
    ground_truth: dict | None = None

    def summary(self) -> str:
        text = (f"{self.num_frames} frames; flicker {self.flicker_raw:.4f} per-frame, "
                f"{self.flicker_stabilized:.4f} {'stabilised' if self.stabilized else '(stabilisation off)'}; "
                f"drift from frame 0 {self.drift_raw:.4f} per-frame, {self.drift_stabilized:.4f}")
        if self.stabilized and self.num_frames > 1:
            refits = sum(bool(f.get("refitted")) for f in self.frames)
            text += f"; new fit on {refits} of {self.num_frames - 1} frames (the others kept the previous fit)"
        if self.ground_truth:
            gt = self.ground_truth
            text += (f"; AbsRel vs ground truth (one fit per video) {gt['absrel_raw']:.4f} per-frame, "
                     f"{gt['absrel_stabilized']:.4f} stabilised")
        return text


def process_video(
    pipe,
    source: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    formats: Sequence[str] = ("video", "png16"),
    colormap: str = "Spectral",
    processing_resolution: int | None = None,
    batch_size: int = 4,
    stabilizer: DepthStabilizer | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    fps: float | None = None,
    progress: bool = False,
    ground_truth: np.ndarray | None = None,
) -> VideoResult:
    """Predict stable depth for a video file or a folder of frames and write the outputs.

    Outputs under ``outdir``: ``depth.mp4`` (colourised; format ``video``), ``side_by_side.mp4``
    (input | depth; ``sbs``), ``frames/<name>.png`` (16-bit; ``png16``), ``depth.npy`` (float32
    ``[N, H, W]``; ``npy``) and ``video.json``. All maps are normalised once per video:
    ``value = (aligned - lo) / (hi - lo)`` clipped to [0, 1], with ``lo, hi`` in ``video.json``.

    Args:
        pipe: an :class:`~apdepth.ApDepthPipeline`.
        source: video file or folder of images.
        formats: among ``video``, ``sbs``, ``png16``, ``npy``.
        stabilizer: a configured :class:`DepthStabilizer` (default: one with default settings).
        stride, max_frames, fps: frame selection (see :class:`apdepth.postprocessing.video.frames.FrameReader`).
        progress: show a progress bar.
        ground_truth: exact depth of every source frame, ``[N_source, H, W]`` (e.g. a clip's
            ``depth.npy`` from ``apdepth synth clip``); the kept frames' per-frame and stabilised depth
            are scored against it (:func:`apdepth.postprocessing.video.ground_truth.ground_truth_report`) in ``video.json``.
    """
    bad = [f for f in formats if f not in VIDEO_FORMATS]
    if bad or not formats:
        raise ValueError(f"video formats: unknown {bad or list(formats)!r}; choose among {', '.join(VIDEO_FORMATS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    stabilizer = stabilizer if stabilizer is not None else DepthStabilizer()
    reader = FrameReader(source, stride=stride, max_frames=max_frames, fps=fps)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    # Pass 1: predict in batches, align frame by frame, spool aligned depth to a temporary file.
    fd, spool_path = tempfile.mkstemp(prefix=".depth_aligned.", suffix=".f32", dir=outdir)
    try:
        with os.fdopen(fd, "wb") as spool:
            names, raw_depths, size = _predict_to_spool(pipe, reader, stabilizer, spool, source, processing_resolution,
                                                        batch_size, keep_raw=ground_truth is not None,
                                                        progress=progress)

        # Pass 2: one normalisation for the whole video; write maps, videos and the report.
        aligned = np.memmap(spool_path, dtype=np.float32, mode="r", shape=(len(names), *size))
        lo, hi = stabilizer.output_range
        files = _write_outputs(aligned, names, reader, outdir, formats, colormap, (lo, hi))
        gt_report = None
        if ground_truth is not None:
            gt_report = _score(np.stack(raw_depths), np.asarray(aligned), ground_truth, stride, source)
        del aligned
    finally:
        os.unlink(spool_path)

    flick, drift = stabilizer.flicker(), stabilizer.drift()
    result = VideoResult(str(source), len(names), reader.fps, (int(size[0]), int(size[1])), stabilizer.enabled,
                         stabilizer.motion, flick["raw"], flick["stabilized"], drift["raw"], drift["stabilized"],
                         (lo, hi), files, [asdict(f) for f in stabilizer.frames], gt_report)
    _save_report(outdir / "video.json", result)
    logger.info("%s: %s", source, result.summary())
    return result


def _predict_to_spool(pipe, reader: FrameReader, stabilizer: DepthStabilizer, spool, source, processing_resolution,
                      batch_size: int, keep_raw: bool, progress: bool):
    """Pass 1 of :func:`process_video`: predict the frames in batches, align each with ``stabilizer`` and append
    it to ``spool`` (float32). Returns the frame names, the per-frame depths (only with ``keep_raw``) and the
    frame size ``(H, W)``."""
    from tqdm.auto import tqdm

    names: list[str] = []
    raw_depths: list[np.ndarray] = []  # kept only to score against ground truth
    size = None
    bar = tqdm(desc="video depth", unit="frame", disable=not progress)

    def flush(batch):
        out = pipe([frame for _, frame in batch], processing_resolution=processing_resolution,
                   batch_size=len(batch), output_type="np")
        for (name, frame), depth in zip(batch, out.depth):
            stabilizer(depth, frame, name).tofile(spool)
            names.append(name)
            if keep_raw:
                raw_depths.append(np.asarray(depth, np.float32))
        bar.update(len(batch))

    batch = []
    for name, frame in reader:
        if size is None:
            size = frame.shape[:2]
        elif frame.shape[:2] != size:
            raise ValueError(f"{source}: frame {name} is {frame.shape[1]}x{frame.shape[0]} but the first "
                             f"is {size[1]}x{size[0]}; all frames must share one size")
        batch.append((name, frame))
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    bar.close()
    if not names:
        raise ValueError(f"{source}: no frames read")
    return names, raw_depths, size


def _save_report(path: Path, result: VideoResult) -> None:
    """``video.json``: the result (non-finite numbers as null) and the definitions of its numbers."""
    report = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(result).items()}
    save_json(path, {
        **report,
        "flicker_definition": "mean over frames of mean |depth_k(p) - (zero + r_k (depth_(k-1)(match(p)) - zero))| "
                              "on matched pixels (optical flow when the camera moves, same pixel otherwise) / "
                              "(1%..99% depth range); r_k: the frame's depth_ratio (1 without a forward move), "
                              "zero: depth_zero",
        "drift_definition": "mean over frames of mean |depth_k(p) - (zero + R_k (depth_0(match_0(p)) - zero))| on "
                            "pixels traced back to frame 0 through the chained matches / (1%..99% depth range); "
                            "R_k: the product of the depth ratios since frame 0",
        "normalization": "aligned = lo + value * (hi - lo), value = png / 65535; aligned is in frame 0's units",
    })


def _score(raw: np.ndarray, aligned: np.ndarray, ground_truth: np.ndarray, stride: int, source) -> dict:
    """Score the kept frames (every ``stride``-th source frame from 0) against ``ground_truth``."""
    from .ground_truth import ground_truth_report

    gt = np.asarray(ground_truth)[::stride][:len(raw)]
    if gt.shape != raw.shape:
        raise ValueError(f"{source}: the ground truth holds {np.asarray(ground_truth).shape} (frames, height, "
                         f"width); the kept frames need {raw.shape} (every {stride}-th frame from the first)")
    return ground_truth_report(raw, aligned, gt)


def _write_outputs(aligned: np.ndarray, names: list[str], reader: FrameReader, outdir: Path,
                   formats: Sequence[str], colormap: str, value_range: tuple[float, float]) -> dict[str, str]:
    """Normalise the aligned frames ``[N, H, W]`` once and write the requested formats."""
    lo, hi = value_range
    scale = 1.0 / max(hi - lo, 1e-12)
    files: dict[str, str] = {}
    npy_tmp = outdir / ".depth.npy.tmp"
    try:
        with contextlib.ExitStack() as stack:
            video = sbs = npy = None
            if "video" in formats:
                video = stack.enter_context(VideoWriter(outdir / "depth.mp4", reader.fps))
                files["video"] = "depth.mp4"
            if "sbs" in formats:
                sbs = stack.enter_context(VideoWriter(outdir / "side_by_side.mp4", reader.fps))
                files["sbs"] = "side_by_side.mp4"
            if "npy" in formats:
                npy = np.lib.format.open_memmap(npy_tmp, mode="w+", dtype=np.float32, shape=aligned.shape)
                files["npy"] = "depth.npy"
            if "png16" in formats:
                files["png16"] = "frames/"
            rgb_frames = iter(reader) if sbs is not None else None  # decoded again for side by side
            for k, name in enumerate(names):
                norm = np.clip((aligned[k] - lo) * scale, 0.0, 1.0)  # [H, W]
                if "png16" in formats:
                    save_image(outdir / "frames" / f"{name}.png", depth_to_uint16(norm))
                if npy is not None:
                    npy[k] = norm
                if video is not None or sbs is not None:
                    colored = np.asarray(colorize_depth(norm, colormap))  # [H, W, 3] uint8
                    if video is not None:
                        video.write(colored)
                    if sbs is not None:
                        _, rgb = next(rgb_frames)
                        sbs.write(np.concatenate([rgb, colored], axis=1))  # [H, 2W, 3]
            if npy is not None:
                npy.flush()
                del npy
                os.replace(npy_tmp, outdir / "depth.npy")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(npy_tmp)
    return files
