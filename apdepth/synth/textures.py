"""Textures: procedural images (noise, wood, checker, brick, tiles, stripes, facades, roads, paintings),
three tileable greyscale photographs shipped in ``textures/`` (see its SOURCES.md), and mip-mapped sampling.

Every generator returns float32 ``[H, W, 3]`` in [0, 1] (linear reflectance) and takes a
``numpy.random.Generator``; the repeating ones tile seamlessly.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

TEXTURE_DIR = Path(__file__).parent / "textures"
PHOTO_TEXTURES = ("brick", "grass", "gravel")  # tileable, greyscale, CC0 (textures/SOURCES.md)
PAINTINGS = ("landscape", "abstract", "portrait")  # procedural framed pictures (:func:`picture`)
WRAP_MODES = ("repeat", "mirror", "clamp")


class Texture:
    """A mip-mapped RGB texture. ``wrap``: repeat (tiling), mirror (for non-tiling photos) or clamp."""

    def __init__(self, image: np.ndarray, wrap: str = "repeat"):
        if wrap not in WRAP_MODES:
            raise ValueError(f"wrap must be one of {WRAP_MODES}, got {wrap!r}")
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"texture images must be [H, W] or [H, W, 3], got {image.shape}")
        self.wrap = wrap
        levels = [image]
        while min(levels[-1].shape[:2]) >= 2:
            a = levels[-1]
            h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
            levels.append(a[:h:2, :w:2] * 0.25 + a[1:h:2, :w:2] * 0.25 + a[:h:2, 1:w:2] * 0.25 + a[1:h:2, 1:w:2] * 0.25)
        self.heights = np.array([lv.shape[0] for lv in levels])
        self.widths = np.array([lv.shape[1] for lv in levels])
        self.offsets = np.concatenate([[0], np.cumsum(self.heights * self.widths)[:-1]])
        self.flat = np.concatenate([lv.reshape(-1, 3) for lv in levels])  # [sum of texels, 3]
        self.height, self.width = image.shape[:2]

    def sample(self, u: np.ndarray, v: np.ndarray, footprint: np.ndarray | float = 1.0) -> np.ndarray:
        """Nearest-texel lookup at level-0 texel coordinates ``u`` (right), ``v`` (up), each ``[N]``.

        ``footprint``: texels covered by one pixel, picks the mip level. Returns ``[N, 3]``.
        """
        n_levels = len(self.heights)
        with np.errstate(divide="ignore"):
            lv = np.clip(np.floor(np.log2(np.maximum(footprint, 1.0))), 0, n_levels - 1).astype(np.int64)
        lv = np.broadcast_to(lv, np.shape(u))
        scale = np.ldexp(1.0, -lv)
        w, h = self.widths[lv], self.heights[lv]
        x = np.floor(u * scale).astype(np.int64)
        y = np.floor(v * scale).astype(np.int64)
        x, y = self._wrap(x, w), self._wrap(y, h)
        return self.flat[self.offsets[lv] + (h - 1 - y) * w + x]  # v up: row 0 is the top of the image

    def _wrap(self, x, n):
        if self.wrap == "repeat":
            return np.mod(x, n)
        if self.wrap == "mirror":
            m = np.mod(x, 2 * n)
            return np.where(m < n, m, 2 * n - 1 - m)
        return np.clip(x, 0, n - 1)


# ---------------------------------------------------------------------------- noise


def value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Tileable value noise ``[size, size]`` in [0, 1]: a random ``cells x cells`` lattice, smoothstep-interpolated."""
    lattice = rng.random((cells, cells), dtype=np.float32)
    pos = (np.arange(size, dtype=np.float32) + 0.5) * cells / size
    i0 = np.floor(pos).astype(np.int64)
    f = pos - i0
    f = f * f * (3 - 2 * f)
    i0 %= cells
    i1 = (i0 + 1) % cells
    rows0, rows1 = lattice[i0], lattice[i1]  # [size, cells]
    col = (rows0 * (1 - f[:, None]) + rows1 * f[:, None])  # interpolated along y
    return col[:, i0] * (1 - f[None, :]) + col[:, i1] * f[None, :]


def fbm(rng: np.random.Generator, size: int, base_cells: int = 4, octaves: int = 5, gain: float = 0.5) -> np.ndarray:
    """Fractal sum of value noise octaves, ``[size, size]`` normalised to [0, 1]; tileable."""
    out = np.zeros((size, size), dtype=np.float32)
    amp, total = 1.0, 0.0
    for k in range(octaves):
        cells = base_cells * 2**k
        if cells > size:
            break
        out += amp * value_noise(rng, size, cells)
        total += amp
        amp *= gain
    out /= total
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def _colorize(gray: np.ndarray, c0, c1) -> np.ndarray:
    c0, c1 = np.asarray(c0, np.float32), np.asarray(c1, np.float32)
    return c0 + gray[..., None] * (c1 - c0)


def random_color(rng: np.random.Generator, sat: tuple[float, float] = (0.1, 0.6),
                 val: tuple[float, float] = (0.3, 0.9), hue: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """A random colour from HSV ranges, float32 ``[3]`` in [0, 1]."""
    h, s, v = rng.uniform(*hue) % 1.0, rng.uniform(*sat), rng.uniform(*val)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float32)


# ---------------------------------------------------------------------------- procedural generators


def noise_texture(rng, size=256, c0=None, c1=None, cells=None, contrast=None) -> np.ndarray:
    """Mottled surface (plaster, concrete, carpet, foliage): two colours blended by fBm noise."""
    base = random_color(rng) if c0 is None else np.asarray(c0, np.float32)
    if c1 is None:
        c1 = np.clip(base * rng.uniform(0.6, 1.4), 0, 1)
    cells = int(rng.choice([2, 4, 8, 16])) if cells is None else cells
    contrast = rng.uniform(0.2, 1.0) if contrast is None else contrast
    g = 0.5 + (fbm(rng, size, cells) - 0.5) * contrast
    return _colorize(g, base, c1)


def wood_texture(rng, size=256, plank_width_px=None) -> np.ndarray:
    """Planks of wood: ring pattern distorted by noise, per-plank tone, dark seams. Tiles along both axes."""
    light = random_color(rng, sat=(0.3, 0.6), val=(0.45, 0.85), hue=(0.05, 0.11))
    dark = light * rng.uniform(0.45, 0.75)
    n_planks = int(rng.integers(2, 6)) if plank_width_px is None else max(1, size // plank_width_px)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    warp = fbm(rng, size, 4, 4) - 0.5
    plank = np.minimum((y * n_planks).astype(np.int64), n_planks - 1)
    offsets = rng.random(n_planks).astype(np.float32)
    tones = rng.uniform(0.8, 1.15, n_planks).astype(np.float32)
    rings = 0.5 + 0.5 * np.sin(2 * np.pi * (rng.integers(6, 20) * (y * n_planks % 1.0 + 0.3 * warp)
                                             + offsets[plank] * 7 + 2 * x))
    grain = fbm(rng, size, 16, 3)
    g = np.clip(0.6 * rings**3 + 0.4 * grain, 0, 1)
    img = _colorize(g, dark, light) * tones[plank][..., None]
    seam = (y * n_planks % 1.0) < 0.025
    img[seam] *= 0.45
    return np.clip(img, 0, 1)


def checker_texture(rng, size=256, n=None) -> np.ndarray:
    n = int(rng.choice([2, 4, 8])) if n is None else n
    c0 = random_color(rng, val=(0.6, 0.95), sat=(0.0, 0.3))
    c1 = random_color(rng, val=(0.05, 0.5))
    y, x = np.mgrid[0:size, 0:size] * n // size
    return np.where(((x + y) % 2 == 0)[..., None], c0, c1).astype(np.float32) * (
        0.9 + 0.1 * fbm(rng, size, 8, 3)[..., None])


def brick_texture(rng, size=256, rows=None, cols=None) -> np.ndarray:
    """Running-bond bricks with mortar, per-brick colour and noise."""
    rows = int(rng.integers(4, 9)) if rows is None else rows
    cols = max(1, rows // 2) if cols is None else cols
    brick = random_color(rng, sat=(0.35, 0.7), val=(0.3, 0.7), hue=(0.0, 0.08))
    mortar = random_color(rng, sat=(0.0, 0.1), val=(0.55, 0.85))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    row = np.floor(y * rows)
    xs = x * cols + 0.5 * (row % 2)
    col = np.floor(xs)
    fy, fx = y * rows - row, xs - col
    mortar_mask = (fy < 0.08) | (fx < 0.04)
    ids = (row * 1000 + col % cols).astype(np.int64)
    tone = rng.uniform(0.7, 1.2, rows * 1000 + cols)[ids].astype(np.float32)
    img = brick * tone[..., None] * (0.8 + 0.2 * fbm(rng, size, 16, 3)[..., None])
    img[mortar_mask] = mortar * (0.85 + 0.15 * rng.random((int(mortar_mask.sum()), 1), dtype=np.float32))
    return np.clip(img, 0, 1)


def tiles_texture(rng, size=256, n=None) -> np.ndarray:
    """Square tiles with grout lines and slight per-tile variation."""
    n = int(rng.choice([2, 4, 8])) if n is None else n
    base = random_color(rng, sat=(0.0, 0.5), val=(0.4, 0.95))
    grout = random_color(rng, sat=(0.0, 0.1), val=(0.2, 0.7))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) * n / size
    ty, tx = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    tone = rng.uniform(0.85, 1.1, (n, n)).astype(np.float32)[ty % n, tx % n]
    img = base * tone[..., None] * (0.9 + 0.1 * fbm(rng, size, 8, 3)[..., None])
    g = 0.04
    img[((y - ty) < g) | ((x - tx) < g)] = grout
    return np.clip(img, 0, 1)


def stripes_texture(rng, size=256, n=None) -> np.ndarray:
    """Wallpaper stripes (vertical in texture space) of two or three colours."""
    n = int(rng.choice([2, 4, 8, 16])) if n is None else n
    colors = [random_color(rng, val=(0.4, 0.95)) for _ in range(int(rng.integers(2, 4)))]
    x = np.arange(size) * n * len(colors) // size
    row = np.stack([colors[i % len(colors)] for i in x])  # [size, 3]
    return np.broadcast_to(row[None], (size, size, 3)) * (0.92 + 0.08 * fbm(rng, size, 8, 3)[..., None])


def facade_texture(rng, size=256, floors=4, bays=4) -> np.ndarray:
    """One repeat of a building facade: ``floors x bays`` windows (dark glass, frames) on a wall colour."""
    wall = random_color(rng, sat=(0.0, 0.4), val=(0.35, 0.9))
    glass = random_color(rng, sat=(0.1, 0.4), val=(0.05, 0.25), hue=(0.5, 0.7))
    frame = random_color(rng, sat=(0.0, 0.2), val=(0.1, 0.9))
    img = np.broadcast_to(wall, (size, size, 3)) * (0.85 + 0.15 * fbm(rng, size, 8, 4)[..., None])
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    fy, fx = (y * floors / size) % 1.0, (x * bays / size) % 1.0
    wy0, wy1 = rng.uniform(0.15, 0.3), rng.uniform(0.7, 0.85)
    wx0 = rng.uniform(0.15, 0.3)
    win = (fy > wy0) & (fy < wy1) & (fx > wx0) & (fx < 1 - wx0)
    inner = (fy > wy0 + 0.04) & (fy < wy1 - 0.04) & (fx > wx0 + 0.04) & (fx < 1 - wx0 - 0.04)
    img = img.copy()
    img[win] = frame
    sky_reflection = 1.0 + 0.8 * (1 - fy)[..., None]  # brighter at the window tops
    img = np.where(inner[..., None], glass * sky_reflection * (0.8 + 0.4 * rng.random()), img)
    return np.clip(img, 0, 1).astype(np.float32)


def road_texture(rng, width_m: float, lanes: int, margin_m: float = 0.3, period_m: float = 12.0,
                 px_per_m: int = 32) -> np.ndarray:
    """Asphalt for a road ``width_m`` wide: ``lanes`` driving lanes between solid lines ``margin_m`` from each
    edge (parking strips when wide), dashed lines between the lanes.

    Columns run across the road (left to right), rows along it; one texture is ``period_m`` long.
    """
    w, h = int(round(width_m * px_per_m)), int(round(period_m * px_per_m))
    tone = rng.uniform(0.12, 0.3)
    noise = fbm(rng, 256, 16, 4)
    asphalt = tone * (0.8 + 0.4 * noise[np.arange(h)[:, None] % 256, np.arange(w)[None, :] % 256])
    img = np.repeat(asphalt[..., None], 3, axis=-1).astype(np.float32)
    paint = np.array([0.85, 0.85, 0.8], np.float32) * rng.uniform(0.7, 1.0)
    line_px = max(2, int(0.15 * px_per_m))
    lane_px = (width_m - 2 * margin_m) * px_per_m / lanes
    x_first = int(margin_m * px_per_m)
    for x_edge in (x_first - line_px // 2, w - x_first - line_px // 2):
        img[:, max(0, x_edge):x_edge + line_px] = paint
    dash = int(rng.uniform(0.25, 0.5) * h)
    for k in range(1, lanes):
        x0 = int(x_first + k * lane_px) - line_px // 2
        img[:dash, x0:x0 + line_px] = paint
    return img


# ---------------------------------------------------------------------------- photographs


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """A photograph shipped in ``textures/``, float32 ``[H, W]`` (greyscale) or ``[H, W, 3]`` in [0, 1], linearised."""
    matches = sorted(TEXTURE_DIR.glob(f"{name}.*"))
    if not matches:
        raise ValueError(f"No texture photo {name!r} in {TEXTURE_DIR}; available: {PHOTO_TEXTURES}")
    with Image.open(matches[0]) as img:
        arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    arr = arr**2.2  # sRGB-ish -> linear reflectance
    arr.setflags(write=False)
    return arr


def photo_texture(rng, name: str | None = None) -> tuple[np.ndarray, str]:
    """A repeating photo texture, tinted by a random colour and normalised to mean 0.5. Returns (image, name)."""
    name = str(rng.choice(PHOTO_TEXTURES)) if name is None else name
    gray = load_photo(name)
    gray = gray / max(float(gray.mean()), 1e-3) * 0.5
    tint = random_color(rng, sat=(0.0, 0.5), val=(0.6, 1.0))
    return np.clip(gray[..., None] * tint * 1.6, 0, 1).astype(np.float32), name


def picture(rng, name: str | None = None) -> tuple[np.ndarray, str]:
    """A framed picture for a wall, float32 ``[H, W, 3]``, painted procedurally (no photographs: the
    pictures must not leak real images into training). Returns (image, kind among :data:`PAINTINGS`)."""
    name = str(rng.choice(PAINTINGS)) if name is None else name
    if name not in PAINTINGS:
        raise ValueError(f"Unknown painting kind {name!r}; choose among {PAINTINGS}")
    h, w = (96, 128) if rng.random() < 0.6 else (128, 96)
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]  # 0 top, 1 bottom
    noise = fbm(rng, 128, 4, 5)[:h, :w, None]
    if name == "landscape":  # sky over hills over a field
        horizon = rng.uniform(0.35, 0.65)
        sky = _colorize(y[..., 0] / horizon, random_color(rng, hue=(0.55, 0.65)), random_color(rng, val=(0.7, 1.0)))
        hills = horizon + 0.12 * np.sin(np.linspace(0, rng.uniform(3, 9), w) + rng.uniform(0, 6))[None, :, None]
        land = _colorize(noise[..., 0], random_color(rng, hue=(0.1, 0.4)), random_color(rng, hue=(0.1, 0.4)))
        img = np.where(y < hills, sky, land)
    elif name == "portrait":  # a figure: an oval head and shoulders on a plain ground
        img = _colorize(noise[..., 0] * 0.3, random_color(rng, val=(0.1, 0.6)), random_color(rng, val=(0.1, 0.6)))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        head = ((xx - w / 2) / (0.18 * w)) ** 2 + ((yy - 0.38 * h) / (0.16 * h)) ** 2 < 1
        body = (((xx - w / 2) / (0.38 * w)) ** 2 + ((yy - 1.05 * h) / (0.4 * h)) ** 2) < 1
        img[head] = random_color(rng, sat=(0.2, 0.5), val=(0.4, 0.9), hue=(0.02, 0.1))
        img[body] = random_color(rng)
    else:  # abstract: blocks of colour
        img = np.empty((h, w, 3), np.float32)
        img[:] = random_color(rng)
        for _ in range(int(rng.integers(3, 9))):
            r0, c0 = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
            img[r0:r0 + int(rng.integers(8, h // 2)), c0:c0 + int(rng.integers(8, w // 2))] = random_color(rng, sat=(0.3, 1))
    return np.clip(img * (0.85 + 0.3 * noise), 0, 1).astype(np.float32), name


def texture_aspect(image: np.ndarray) -> float:
    """Width / height."""
    return image.shape[1] / image.shape[0]
