"""Pixel correspondences between video frames: same position (static camera) or optical flow.

The stabiliser (:class:`apdepth.postprocessing.video.stabilize.DepthStabilizer`) fits each frame's depth to the previous one
on *corresponding* pixels, and the flicker report compares depth along the same correspondences.

- ``static``: pixel p of frame k corresponds to pixel p of frame k - 1 when its grey level changed
  by at most a threshold (:func:`apdepth.postprocessing.video.stabilize.static_mask`). Right for a camera on a tripod; wrong as
  soon as the camera moves (a pan shifts every pixel).
- ``flow``: dense optical flow (OpenCV's DIS, no learned weights) in both directions. Pixel p of
  frame k maps to ``p + B(p)`` in frame k - 1 (``B``: backward flow). A match is kept when the
  forward flow brings it back (forward-backward check, ``|B(p) + F(p + B(p))|^2 <= alpha (|B|^2 +
  |F|^2) + beta``, which also rejects occluded and disoccluded pixels) and ``p + B(p)`` lies inside
  frame k - 1 with a margin (out-of-frame rejection).
- ``auto``: a cheap global-motion test per frame pair (DIS on a copy at most ``probe_size`` pixels
  wide, :meth:`FlowMatcher.probe`): the static path when a tenth of the pixels move by less than
  ``static_motion_px`` pixels; flow under a pan or sideways motion; under a move along the optical axis the fit uses
  same-pixel matches and the report flow (see :meth:`FlowMatcher.__call__` for why).

Needs OpenCV: ``pip install 'apdepth[video]'`` (``opencv-python-headless``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

MOTIONS = ("auto", "static", "flow")
DIS_PRESETS = ("ultrafast", "fast", "medium")


def import_cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError("motion-compensated video needs OpenCV: pip install 'apdepth[video]' "
                          "(or use --motion static)") from None
    return cv2


def have_cv2() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Matches:
    """Where each pixel of frame k lies in an earlier frame.

    Attributes:
        map_x, map_y: float32 ``[H, W]`` source coordinates (column, row; pixel centres at integers),
            or ``None`` for the identity (the static path).
        valid: bool ``[H, W]``, trusted correspondences.
        inside: bool ``[H, W]``, correspondences inside the earlier frame (a fallback when few are valid).
        kind: ``static``, ``flow`` or ``forward`` (same-pixel matches chosen for a move along the axis).
    """

    map_x: np.ndarray | None
    map_y: np.ndarray | None
    valid: np.ndarray
    inside: np.ndarray
    kind: str

    @property
    def identity(self) -> bool:
        return self.map_x is None

    def warp(self, image: np.ndarray) -> np.ndarray:
        """``image`` (float32 ``[H, W]`` of the earlier frame) sampled at the matches (bilinear)."""
        if self.identity:
            return image
        cv2 = import_cv2()
        return cv2.remap(np.ascontiguousarray(image, dtype=np.float32), self.map_x, self.map_y,
                         interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def compose(self, earlier: Matches) -> Matches:
        """Chain ``earlier`` (frame k - 1 -> frame j) after ``self`` (frame k -> frame k - 1): frame k -> frame j."""
        if self.identity and earlier.identity:
            return Matches(None, None, self.valid & earlier.valid, self.inside & earlier.inside, "static")
        H, W = self.valid.shape
        cv2 = import_cv2()
        if earlier.identity:
            return Matches(self.map_x, self.map_y, self.valid & self.warp_mask(earlier.valid),
                           self.inside & self.warp_mask(earlier.inside), "flow")
        if self.identity:
            mx, my = earlier.map_x, earlier.map_y
        else:
            mx = cv2.remap(earlier.map_x, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            my = cv2.remap(earlier.map_y, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = self.inside & self.warp_mask(earlier.inside) & _inside(mx, my, H, W, 0.0)
        return Matches(mx, my, self.valid & self.warp_mask(earlier.valid) & inside, inside, "flow")

    def warp_mask(self, mask: np.ndarray) -> np.ndarray:
        """A bool mask of the earlier frame, looked up at the matches (true only where all 4 neighbours are)."""
        if self.identity:
            return mask
        return self.warp(mask.astype(np.float32)) > 0.999


def _inside(mx: np.ndarray, my: np.ndarray, H: int, W: int, margin: float) -> np.ndarray:
    return (mx >= margin) & (mx <= W - 1 - margin) & (my >= margin) & (my <= H - 1 - margin)


def to_uint8(gray: np.ndarray) -> np.ndarray:
    """Grey ``[H, W]`` in [0, 1] -> uint8, as OpenCV's flow wants it."""
    return np.clip(gray * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass
class FlowMatcher:
    """Correspondences between consecutive frames (see the module docstring).

    Attributes:
        motion: ``auto``, ``static`` or ``flow``.
        preset: DIS preset, ``ultrafast``, ``fast`` or ``medium``.
        fb_alpha, fb_beta: forward-backward check, ``|B + F|^2 <= alpha (|B|^2 + |F|^2) + beta`` (pixels^2).
        border: matches closer than this many pixels to the earlier frame's edge are rejected.
        static_motion_px: ``auto`` takes the static path when a tenth of the pixels move less (full-size pixels).
        probe_size: width of the downscaled copy ``auto`` measures the motion on.
        static_threshold: grey-level change (0-1) below which a pixel counts as static (static path).
    """

    motion: str = "auto"
    preset: str = "fast"
    fb_alpha: float = 0.01
    fb_beta: float = 0.5
    border: float = 1.0
    static_motion_px: float = 0.5
    probe_size: int = 96
    static_threshold: float = 0.02

    def __post_init__(self):
        if self.motion not in MOTIONS:
            raise ValueError(f"motion must be one of {', '.join(MOTIONS)}, got {self.motion!r}")
        if self.preset not in DIS_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(DIS_PRESETS)}, got {self.preset!r}")
        self._dis = self._probe = None
        if self.motion != "static":
            cv2 = import_cv2()
            preset = {"ultrafast": cv2.DISOpticalFlow_PRESET_ULTRAFAST, "fast": cv2.DISOpticalFlow_PRESET_FAST,
                      "medium": cv2.DISOpticalFlow_PRESET_MEDIUM}[self.preset]
            self._dis = cv2.DISOpticalFlow_create(preset)
            if self.motion == "auto":
                self._probe = cv2.DISOpticalFlow_create(cv2.DISOpticalFlow_PRESET_ULTRAFAST)

    def probe(self, prev_gray: np.ndarray, gray: np.ndarray) -> tuple[str, float, float]:
        """Classify the image motion between two frames on small copies: ``(kind, shift_px, expansion_px)``.

        A global affine flow ``u = a0 + a1 x + a2 y, v = b0 + b1 x + b2 y`` (x, y from the image centre)
        is fitted to DIS flow on copies ``probe_size`` pixels wide. ``shift_px = |(a0, b0)|`` (a pan, a
        sideways move), ``expansion_px = |a1 + b2| / 2 * W / 2`` (the flow at the image's side edge that
        a move along the optical axis causes), both in full-size pixels. ``kind``: ``static`` when a
        quarter of the pixels move by less than ``static_motion_px``; ``forward`` when the expansion exceeds the shift;
        else ``flow``.
        """
        cv2 = import_cv2()
        H, W = gray.shape
        factor = min(1.0, self.probe_size / W)
        size = (max(8, round(W * factor)), max(8, round(H * factor)))
        a = cv2.resize(to_uint8(prev_gray), size, interpolation=cv2.INTER_AREA)
        b = cv2.resize(to_uint8(gray), size, interpolation=cv2.INTER_AREA)
        flow = self._probe.calc(a, b, None).reshape(-1, 2) / factor  # [h * w, 2], full-size pixels
        # a low quantile: a static camera watching a large moving object still reads as static
        still = float(np.quantile(np.hypot(flow[:, 0], flow[:, 1]), 0.1))
        rows, cols = np.mgrid[0:size[1], 0:size[0]]
        design = np.stack([np.ones(rows.size), (cols.ravel() - (size[0] - 1) / 2) / factor,
                           (rows.ravel() - (size[1] - 1) / 2) / factor], axis=1)  # [h * w, 3]
        (a0, b0), (a1, _), (_, b2) = np.linalg.lstsq(design, flow.astype(np.float64), rcond=None)[0]
        shift, expansion = float(np.hypot(a0, b0)), float(abs(a1 + b2) / 2 * W / 2)
        if still < self.static_motion_px:
            return "static", shift, expansion
        return ("forward" if expansion > shift else "flow"), shift, expansion

    def static_matches(self, prev_gray: np.ndarray, gray: np.ndarray) -> Matches:
        """Same-pixel matches where the grey level changed by at most ``static_threshold``."""
        valid = np.abs(gray - prev_gray) <= self.static_threshold
        return Matches(None, None, valid, np.ones_like(valid), "static")

    def __call__(self, prev_gray: np.ndarray, gray: np.ndarray) -> tuple[Matches, Matches]:
        """``(fit, measure)``: matches of frame k (``gray``) in frame k - 1 (``prev_gray``) to fit the
        alignment on and to measure flicker and drift on; greys float ``[H, W]`` in [0, 1].

        ``static``: same-pixel matches for both; ``flow``: flow matches for both. ``auto`` (see
        :meth:`probe`): same-pixel for both when nothing moves; flow for both under a pan or sideways
        motion; under a move along the optical axis (``forward``), same-pixel for the fit (every
        flow-matched point changes depth by the distance travelled, which a scale-and-shift fit cannot
        tell from drift and would absorb; surfaces parallel to the travel keep their depth at a fixed
        pixel) and flow for the measurement.
        """
        kind = self.motion if self.motion != "auto" else self.probe(prev_gray, gray)[0]
        if kind == "static":
            matches = self.static_matches(prev_gray, gray)
            return matches, matches
        flow = self.flow_matches(prev_gray, gray)
        if kind == "forward":
            fit = self.static_matches(prev_gray, gray)
            fit.kind = "forward"
            return fit, flow
        return flow, flow

    def flow_matches(self, prev_gray: np.ndarray, gray: np.ndarray) -> Matches:
        """Forward-backward-checked optical-flow matches of ``gray``'s pixels in ``prev_gray``."""
        cv2 = import_cv2()
        a, b = to_uint8(prev_gray), to_uint8(gray)
        backward = self._dis.calc(b, a, None)  # [H, W, 2]: b(p) ~ a(p + backward(p))
        forward = self._dis.calc(a, b, None)  # [H, W, 2]: a(q) ~ b(q + forward(q))
        H, W = gray.shape
        cols, rows = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
        map_x, map_y = cols + backward[..., 0], rows + backward[..., 1]
        inside = _inside(map_x, map_y, H, W, self.border)
        fwd = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # F(p + B(p))
        loop = ((backward + fwd) ** 2).sum(-1)
        bound = self.fb_alpha * ((backward ** 2).sum(-1) + (fwd ** 2).sum(-1)) + self.fb_beta
        return Matches(map_x, map_y, inside & (loop <= bound), inside, "flow")

