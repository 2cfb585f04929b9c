"""Your own RGB-D data in a plain folder (or ``.tar``): phone LiDAR, a robot, a game engine.

Layout (discovered when no split list is given)::

    root/
      rgb/<any/sub/path>/<name>.{jpg,jpeg,png,bmp,tif,tiff,webp}
      depth/<same/sub/path>/<name>.{png,npy,exr,tif,tiff}    same relative name as the RGB image
      mask/<same/sub/path>/<name>.png                        optional: non-zero = valid
      apdepth_dataset.json                                   optional settings (below)

or a split list, one sample a line: ``rgb_path depth_path [mask_path]`` relative to ``root``.

Depth files: float32 ``.npy``, EXR (channel ``Y``, ``Z``, ``R`` or ``depth``), float32 TIFF, or 16-bit PNG
times ``depth_scale`` (metres per unit, e.g. 0.001 for millimetres; a PNG written by ``apdepth predict
--formats png16mm`` carries its scale and needs none). 0, negative and non-finite values are invalid.

Settings (constructor arguments, else ``apdepth_dataset.json`` in ``root``, else the default):

- ``depth_scale``: multiplies the stored values (default 1; required for PNGs without a scale chunk)
- ``depth_kind``: ``depth`` (default) or ``disparity``: stored values are inverse depth up to a scale
  (stereo disparity, not affine-invariant disparity), turned into depth as ``1 / value``
- ``min_depth`` / ``max_depth``: valid range after conversion (default: ``0 < depth < inf``)

Training normalises every depth map by its own quantiles (affine-invariant), so the unit of the depth
does not matter for training; ``depth_scale`` matters only for mixed or metric uses.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import PurePosixPath

import numpy as np

from .base import DepthDataset

RGB_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEPTH_EXTENSIONS = (".png", ".npy", ".exr", ".tif", ".tiff")
DEPTH_KINDS = ("depth", "disparity")
SETTINGS_FILE = "apdepth_dataset.json"
SETTINGS = ("depth_scale", "depth_kind", "min_depth", "max_depth")


class FolderDataset(DepthDataset):
    """RGB-D samples from a folder (see the module docstring for the layout and settings).

    Args:
        root: folder or ``.tar``.
        split: a split list; ``None`` or ``""`` discovers the samples from the ``rgb/`` / ``depth/`` layout.
        missing: ``"error"`` or ``"skip"`` for listed (or discovered RGB) samples whose depth is missing.
        transform: optional callable on each sample dict.
        depth_scale, depth_kind, min_depth, max_depth: override ``apdepth_dataset.json``.
    """

    name = "folder"
    num_paths = 2

    def __init__(self, root, split=None, missing: str = "error", transform=None, *, depth_scale: float | None = None,
                 depth_kind: str | None = None, min_depth: float | None = None, max_depth: float | None = None):
        from .archive import Archive

        archive = Archive(root)
        given = {"depth_scale": depth_scale, "depth_kind": depth_kind, "min_depth": min_depth, "max_depth": max_depth}
        settings = {"depth_scale": None, "depth_kind": "depth", "min_depth": 0.0, "max_depth": float("inf")}
        if archive.exists(SETTINGS_FILE):
            stored = json.loads(archive.read_bytes(SETTINGS_FILE).decode("utf-8"))
            unknown = set(stored) - set(SETTINGS)
            if unknown:
                raise ValueError(f"{root}/{SETTINGS_FILE}: unknown keys {sorted(unknown)}; allowed: {SETTINGS}")
            settings.update({k: v for k, v in stored.items() if v is not None})
        settings.update({k: v for k, v in given.items() if v is not None})
        if settings["depth_kind"] not in DEPTH_KINDS:
            raise ValueError(f"depth_kind must be one of {DEPTH_KINDS}, got {settings['depth_kind']!r}")
        if settings["depth_scale"] is not None and not settings["depth_scale"] > 0:
            raise ValueError(f"depth_scale must be > 0, got {settings['depth_scale']!r}")
        self.depth_scale = None if settings["depth_scale"] is None else float(settings["depth_scale"])
        self.depth_kind = settings["depth_kind"]
        self.min_depth, self.max_depth = float(settings["min_depth"]), float(settings["max_depth"])
        self._discover = not split
        super().__init__(root, split if split else root, missing=missing, transform=transform)

    # ------------------------------------------------------------------ samples

    def _read_split(self) -> list[tuple[str, ...]]:
        if not self._discover:
            return super()._read_split()
        names = self.archive.names()
        by_stem: dict[str, dict[str, str]] = {"depth": {}, "mask": {}}
        for name in names:
            path = PurePosixPath(name)
            top, rest = path.parts[0] if path.parts else "", PurePosixPath(*path.parts[1:]) if len(path.parts) > 1 else None
            if rest is None:
                continue
            if top == "depth" and path.suffix.lower() in DEPTH_EXTENSIONS:
                by_stem["depth"].setdefault(str(rest.with_suffix("")), name)
            elif top == "mask" and path.suffix.lower() == ".png":
                by_stem["mask"].setdefault(str(rest.with_suffix("")), name)
        entries = []
        for name in sorted(names):
            path = PurePosixPath(name)
            if len(path.parts) < 2 or path.parts[0] != "rgb" or path.suffix.lower() not in RGB_EXTENSIONS:
                continue
            stem = str(PurePosixPath(*path.parts[1:]).with_suffix(""))
            depth = by_stem["depth"].get(stem, f"depth/{stem}.<{'|'.join(e[1:] for e in DEPTH_EXTENSIONS)}>")
            mask = by_stem["mask"].get(stem)
            entries.append((name, depth, mask) if mask else (name, depth))
        if not entries:
            raise ValueError(f"{self.root}: no images under rgb/ (and no split list given); see apdepth.data.folder")
        return entries

    def entry_files(self, entry: tuple[str, ...]) -> tuple[str, ...]:
        return entry[:3]  # rgb, depth and the optional mask

    def load(self, entry):
        rgb = self.read_rgb(entry[0])
        depth = self.read_depth(entry[1])
        if self.depth_kind == "disparity":
            with np.errstate(divide="ignore", invalid="ignore"):
                depth = np.where(np.isfinite(depth) & (depth > 0), 1.0 / depth, 0.0).astype(np.float32)
        out = {"rgb": rgb, "depth": depth}
        if len(entry) > 2:
            mask = np.asarray(self.read_image(entry[2]))
            out["mask"] = (mask[..., 0] if mask.ndim == 3 else mask) != 0
        return out

    # ------------------------------------------------------------------ depth decoding

    def read_depth(self, rel: str) -> np.ndarray:
        """float32 ``[H, W]``: the stored values times ``depth_scale`` (before any disparity conversion)."""
        suffix = PurePosixPath(rel).suffix.lower()
        if suffix == ".npy":
            depth = self.read_npy(rel).astype(np.float32)
        elif suffix == ".exr":
            depth = self._read_exr(rel)
        else:
            img = self.read_image(rel)
            if img.mode == "F":
                depth = np.asarray(img, dtype=np.float32)
            elif img.mode in ("I;16", "I;16B", "I;16L", "I") and suffix == ".png":
                units = np.asarray(img).astype(np.float32)
                scale = self.depth_scale if self.depth_scale is not None else img.info.get("depth_scale")
                if scale is None:
                    raise ValueError(f"{self.root}: {rel!r} is a 16-bit PNG without a depth_scale text chunk: set "
                                     f"depth_scale (metres per unit) in {SETTINGS_FILE} or the constructor")
                return units * np.float32(scale)
            else:
                raise ValueError(f"{self.root}: {rel!r} (mode {img.mode}) is not a depth map: use float32 .npy/.exr/"
                                 ".tif or a 16-bit .png")
        if depth.ndim != 2:
            raise ValueError(f"{self.root}: {rel!r} should be a 2-D depth map, got shape {depth.shape}")
        return depth * np.float32(self.depth_scale if self.depth_scale is not None else 1.0)

    def _read_exr(self, rel: str) -> np.ndarray:
        from ..depth_io import read_depth

        local = self.root / rel
        if self.root.is_dir() and local.is_file():
            return read_depth(local)
        with tempfile.TemporaryDirectory() as tmp:  # OpenEXR reads by file name: spill the tar member
            path = os.path.join(tmp, "depth.exr")
            with open(path, "wb") as f:
                f.write(self.archive.read_bytes(rel))
            return read_depth(path)


def write_split(dataset: FolderDataset, path: str | os.PathLike) -> None:
    """Write ``dataset``'s (discovered) samples as a split list, e.g. to hold some out for validation."""
    from ..io import atomic_open

    with atomic_open(path, "w") as f:
        f.write("".join(" ".join(entry) + "\n" for entry in dataset.entries))


__all__ = ["FolderDataset", "write_split"]
