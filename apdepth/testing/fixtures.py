"""Tiny synthetic data sets in each set's exact on-disk format, for tests and smoke runs (no download).

:func:`write_fixture` writes a folder laid out as the released archive plus a split list;
:func:`make_tar` packs the folder as the Marigold archives are packed (members named ``./<path>``).
The returned :class:`Fixture` keeps the metric depth that was written, so tests can check decoding.
The bytes come from the library's writers (:mod:`apdepth.synth.encode`).
"""

from __future__ import annotations

import contextlib
import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..synth.encode import TarWriter, jpg_bytes, npy_bytes, png_bytes


@dataclass
class Fixture:
    name: str
    root: Path  # the extracted folder
    split: Path  # the split list
    depth: dict[str, np.ndarray] = field(default_factory=dict)  # rgb path -> metric depth written [H, W]
    lines: list[str] = field(default_factory=list)


def _rgb(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([np.sin(5 * xx + c) * np.cos(3 * yy - c) for c in range(3)], axis=-1)
    noisy = base * 0.4 + 0.5 + rng.normal(0, 0.03, base.shape)
    return np.clip(noisy * 255, 0, 255).astype(np.uint8)


def _depth(height: int, width: int, near: float, far: float, rng: np.random.Generator) -> np.ndarray:
    """A slanted plane with a nearer box in front of it (one occluding edge), metres."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = near + (far - near) * (0.3 + 0.5 * xx / width + 0.2 * yy / height)
    depth[height // 4 : height // 2, width // 4 : width // 2] *= 0.5
    return (depth * rng.uniform(0.9, 1.0)).astype(np.float32)


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _uint16(depth: np.ndarray, units_per_metre: float) -> np.ndarray:
    """Metres -> the set's uint16 units, rounded in float32 (the fixtures' values; the synthetic data
    sets' :func:`apdepth.synth.encode.metres_to_uint16` rounds in float64 and marks invalid pixels)."""
    return np.clip(np.round(depth * units_per_metre), 0, 65535).astype(np.uint16)


def write_fixture(name: str, folder: str | os.PathLike, num_samples: int = 2, seed: int = 0,
                  size: tuple[int, int] | None = None) -> Fixture:
    """Write ``num_samples`` samples of data set ``name`` under ``folder`` and a split list beside it.

    ``size`` (H, W) overrides the frame size where the format allows it (NYU must stay at least
    471x601 for its Eigen crop, KITTI/VKITTI at least 352x1216 for the benchmark crop).
    The depth stored in :attr:`Fixture.depth` is the decoded value (after unit quantisation).
    """
    rng = np.random.default_rng(seed)
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    fx = Fixture(name=name, root=root, split=root.parent / f"{root.name}_{name}_split.txt")
    writer = _WRITERS.get(name)
    if writer is None:
        raise ValueError(f"No fixture writer for {name!r}; choose among {', '.join(_WRITERS)}")
    for i in range(num_samples):
        writer(fx, i, rng, size)
    fx.split.write_text("".join(line + "\n" for line in fx.lines))
    return fx


def _nyu(fx: Fixture, i: int, rng, size) -> None:
    h, w = size or (480, 640)
    rgb, stem = f"test/scene_{i:02d}/rgb_{i:04d}.png", f"test/scene_{i:02d}"
    depth = _depth(h, w, 1.0, 8.0, rng)
    depth[:6, :] = 0.0  # no measurement
    depth[-3:, -40:] = 12.0  # beyond 10 m
    raw = _uint16(depth, 1000)
    _save(fx.root / rgb, png_bytes(_rgb(h, w, rng)))
    _save(fx.root / f"{stem}/depth_{i:04d}.png", png_bytes(raw))
    _save(fx.root / f"{stem}/filled_{i:04d}.png", png_bytes(np.maximum(raw, 1000).astype(np.uint16)))
    fx.depth[rgb] = raw.astype(np.float32) / 1000
    fx.lines.append(f"{rgb} {stem}/depth_{i:04d}.png {stem}/filled_{i:04d}.png")


def _kitti(fx: Fixture, i: int, rng, size) -> None:
    h, w = size or (375, 1242)
    drive = "2011_09_26_drive_0002_sync"
    rgb = f"2011_09_26/{drive}/image_02/data/{i:010d}.png"
    gt = f"{drive}/proj_depth/groundtruth/image_02/{i:010d}.png"
    depth = _depth(h, w, 4.0, 60.0, rng)
    depth[rng.random((h, w)) > 0.3] = 0.0  # sparse LiDAR
    depth[-10:, :20] = 90.0  # beyond 80 m
    raw = _uint16(depth, 256)
    _save(fx.root / rgb, png_bytes(_rgb(h, w, rng)))
    _save(fx.root / gt, png_bytes(raw))
    fx.depth[rgb] = raw.astype(np.float32) / 256
    fx.lines.append(f"{rgb} {gt} 721.5377")
    if i == 0:  # a frame without ground truth, as in the Eigen list
        none_rgb = f"2011_09_26/{drive}/image_02/data/{9999:010d}.png"
        _save(fx.root / none_rgb, png_bytes(_rgb(h, w, rng)))
        fx.lines.append(f"{none_rgb} None 721.5377")


def _eth3d(fx: Fixture, i: int, rng, size) -> None:
    h, w = size or (40, 60)
    scene = ["office", "terrace"][i % 2]
    rgb = f"rgb/{scene}/images/dslr_images/DSC_{i:04d}.JPG"
    gt = f"depth/{scene}_dslr_depth/{scene}/ground_truth_depth/dslr_images/DSC_{i:04d}.JPG"
    depth = _depth(h, w, 2.0, 30.0, rng)
    depth[: h // 5, :] = np.inf  # no laser return
    _save(fx.root / rgb, jpg_bytes(_rgb(h, w, rng)))
    _save(fx.root / gt, depth.astype("<f4").tobytes())
    fx.depth[rgb] = depth
    fx.lines.append(f"{rgb} {gt}")


def _scannet(fx: Fixture, i: int, rng, size) -> None:
    h, w = size or (48, 64)
    rgb, gt = f"scene0{i:03d}_00/color/{i:06d}.jpg", f"scene0{i:03d}_00/depth/{i:06d}.png"
    depth = _depth(h, w, 0.8, 6.0, rng)
    depth[:, :3] = 0.0
    raw = _uint16(depth, 1000)
    _save(fx.root / rgb, jpg_bytes(_rgb(h, w, rng)))
    _save(fx.root / gt, png_bytes(raw))
    fx.depth[rgb] = raw.astype(np.float32) / 1000
    fx.lines.append(f"{rgb} {gt}")


def _diode(fx: Fixture, i: int, rng, size) -> None:
    h, w = size or (48, 64)
    place = ["indoors", "outdoor"][i % 2]
    stem = f"{place}/scene_{i:05d}/scan_{i:05d}/{i:05d}_{i:05d}_{place}_000_000"
    # gentle slopes (0.01 and 0.005 m/px: Sobel 0.12 <= 0.3) with one occluding box (Sobel >> 0.3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = (3.0 if place == "indoors" else 20.0) + 0.01 * xx + 0.005 * yy
    depth[h // 4 : h // 2, w // 4 : w // 2] *= 0.5
    mask = np.ones((h, w), dtype=np.float32)
    mask[-4:, :] = 0.0
    depth[-4:, :] = 0.0
    _save(fx.root / f"{stem}.png", png_bytes(_rgb(h, w, rng)))
    _save(fx.root / f"{stem}_depth.npy", npy_bytes(depth[..., None]))  # [H, W, 1] as released
    _save(fx.root / f"{stem}_depth_mask.npy", npy_bytes(mask))
    fx.depth[f"{stem}.png"] = depth
    fx.lines.append(f"{stem}.png {stem}_depth.npy {stem}_depth_mask.npy")


def _hypersim(fx: Fixture, i: int, rng, size) -> None:
    h, w = size or (48, 64)
    scene = f"ai_001_{i + 1:03d}"
    rgb, gt = f"{scene}/rgb_cam_00_fr{i:04d}.png", f"{scene}/depth_plane_cam_00_fr{i:04d}.png"
    depth = _depth(h, w, 1.0, 20.0, rng)
    depth[0, :] = 0.0
    raw = _uint16(depth, 1000)
    _save(fx.root / rgb, png_bytes(_rgb(h, w, rng)))
    _save(fx.root / gt, png_bytes(raw))
    fx.depth[rgb] = raw.astype(np.float32) / 1000
    fx.lines.append(f"{rgb} {gt}")


def _vkitti(fx: Fixture, i: int, rng, size) -> None:
    h, w = size or (375, 1242)
    variant = ["clone", "fog"][i % 2]
    rgb = f"rgb/Scene01/{variant}/frames/rgb/Camera_0/rgb_{i:05d}.jpg"
    gt = f"depth/Scene01/{variant}/frames/depth/Camera_0/depth_{i:05d}.png"
    depth = _depth(h, w, 3.0, 70.0, rng)
    depth[: h // 3, :] = 655.35  # sky
    raw = _uint16(depth, 100)
    _save(fx.root / rgb, jpg_bytes(_rgb(h, w, rng)))
    _save(fx.root / gt, png_bytes(raw))
    fx.depth[rgb] = raw.astype(np.float32) / 100
    fx.lines.append(f"{rgb} {gt}")


_WRITERS = {"nyu": _nyu, "kitti": _kitti, "eth3d": _eth3d, "scannet": _scannet, "diode": _diode,
            "hypersim": _hypersim, "vkitti": _vkitti}


def make_tar(folder: str | os.PathLike, tar_path: str | os.PathLike, prefix: str = "./") -> Path:
    """Pack ``folder`` into ``tar_path`` (``.tar`` or ``.tar.gz``) with members named ``prefix + path``
    (:class:`apdepth.synth.encode.TarWriter`: deterministic, folders before their files)."""
    folder, tar_path = Path(folder), Path(tar_path)
    with open(tar_path, "wb") as raw:
        gz = str(tar_path).endswith((".gz", ".tgz"))
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if gz else contextlib.nullcontext(raw) as f:
            tar = TarWriter(f, prefix=prefix)
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    tar.add(path.relative_to(folder).as_posix(), path.read_bytes())
            tar.close()
    return tar_path
