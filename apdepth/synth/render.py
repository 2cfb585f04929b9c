"""The vectorised ray caster: primary visibility, deferred shading, shadow rays, sky and fog.

Everything is numpy on whole arrays; Python loops run only over primitives and lights. Two
cullings keep it fast on one core:

- primary rays: each primitive is tested only on the pixel rectangle covering its bounding sphere;
- shadow rays: the hit points are grouped in 16x16-pixel tiles; a tile's rays towards a light are
  tested against an occluder only when the occluder's bounding sphere meets the tile's light cone.

Depth is exact: the ray parameter of the nearest hit with rays scaled to camera-frame z = 1, i.e.
planar depth (see :mod:`apdepth.synth.camera`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .camera import Camera
from .geometry import INF, Primitive

logger = logging.getLogger(__name__)

TILE = 8


@dataclass
class Light:
    """``kind``: "point" (at ``position``), "directional" (``direction`` points towards the light, e.g.
    the sun) or "area" (a rectangle at ``position`` spanned by half-size vectors ``axis_u``, ``axis_v``,
    sampled on a ``samples x samples`` grid). ``color`` is the radiance scale (power for point/area lights:
    received irradiance is ``color / max(distance^2, 0.25)``)."""

    kind: str
    color: np.ndarray
    position: np.ndarray | None = None
    direction: np.ndarray | None = None
    axis_u: np.ndarray | None = None
    axis_v: np.ndarray | None = None
    samples: int = 2

    def __post_init__(self):
        if self.kind not in ("point", "directional", "area"):
            raise ValueError(f"Light kind must be point, directional or area, got {self.kind!r}")
        self.color = np.asarray(self.color, np.float32).reshape(3)
        if self.kind == "directional":
            d = np.asarray(self.direction, np.float64)
            self.direction = d / np.linalg.norm(d)
        else:
            self.position = np.asarray(self.position, np.float64).reshape(3)
        if self.kind == "area":
            self.axis_u = np.asarray(self.axis_u, np.float64).reshape(3)
            self.axis_v = np.asarray(self.axis_v, np.float64).reshape(3)

    def point_samples(self) -> list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray]]:
        """[(position or None, direction or None, colour)] of the point samples that stand for this light."""
        if self.kind == "point":
            return [(self.position, None, self.color)]
        if self.kind == "directional":
            return [(None, self.direction, self.color)]
        n = self.samples
        offsets = (np.arange(n) + 0.5) / n * 2 - 1
        return [(self.position + a * self.axis_u + b * self.axis_v, None, self.color / n**2)
                for a in offsets for b in offsets]


@dataclass
class Scene:
    """Primitives, lights and the environment. ``sky(dirs [3, N] unit) -> [N, 3]`` gives the radiance
    of rays that hit nothing; ``ambient`` is the sky/ground hemisphere light ``(from above, from below)``;
    ``fog``: optional ``(colour [3], density per metre)``."""

    primitives: list[Primitive] = field(default_factory=list)
    lights: list[Light] = field(default_factory=list)
    ambient: tuple = ((0.2, 0.2, 0.2), (0.1, 0.1, 0.1))
    sky: Callable[[np.ndarray], np.ndarray] | None = None
    fog: tuple | None = None

    def add(self, *prims: Primitive) -> None:
        self.primitives.extend(prims)


@dataclass
class RenderOutput:
    """``radiance`` float32 ``[H, W, 3]`` linear; ``depth`` float32 ``[H, W]`` planar depth (inf: no hit);
    ``normal`` float32 ``[3, H, W]`` (0 where no hit); ``prim_id`` int32 ``[H, W]`` (-1: no hit)."""

    radiance: np.ndarray
    depth: np.ndarray
    normal: np.ndarray
    prim_id: np.ndarray


def screen_rects(prims: list[Primitive], camera: Camera) -> list[tuple[int, int, int, int] | None]:
    """Per primitive, the pixel rectangle ``(row0, row1, col0, col1)`` its bounding sphere may cover (None: unseen)."""
    rects = []
    for prim in prims:
        center, radius = prim.bounding_sphere()
        rects.append(camera.screen_rect(center, radius) if np.isfinite(radius)
                     else (0, camera.height, 0, camera.width))
    return rects


def primary_visibility(prims: list[Primitive], rects: list, origin: np.ndarray, dirs: np.ndarray,
                       row0: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit for the rays ``dirs`` ``[3, h, W]`` of image rows ``row0 .. row0 + h``:
    (t ``[h, W]`` float32, inf where none; primitive index ``[h, W]`` int32, -1 where none)."""
    _, h, w = dirs.shape
    t_buf = np.full((h, w), INF, dtype=np.float32)
    id_buf = np.full((h, w), -1, dtype=np.int32)
    origin = origin.astype(np.float32)
    for i, (prim, rect) in enumerate(zip(prims, rects)):
        if rect is None:
            continue
        r0, r1 = max(rect[0] - row0, 0), min(rect[1] - row0, h)
        if r0 >= r1:
            continue
        c0, c1 = rect[2], rect[3]
        t = prim.intersect(origin, dirs[:, r0:r1, c0:c1], t_min=1e-4)  # [h', w']
        t_sub, id_sub = t_buf[r0:r1, c0:c1], id_buf[r0:r1, c0:c1]
        closer = t < t_sub
        np.copyto(t_sub, t, where=closer)
        np.copyto(id_sub, np.int32(i), where=closer)
    return t_buf, id_buf


class _Tiles:
    """Hit pixels grouped by 16x16 tile, with each tile's bounding sphere of hit points."""

    def __init__(self, points: np.ndarray, pix: np.ndarray, width: int):
        # points [3, M] world hit points of the pixels with flat indices pix [M]
        rows, cols = pix // width, pix % width
        ntx = (width + TILE - 1) // TILE
        tile = (rows // TILE) * ntx + cols // TILE
        self.order = np.argsort(tile, kind="stable")  # compact indices sorted by tile
        tiles_sorted = tile[self.order]
        self.ids, self.starts, self.counts = np.unique(tiles_sorted, return_index=True, return_counts=True)
        p = points[:, self.order]
        lo = np.minimum.reduceat(p, self.starts, axis=1)
        hi = np.maximum.reduceat(p, self.starts, axis=1)
        self.center = (lo + hi) * 0.5  # [3, n_tiles]
        self.radius = np.sqrt(((hi - lo) ** 2).sum(0)) * 0.5 + 1e-3  # [n_tiles]

    def members(self, tile_mask: np.ndarray) -> np.ndarray:
        """Compact pixel indices of the tiles selected by ``tile_mask`` ``[n_tiles]``."""
        starts, counts = self.starts[tile_mask], self.counts[tile_mask]
        total = int(counts.sum())
        if total == 0:
            return np.empty(0, dtype=np.int64)
        # ranges [start, start + count) concatenated without a Python loop
        run_start = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return self.order[run_start + np.arange(total)]


def _candidate_tiles(tiles: _Tiles, occ_c: np.ndarray, occ_r: np.ndarray, light_pos, light_dir) -> np.ndarray:
    """bool ``[n_occluders, n_tiles]``: may the occluder's sphere cut a ray from the tile towards the light?"""
    m, s = tiles.center, tiles.radius  # [3, T], [T]
    if light_dir is not None:  # rays m + u * dir, u >= 0, from a ball of radius s: a half-cylinder
        w = occ_c[:, :, None] - m[:, None, :]  # [3, K, T]
        proj = np.einsum("i,ikt->kt", light_dir, w)
        dist2 = (w * w).sum(0) - np.maximum(proj, 0.0) ** 2
        reach = (occ_r[:, None] + s[None, :])
        return (dist2 < reach**2) & (proj > -reach)
    a = m - light_pos[:, None]  # light -> tile, [3, T]
    la = np.sqrt((a * a).sum(0))
    b = occ_c - light_pos[:, None]  # light -> occluder, [3, K]
    lb = np.sqrt((b * b).sum(0))
    cos_ab = np.einsum("it,ik->kt", a, b) / np.maximum(la[None, :] * lb[:, None], 1e-9)
    angle = np.arccos(np.clip(cos_ab, -1.0, 1.0))
    alpha = np.arcsin(np.clip(s / np.maximum(la, 1e-9), 0.0, 1.0))  # tile cone half-angle [T]
    beta = np.arcsin(np.clip(occ_r / np.maximum(lb, 1e-9), 0.0, 1.0))  # occluder half-angle [K]
    inside = (la <= s)[None, :] | (lb <= occ_r)[:, None]
    return inside | ((angle <= alpha[None, :] + beta[:, None]) & (lb[:, None] - occ_r[:, None] < la[None, :] + s[None, :]))


def shadow_visibility(prims: list[Primitive], occluders: tuple, tiles: _Tiles, points: np.ndarray,
                      normals: np.ndarray, owner: np.ndarray, active: np.ndarray, light_pos, light_dir) -> np.ndarray:
    """bool ``[M]``: is the light visible from each hit point (``points``/``normals`` ``[3, M]``)?

    Only ``active`` points (facing the light) are tested; a convex primitive never shadows its own lit side,
    so a point's own primitive (``owner``) is skipped. ``occluders``: (primitive indices [K], bounding-sphere
    centres [3, K], radii [K]).
    """
    visible = active.copy()
    occluders, occ_c, occ_r = occluders
    if not occluders or not active.any():
        return visible
    cand = _candidate_tiles(tiles, occ_c, occ_r, light_pos, light_dir)  # [K, T]
    for j in np.nonzero(cand.any(axis=1))[0]:
        k = occluders[j]
        idx = tiles.members(cand[j])
        idx = idx[visible[idx] & (owner[idx] != k)]
        if idx.size == 0:
            continue
        o = points[:, idx] + normals[:, idx] * np.float32(1e-3)
        if light_dir is None:
            d = light_pos.astype(np.float32)[:, None] - o  # t in (0, 1) reaches the light
            t = prims[k].intersect(o, d, t_min=1e-5, t_max=np.float32(1.0))
        else:
            d = np.broadcast_to(light_dir.astype(np.float32)[:, None], o.shape)
            t = prims[k].intersect(o, d, t_min=1e-5)
        visible[idx[np.isfinite(t)]] = False
    return visible


def band_rows(width: int) -> int:
    """Rows rendered together: about 40k pixels, so that the working arrays stay in the CPU cache."""
    return max(TILE, (40000 // max(width, 1)) // TILE * TILE)


def render(scene: Scene, camera: Camera, shadows: bool = True) -> RenderOutput:
    """Ray-cast ``scene`` through ``camera``, band of rows by band of rows."""
    H, W = camera.height, camera.width
    rects = screen_rects(scene.primitives, camera)
    casters = [k for k, p in enumerate(scene.primitives) if p.casts_shadow]
    spheres = [scene.primitives[k].bounding_sphere() for k in casters]
    occluders = (casters, np.array([c for c, _ in spheres], np.float32).reshape(-1, 3).T,
                 np.array([r for _, r in spheres], np.float32))
    samples = [s for light in scene.lights for s in light.point_samples()]
    dirs = camera.ray_directions()  # [3, H, W], camera z = 1
    radiance = np.empty((H, W, 3), np.float32)
    normal = np.zeros((3, H, W), np.float32)
    depth = np.empty((H, W), np.float32)
    prim_id = np.empty((H, W), np.int32)
    step = band_rows(W)
    for r0 in range(0, H, step):
        r1 = min(H, r0 + step)
        band = _render_band(scene, camera, dirs[:, r0:r1], r0, rects, occluders, samples, shadows)
        radiance[r0:r1], depth[r0:r1], normal[:, r0:r1], prim_id[r0:r1] = band
    return RenderOutput(radiance, depth, normal, prim_id)


@dataclass
class _Hits:
    """The band's hit pixels as compact arrays over M pixels, grouped by primitive (``owner`` sorted)."""

    pix: np.ndarray  # [M] flat pixel indices in the band
    owner: np.ndarray  # [M] primitive index
    t: np.ndarray  # [M] ray parameter (planar depth)
    d: np.ndarray  # [3, M] ray directions (camera z = 1)
    d_len: np.ndarray  # [M]
    points: np.ndarray  # [3, M] world hit points
    view: np.ndarray  # [3, M] unit, towards the camera


def _hits(camera, dirs: np.ndarray, t_buf: np.ndarray, id_buf: np.ndarray, n_prims: int) -> _Hits:
    pix = np.flatnonzero(id_buf.ravel() >= 0)  # [M]
    owner = id_buf.ravel()[pix]
    order = np.argsort(owner.astype(np.int16 if n_prims < 32768 else np.int32), kind="stable")
    pix, owner = pix[order], owner[order]
    d = dirs.reshape(3, -1)[:, pix]  # [3, M]
    t = t_buf.ravel()[pix]
    points = camera.position.astype(np.float32)[:, None] + t * d  # [3, M]
    d_len = np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
    return _Hits(pix, owner, t, d, d_len, points, -d / d_len)


def _surfaces(prims, camera, hits: _Hits):
    """Per hit pixel: normal ``[3, M]`` (facing the camera), albedo ``[M, 3]``, specular and shininess ``[M]``,
    emission ``[M, 3]``, from each primitive's surface and materials (texture level from the pixel footprint)."""
    M = hits.pix.size
    normals = np.empty((3, M), np.float32)
    albedo = np.empty((M, 3), np.float32)
    spec = np.zeros(M, np.float32)
    shin = np.ones(M, np.float32)
    emission = np.zeros((M, 3), np.float32)
    ids, starts = np.unique(hits.owner, return_index=True)
    bounds = np.append(starts, M)
    for i, a, b in zip(ids, bounds[:-1], bounds[1:]):
        prim = prims[i]
        n, uv, face = prim.surface(hits.points[:, a:b])
        flip = _dot(n, hits.d[:, a:b]) > 0  # the back of a plane, or a room seen from inside
        n[:, flip] *= -1
        normals[:, a:b] = n
        cos_view = np.abs(_dot(n, hits.view[:, a:b]))
        footprint = hits.t[a:b] * hits.d_len[a:b] / camera.fx / np.maximum(cos_view, 0.2)  # metres per pixel
        for f in np.unique(face) if len(prim.materials) > 1 else [None]:
            sel = slice(None) if f is None else face == f
            mat = prim.material(0 if f is None else int(f))
            rows = np.arange(a, b)[sel]
            albedo[rows] = mat.albedo(uv[:, sel], footprint[sel])
            spec[rows], shin[rows] = mat.specular, mat.shininess
            if mat.emission is not None:
                emission[rows] = mat.emission
    return normals, albedo, spec, shin, emission


def _lighting(scene, hits: _Hits, normals, spec, shin, occluders, samples, shadows: bool, width: int):
    """(irradiance ``[M, 3]``, specular highlight ``[M, 3]``): hemisphere ambient plus each light sample,
    with shadow rays when ``shadows``."""
    prims, points, M = scene.primitives, hits.points, hits.pix.size
    sky_amb, ground_amb = (np.asarray(c, np.float32) for c in scene.ambient)
    up = (normals[1] * 0.5 + 0.5)[:, None]
    irradiance = sky_amb[None, :] * up + ground_amb[None, :] * (1 - up)  # [M, 3]
    highlight = np.zeros((M, 3), np.float32)
    tiles = _Tiles(points, hits.pix, width) if shadows and M else None
    glossy = np.flatnonzero(spec > 0)
    for pos, direction, color in samples:
        if direction is None:
            to_light = pos.astype(np.float32)[:, None] - points
            dist2 = _dot(to_light, to_light)
            l_dir = to_light / np.sqrt(dist2)
            power = 1.0 / np.maximum(dist2, np.float32(0.25))
        else:
            l_dir = np.broadcast_to(direction.astype(np.float32)[:, None], points.shape)
            power = np.ones(M, np.float32)
        ndl = _dot(normals, l_dir)
        lit = ndl > 0
        if tiles is not None:
            lit = shadow_visibility(prims, occluders, tiles, points, normals, hits.owner, lit, pos, direction)
        irradiance += (np.where(lit, ndl * power, np.float32(0)))[:, None] * color[None, :]
        g = glossy[lit[glossy]]
        if g.size:
            half = l_dir[:, g] + hits.view[:, g]
            ndh = np.clip(_dot(normals[:, g], half) / np.sqrt(_dot(half, half)), 0.0, 1.0)
            highlight[g] += (power[g] * spec[g] * ndh ** shin[g])[:, None] * color[None, :]
    return irradiance, highlight


def _render_band(scene, camera, dirs, row0, rects, occluders, samples, shadows):
    """Render the rows ``row0 .. row0 + h`` whose rays are ``dirs`` ``[3, h, W]``."""
    _, h, W = dirs.shape
    t_buf, id_buf = primary_visibility(scene.primitives, rects, camera.position, dirs, row0)
    hits = _hits(camera, dirs, t_buf, id_buf, len(scene.primitives))
    normals, albedo, spec, shin, emission = _surfaces(scene.primitives, camera, hits)
    irradiance, highlight = _lighting(scene, hits, normals, spec, shin, occluders, samples, shadows, W)
    shaded = albedo * irradiance + highlight + emission  # [M, 3]

    # ---- sky, fog, assembly
    radiance = np.empty((h * W, 3), np.float32)
    miss = id_buf.ravel() < 0
    if miss.any():
        dm = dirs.reshape(3, -1)[:, miss]
        dm = dm / np.sqrt(_dot(dm, dm))
        radiance[miss] = scene.sky(dm) if scene.sky is not None else 0.0
    if scene.fog is not None:
        fog_color, density = scene.fog
        transmittance = np.exp(-density * hits.t * hits.d_len)[:, None]
        shaded = shaded * transmittance + np.asarray(fog_color, np.float32)[None, :] * (1 - transmittance)
    radiance[hits.pix] = shaded
    normal_img = np.zeros((3, h * W), np.float32)
    normal_img[:, hits.pix] = normals
    return radiance.reshape(h, W, 3), t_buf, normal_img.reshape(3, h, W), id_buf


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-column dot product of ``[3, N]`` arrays."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def tonemap(radiance: np.ndarray, rng: np.random.Generator, exposure: float | None = None,
            noise: float = 1.5) -> np.ndarray:
    """Linear radiance ``[H, W, 3]`` -> sRGB-like uint8: auto exposure (90th percentile -> 0.8),
    soft shoulder, gamma 2.2 and Gaussian sensor noise of ``noise`` grey levels."""
    lum = radiance @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    if exposure is None:
        exposure = 0.8 / max(float(np.percentile(lum[::4, ::4], 90)), 1e-6)
    x = radiance * np.float32(exposure)
    x = np.where(x < 0.8, x, 0.8 + 0.2 * (1 - np.exp(-(x - 0.8) / 0.2)))  # highlights roll off to 1
    out = np.clip(x, 0.0, 1.0) ** np.float32(1 / 2.2) * 255.0
    if noise > 0:
        out = out + rng.normal(0.0, noise, size=out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
