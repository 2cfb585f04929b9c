"""Materials: a textured diffuse colour, a Blinn-Phong highlight and optional emission, plus random
material families for rooms, furniture and streets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import textures as tx


@dataclass(eq=False)
class Material:
    """Surface appearance.

    Attributes:
        color: float ``[3]`` diffuse reflectance in [0, 1] (multiplies the texture).
        texture: optional :class:`~apdepth.synth.textures.Texture`.
        texels_per_metre: texture scale along u and v.
        specular: Blinn-Phong highlight strength (0 = matte); ``shininess`` its exponent.
        emission: optional float ``[3]`` radiance added regardless of lighting (lamps, light panels).
        name: for logs and scene descriptions.
    """

    color: np.ndarray
    texture: tx.Texture | None = None
    texels_per_metre: tuple[float, float] = (256.0, 256.0)
    specular: float = 0.0
    shininess: float = 32.0
    emission: np.ndarray | None = None
    name: str = "material"

    def __post_init__(self):
        self.color = np.asarray(self.color, dtype=np.float32).reshape(3)

    def albedo(self, uv: np.ndarray, footprint_m: np.ndarray) -> np.ndarray:
        """Diffuse reflectance at surface coordinates ``uv`` ``[2, N]`` (metres) for pixels covering
        ``footprint_m`` ``[N]`` metres of surface each. Returns ``[N, 3]``."""
        if self.texture is None:
            return np.broadcast_to(self.color, (uv.shape[1], 3))
        su, sv = self.texels_per_metre
        texels = self.texture.sample(uv[0] * su, uv[1] * sv, footprint_m * np.sqrt(su * sv))
        return texels * self.color


def plain(color, specular: float = 0.0, shininess: float = 32.0, name: str = "plain") -> Material:
    return Material(np.asarray(color, np.float32), specular=specular, shininess=shininess, name=name)


def textured(image: np.ndarray, size_m, color=(1.0, 1.0, 1.0), wrap: str = "repeat",
             specular: float = 0.0, shininess: float = 32.0, name: str = "textured") -> Material:
    """A material whose texture ``image`` ``[H, W, 3]`` covers ``size_m`` = (width, height) metres once;
    a single number is the width, the height then follows the image's aspect ratio."""
    h, w = image.shape[:2]
    if np.isscalar(size_m):
        size_m = (float(size_m), float(size_m) * h / w)
    return Material(np.asarray(color, np.float32), tx.Texture(image, wrap), (w / size_m[0], h / size_m[1]),
                    specular, shininess, name=name)


def emissive(color, strength: float = 4.0, name: str = "light") -> Material:
    c = np.asarray(color, np.float32)
    return Material(c, emission=c * strength, name=name)


# ---------------------------------------------------------------------------- random families

TEXTURE_SIZE = 128


def wall_material(rng: np.random.Generator) -> Material:
    kind = rng.choice(["paint", "paint", "stripes", "brick", "brick_photo", "tiles", "plaster"])
    s = TEXTURE_SIZE
    if kind == "paint":
        c = tx.random_color(rng, sat=(0.0, 0.35), val=(0.55, 0.95))
        return textured(tx.noise_texture(rng, s, c, c * 0.92, contrast=0.3), (2.0, 2.0), name="paint")
    if kind == "stripes":
        return textured(tx.stripes_texture(rng, s), (rng.uniform(0.5, 2.0),) * 2, name="wallpaper")
    if kind == "brick":
        return textured(tx.brick_texture(rng, s), (rng.uniform(0.8, 1.6),) * 2, name="brick")
    if kind == "brick_photo":
        img, _ = tx.photo_texture(rng, "brick")
        return textured(img, rng.uniform(1.2, 2.2), name="brick_photo")
    if kind == "tiles":
        return textured(tx.tiles_texture(rng, s), (rng.uniform(0.4, 1.2),) * 2, specular=0.3, name="tiles")
    return textured(tx.noise_texture(rng, s), (rng.uniform(0.5, 3.0),) * 2, name="plaster")


def floor_material(rng: np.random.Generator) -> Material:
    kind = rng.choice(["wood", "wood", "tiles", "checker", "carpet", "stone"])
    s = TEXTURE_SIZE
    if kind == "wood":
        return textured(tx.wood_texture(rng, s), (rng.uniform(0.6, 1.5),) * 2, specular=0.2, name="wood_floor")
    if kind == "tiles":
        return textured(tx.tiles_texture(rng, s), (rng.uniform(0.6, 2.0),) * 2, specular=0.4, name="floor_tiles")
    if kind == "checker":
        return textured(tx.checker_texture(rng, s), (rng.uniform(0.6, 2.0),) * 2, specular=0.3, name="checker")
    if kind == "carpet":
        return textured(tx.noise_texture(rng, s, cells=16, contrast=0.6), (rng.uniform(0.3, 1.0),) * 2,
                        name="carpet")
    img, _ = tx.photo_texture(rng, "gravel")
    return textured(img, rng.uniform(0.8, 2.0), name="stone")


def ceiling_material(rng: np.random.Generator) -> Material:
    c = tx.random_color(rng, sat=(0.0, 0.1), val=(0.75, 0.95))
    return textured(tx.noise_texture(rng, TEXTURE_SIZE, c, c * 0.95, contrast=0.2), (2.0, 2.0), name="ceiling")


def furniture_material(rng: np.random.Generator) -> Material:
    kind = rng.choice(["wood", "wood", "painted", "fabric", "metal", "plastic"])
    s = TEXTURE_SIZE
    if kind == "wood":
        return textured(tx.wood_texture(rng, s), (rng.uniform(0.4, 1.2),) * 2, specular=0.25, name="wood")
    if kind == "painted":
        return plain(tx.random_color(rng, val=(0.3, 0.95)), specular=0.3, name="painted")
    if kind == "fabric":
        return textured(tx.noise_texture(rng, s, cells=16, contrast=0.5), (rng.uniform(0.2, 0.6),) * 2,
                        name="fabric")
    if kind == "metal":
        return plain(tx.random_color(rng, sat=(0.0, 0.2), val=(0.4, 0.8)), specular=0.9, shininess=64,
                     name="metal")
    return plain(tx.random_color(rng, sat=(0.4, 0.9), val=(0.3, 0.9)), specular=0.5, shininess=48, name="plastic")


def object_material(rng: np.random.Generator) -> Material:
    """Small objects: plain, glossy, checker or stripes."""
    kind = rng.choice(["plain", "glossy", "checker", "stripes", "noise"])
    if kind == "plain":
        return plain(tx.random_color(rng), name="object")
    if kind == "glossy":
        return plain(tx.random_color(rng), specular=0.7, shininess=64, name="glossy")
    if kind == "checker":
        return textured(tx.checker_texture(rng, 64), (rng.uniform(0.1, 0.4),) * 2, name="checker_obj")
    if kind == "stripes":
        return textured(tx.stripes_texture(rng, 64), (rng.uniform(0.1, 0.4),) * 2, name="stripes_obj")
    return textured(tx.noise_texture(rng, 64), (rng.uniform(0.1, 0.5),) * 2, name="noise_obj")


def foliage_material(rng: np.random.Generator) -> Material:
    if rng.random() < 0.5:
        img, _ = tx.photo_texture(rng, "grass")
        img = img * np.array([0.5, 1.0, 0.4], np.float32)
        return textured(np.clip(img, 0, 1), rng.uniform(0.5, 1.5), name="foliage_photo")
    green = tx.random_color(rng, sat=(0.4, 0.8), val=(0.2, 0.5), hue=(0.2, 0.38))
    return textured(tx.noise_texture(rng, 64, green, green * 0.5, cells=16, contrast=1.0), (0.5, 0.5),
                    name="foliage")
