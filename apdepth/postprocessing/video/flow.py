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
  wide, :meth:`FlowMatcher.probe`): under a move along the optical axis (the flow looks like an expansion
  of the whole image) flow, with the depth change the move causes taken from the flow
  (:func:`radial_expansion`; with ``FlowMatcher(expansion=False)`` same-pixel matches for the fit, see
  :meth:`FlowMatcher.__call__`); else the static path when a tenth of the pixels move by less than
  ``static_motion_px`` pixels; else flow (a pan, a sideways move).

A camera that moves along its optical axis changes the depth of every static point, by the same
distance. :func:`radial_expansion` measures that change as a depth *ratio*, which a per-frame shift
cannot mimic: under a camera translation every static point moves along the line through the focus
of expansion (FOE, the image of the direction of travel), and its distances to the FOE in the two
frames are in the ratio of its depths.

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
        kind: ``static``, ``flow`` or ``forward`` (a move along the optical axis: flow matches, or same-pixel
            ones when the expansion is off).
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
        forward_expansion_px, forward_gain: ``auto`` calls a pair ``forward`` when the expansion is at least
            this many pixels at the side edge and explains this fraction of the flow beyond a shift (:meth:`probe`).
        expansion: under a move along the optical axis (``auto``), fit on flow matches (the stabiliser
            corrects them with :func:`radial_expansion`); ``False``: on same-pixel matches.
    """

    motion: str = "auto"
    preset: str = "fast"
    fb_alpha: float = 0.01
    fb_beta: float = 0.5
    border: float = 1.0
    static_motion_px: float = 0.5
    probe_size: int = 96
    static_threshold: float = 0.02
    forward_expansion_px: float = 0.2
    forward_gain: float = 0.3
    expansion: bool = True

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

        A global flow ``u = c_x + s x, v = c_y + s y`` (a shift plus an expansion about the image centre;
        x, y from the centre) is fitted to DIS flow on copies ``probe_size`` pixels wide. ``shift_px =
        |(c_x, c_y)|`` (a pan, a sideways move), ``expansion_px = |s| * W / 2`` (the flow at the image's side
        edge that a move along the optical axis causes), both in full-size pixels. ``kind``: ``forward``
        when the expansion is at least ``forward_expansion_px``, exceeds the shift and explains a
        further ``forward_gain`` of the flow's energy beyond a shift alone (a moving object's flow does
        not look like an expansion of the whole image); else ``static`` when a tenth of the pixels
        move by less than ``static_motion_px`` (a low quantile: a static camera watching a large moving
        object still reads as static; so would a slow move along the axis, whose flow is small near the
        FOE, without the first test); else ``flow``.
        """
        cv2 = import_cv2()
        H, W = gray.shape
        factor = min(1.0, self.probe_size / W)
        size = (max(8, round(W * factor)), max(8, round(H * factor)))
        a = cv2.resize(to_uint8(prev_gray), size, interpolation=cv2.INTER_AREA)
        b = cv2.resize(to_uint8(gray), size, interpolation=cv2.INTER_AREA)
        flow = self._probe.calc(a, b, None).reshape(-1, 2).astype(np.float64) / factor  # [n, 2], full-size px
        still = float(np.quantile(np.hypot(flow[:, 0], flow[:, 1]), 0.1))
        rows, cols = np.mgrid[0:size[1], 0:size[0]]
        x = (cols.ravel() - (size[0] - 1) / 2) / factor  # [n], full-size pixels from the centre
        y = (rows.ravel() - (size[1] - 1) / 2) / factor
        n = x.size
        design = np.zeros((2 * n, 3))  # rows: u then v; columns: s, c_x, c_y
        design[:n, 0], design[n:, 0], design[:n, 1], design[n:, 2] = x, y, 1.0, 1.0
        target = np.concatenate([flow[:, 0], flow[:, 1]])  # [2n]
        (s, cx, cy), *_ = np.linalg.lstsq(design, target, rcond=None)
        energy = max(float(target @ target), 1e-12)
        gain = (float(((flow - flow.mean(0)) ** 2).sum()) - float(((design @ (s, cx, cy) - target) ** 2).sum())) / energy
        shift, expansion = float(np.hypot(cx, cy)), float(abs(s) * W / 2)
        if expansion >= self.forward_expansion_px and expansion > shift and gain >= self.forward_gain:
            return "forward", shift, expansion
        if still < self.static_motion_px:
            return "static", shift, expansion
        return "flow", shift, expansion

    def static_matches(self, prev_gray: np.ndarray, gray: np.ndarray) -> Matches:
        """Same-pixel matches where the grey level changed by at most ``static_threshold``."""
        valid = np.abs(gray - prev_gray) <= self.static_threshold
        return Matches(None, None, valid, np.ones_like(valid), "static")

    def __call__(self, prev_gray: np.ndarray, gray: np.ndarray) -> tuple[Matches, Matches]:
        """``(fit, measure)``: matches of frame k (``gray``) in frame k - 1 (``prev_gray``) to fit the
        alignment on and to measure flicker and drift on; greys float ``[H, W]`` in [0, 1].

        ``static``: same-pixel matches for both; ``flow``: flow matches for both. ``auto`` (see
        :meth:`probe`): same-pixel for both when nothing moves; flow for both under a pan or sideways
        motion; under a move along the optical axis (``forward``) flow for both, labelled ``forward``
        (every flow-matched point changes depth by the distance travelled, which a plain scale-and-shift
        fit cannot tell from drift and would absorb: the stabiliser corrects the reference with
        :func:`radial_expansion`). With ``expansion=False`` the ``forward`` fit uses same-pixel matches
        instead (surfaces parallel to the travel keep their depth at a fixed pixel; a heuristic).
        """
        kind = self.motion if self.motion != "auto" else self.probe(prev_gray, gray)[0]
        if kind == "static":
            matches = self.static_matches(prev_gray, gray)
            return matches, matches
        flow = self.flow_matches(prev_gray, gray)
        if kind == "forward":
            if self.expansion:
                fit = Matches(flow.map_x, flow.map_y, flow.valid, flow.inside, "forward")
            else:
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



@dataclass
class Expansion:
    """Depth ratios of static points between two frames, from the flow's expansion about the focus of expansion.

    Attributes:
        ratio: float32 ``[H, W]``, ``z_k(p) / z_(k-1)(match(p))`` for pixel p of frame k: 1 where nothing
            moves along the axis, below 1 when the camera moves towards the point.
        valid: bool ``[H, W]``, pixels whose ratio is trusted (valid match, flow along the line through
            the FOE, not too close to the FOE).
        foe: the focus of expansion ``(column, row)`` in frame k, ``None`` at infinity (no motion along the
            axis: a pan, a sideways move), when the flow is too small to tell or not radial.
        radial_fraction: the fraction of the moving pixels whose flow lies along the radial line (1 when
            nothing moves); below ``min_radial_fraction`` the flow is not a translation's (a roll, a
            large moving object) and the ratios are all 1.
    """

    ratio: np.ndarray
    valid: np.ndarray
    foe: tuple[float, float] | None
    radial_fraction: float = 1.0


def radial_expansion(matches: Matches, *, min_flow_px: float = 0.25, min_radius: float = 0.1,
                     max_angle_deg: float = 20.0, iterations: int = 4, max_points: int = 20_000,
                     min_radial_fraction: float = 0.5) -> Expansion:
    """The depth ratio ``z_k / z_(k-1)`` of each matched pixel under a camera translation.

    Let ``q = p + b(p)`` be pixel p's match in frame k - 1 (``b``: the backward flow of ``matches``).
    A camera translation with a component ``t_z`` along its axis moves a static point at depth ``Z``
    (frame k - 1) radially about the focus of expansion ``e``: ``p - e = (q - e) * Z / (Z - t_z)``, so
    ``b(p) = (r - 1) (p - e)`` with ``r = (Z - t_z) / Z = z_k / z_(k-1)``, exactly, for any surface
    orientation and without the camera's intrinsics. (The local scale change of the flow, its Jacobian,
    equals that ratio only on fronto-parallel surfaces; on a floor it overstates the change by half.)

    ``e`` is found as the point all flow vectors point away from: in homogeneous form ``e = v / w``,
    each pixel with ``|b| >= min_flow_px`` gives ``b x (w p - v) = 0``, a linear equation in ``(v, w)``,
    solved as least squares with ``|(v, w)| = 1`` on at most ``max_points`` evenly spread pixels and
    re-weighted (Cauchy) on the angle between ``b`` and ``p - e`` ``iterations`` times. ``w -> 0`` is an FOE at infinity (a pan, a sideways
    move): the flow is then parallel and ``r = 1 + w b.(w p - v) / |w p - v|^2 -> 1``, today's
    alignment. Then ``r - 1`` is ``b`` projected on ``p - e``, divided by ``|p - e|``.

    Rejected (``valid`` False): invalid matches; pixels within ``min_radius`` (a fraction of the image
    diagonal) of the FOE, where the ratio divides by a small distance; pixels whose flow is at least
    ``min_flow_px`` long and more than ``max_angle_deg`` away from the radial line (a moving object,
    a bad match; smaller flows have no reliable direction and keep ``r`` close to 1). When under
    ``min_radial_fraction`` of the moving pixels pass the angle test the flow is not a translation's
    (a roll, a moving object filling the moving pixels): every ratio is 1 (the plain alignment). A
    camera rotation is not modelled (a pan reads as an FOE at infinity, a roll as no translation).
    """
    H, W = matches.valid.shape
    if matches.identity:
        return Expansion(np.ones((H, W), np.float32), matches.valid.copy(), None)
    scale = np.float32(max(H, W) / 2.0)  # normalised coordinates: centred, about [-1, 1]
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32)
    px, py = (cols - np.float32((W - 1) / 2)) / scale, (rows - np.float32((H - 1) / 2)) / scale  # [H, W]
    bx = (matches.map_x - cols) / scale
    by = (matches.map_y - rows) / scale
    mag = np.hypot(bx, by)  # [H, W], normalised units
    moving = matches.valid & (mag * scale >= min_flow_px)
    ratio = np.ones((H, W), np.float32)
    if moving.sum() < 20:  # nothing moves enough to tell a direction: depth unchanged
        return Expansion(ratio, matches.valid.copy(), None)
    index = np.flatnonzero(moving)
    index = index[::max(1, index.size // max_points)]  # an even subsample is plenty for 3 unknowns
    ux, uy = bx.flat[index] / mag.flat[index], by.flat[index] / mag.flat[index]  # unit flow directions [M]
    mx, my = px.flat[index], py.flat[index]
    # b x (w p - v) = ux (w py - vy) - uy (w px - vx) = uy vx - ux vy + (ux py - uy px) w
    rows_eq = np.stack([uy, -ux, ux * my - uy * mx], axis=1).astype(np.float64)  # [M, 3]
    weights = np.ones(len(rows_eq))
    for _ in range(max(1, iterations)):
        # least squares with |(v, w)| = 1: the eigenvector of the smallest eigenvalue of A^T diag(w^2) A
        normal = (rows_eq * weights[:, None] ** 2).T @ rows_eq  # [3, 3]
        sol = np.linalg.eigh(normal)[1][:, 0]  # (vx, vy, w)
        residual = np.abs(rows_eq @ sol) / np.maximum(np.hypot(sol[2] * mx - sol[0], sol[2] * my - sol[1]), 1e-12)
        spread = 1.4826 * np.median(residual) + 1e-6
        weights = 1.0 / (1.0 + (residual / (2.0 * spread)) ** 2)
    vx, vy, w = (float(v) for v in sol)
    rx, ry = np.float32(w) * px - np.float32(vx), np.float32(w) * py - np.float32(vy)  # [H, W]: (p - e) * w
    rad2 = rx * rx + ry * ry
    ratio = (1.0 + w * (bx * rx + by * ry) / np.maximum(rad2, 1e-12)).astype(np.float32)
    # the angle between the flow and the radial line, where the flow is long enough to have a direction
    sin_angle = np.abs(bx * ry - by * rx) / np.maximum(mag * np.sqrt(rad2), 1e-12)
    radial = (mag * scale < min_flow_px) | (sin_angle <= np.sin(np.radians(max_angle_deg)))
    radial_fraction = float(radial[moving].mean())
    if radial_fraction < min_radial_fraction:
        return Expansion(np.ones((H, W), np.float32), matches.valid.copy(), None, radial_fraction)
    far = rad2 >= (min_radius * np.hypot(H, W) / scale * w) ** 2  # |p - e| >= min_radius * diagonal
    valid = matches.valid & radial & far & np.isfinite(ratio) & (ratio > 0)
    ratio[~np.isfinite(ratio) | (ratio <= 0)] = 1.0
    foe = None
    if abs(w) > 1e-9 and max(abs(vx / w), abs(vy / w)) < 1e3:
        foe = (float(vx / w * scale + (W - 1) / 2), float(vy / w * scale + (H - 1) / 2))
    return Expansion(ratio, valid, foe, radial_fraction)
