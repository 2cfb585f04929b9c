"""Your own RGB-D data (phone LiDAR, a robot, a game engine) in a plain folder or ``.tar``: the generic reader.

Layout and pairing rule: an RGB image and its depth map share their path below ``rgb/`` and ``depth/``
up to the extension; an optional valid mask shares it below ``mask/``::

    root/
      rgb/<any/sub/path>/<stem>.{png,jpg,jpeg,bmp,webp,tif,tiff}
      depth/<any/sub/path>/<stem>.{npy,exr,tif,tiff,png}
      mask/<any/sub/path>/<stem>.{png,npy}                  optional: non-zero = valid

Without a split list every image under ``rgb/`` is a sample (sorted). A split list (e.g. ``train.txt``
and ``val.txt``) picks and orders samples, one a line, paths relative to ``root``:

- ``rgb/scene/0001.jpg``: the depth (and mask) found by the pairing rule;
- ``rgb/scene/0001.jpg other/place/0001.npy [masks/0001.png]``: explicit depth (and mask) paths.

Depth files:

- float: float32/float64 ``.npy`` (``[H, W]``, ``[H, W, 1]`` or ``[1, H, W]``), float EXR (channel ``Y``,
  ``Z``, ``R``, ``depth`` or the only one), float32 TIFF (Pillow mode ``F``): read as stored;
- integer: 16-bit PNG, integer TIFF or integer ``.npy``: ``depth = stored value x depth_scale``, and
  ``depth_scale`` is required (metres per unit, e.g. 0.001 for millimetres, as Hypersim; 0.01 for
  centimetres, as Virtual KITTI), so integer and float files of one data set agree in unit. A PNG that
  records its scale in a ``depth_scale`` text chunk (``apdepth predict --formats png16mm``) needs none.

Invalid pixels: 0, negative, NaN and infinite values, values outside ``(min_depth, max_depth)`` (after
scaling and conversion), and pixels where the mask is 0. They are left out of every loss.

``depth_kind="disparity"``: the files hold disparity proportional to inverse depth (stereo disparity
``f * B / Z``; not an affine-invariant disparity with an unknown shift, which has no depth equivalent).
It is converted to depth as ``1 / value`` (``1 / (value x depth_scale)`` for integer files), with 0 disparity (infinitely far, or no
match) invalid; ``min_depth`` / ``max_depth`` then apply to that depth. Training therefore always
happens in depth space, as with Hypersim and Virtual KITTI, and the data sets can be mixed.

Depth units do not matter for training: the training view normalises every map by its own 2% / 98%
quantiles to [-1, 1] (:func:`apdepth.data.training.normalize_depth`); ``depth_scale`` matters for the
``min_depth`` / ``max_depth`` range and for metric evaluation.

``resize``: ``"native"`` (default) keeps the stored size; a training micro-batch then needs every frame
of the data set at one size. ``"HxW"`` (e.g. ``"480x640"``) resizes every frame: RGB bilinear with
antialiasing, depth and masks nearest-exact (no mixed depths at edges), after the depth normalisation
and the flip, as the Hypersim reader does.

:func:`write_sample` writes a sample in this layout in any of the depth formats (tests, conversions).
"""

from __future__ import annotations

import io
import logging
import math
import os
import posixpath
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..depth_io import save_exr, save_tiff32
from ..io import atomic_open
from .base import DepthDataset
from .hypersim import nearest_exact_resize, parse_resize

logger = logging.getLogger(__name__)

RGB_DIR, DEPTH_DIR, MASK_DIR = "rgb", "depth", "mask"
RGB_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DEPTH_EXTENSIONS = (".npy", ".exr", ".tif", ".tiff", ".png")  # the pairing rule's search order
MASK_EXTENSIONS = (".png", ".npy")
DEPTH_KINDS = ("depth", "disparity")
DEPTH_FORMATS = {"npy": ".npy", "exr": ".exr", "tiff": ".tif", "png16": ".png"}  # write_sample's formats
EXR_CHANNELS = ("Y", "Z", "R", "depth", "Depth")


class FolderDataset(DepthDataset):
    """RGB-D samples in the folder layout of the module docstring.

    Args:
        root: folder or ``.tar``.
        split: a split list, or ``None`` / ``""`` for every image under ``rgb/``.
        missing: ``"error"`` or ``"skip"`` for samples whose depth (or listed files) is missing.
        transform: optional callable on each sample dict.
        depth_scale: depth per stored unit of integer files (required for them; float files are read as stored).
        depth_kind: ``"depth"`` or ``"disparity"``.
        min_depth, max_depth: the valid range after conversion (exclusive).
        resize: ``"native"`` or ``"HxW"``.
    """

    name = "folder"
    num_paths = 1

    def __init__(self, root, split=None, missing: str = "error", transform=None, *,
                 depth_scale: float | None = None, depth_kind: str = "depth", min_depth: float = 0.0,
                 max_depth: float | None = None, resize: str = "native"):
        if depth_kind not in DEPTH_KINDS:
            raise ValueError(f"depth_kind must be one of {DEPTH_KINDS}, got {depth_kind!r}")
        if depth_scale is not None and not (depth_scale > 0 and math.isfinite(depth_scale)):
            raise ValueError(f"depth_scale must be a positive number, got {depth_scale!r}")
        self.depth_scale = depth_scale
        self.depth_kind = depth_kind
        self.min_depth = float(min_depth)
        self.max_depth = float("inf") if max_depth is None else float(max_depth)
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth!r}, {max_depth!r}")
        self.resize = parse_resize(resize)
        if self.resize == "marigold":
            raise ValueError("resize for a folder data set must be 'native' or 'HxW', got 'marigold'")
        self.discover = not split
        super().__init__(root, split or "", missing=missing, transform=None)
        self.post_transform = transform
        self.stored_size = self.read_image(self.entries[0][0]).size[::-1]  # (H, W) of the first frame
        logger.info("Folder data set %s: %d samples (%s), first frame %dx%d, %s", self.root, len(self.entries),
                    "discovered under rgb/" if self.discover else f"split {self.split}", *self.stored_size,
                    self.depth_kind)

    # ------------------------------------------------------------------ samples

    def _read_split(self) -> list[tuple[str, ...]]:
        if self.discover:
            names = self.archive.names()
            rgbs = [n for n in names if n.startswith(RGB_DIR + "/") and n.lower().endswith(RGB_EXTENSIONS)]
            if not rgbs:
                raise ValueError(f"folder: no images under {self.root / RGB_DIR} ({', '.join(RGB_EXTENSIONS)}); "
                                 "see apdepth.data.folder for the layout, or give a split list")
            members = set(names)
            return [self._pair(rgb, members) for rgb in rgbs]
        entries = []
        for fields in super()._read_split():
            if len(fields) > 3:
                raise ValueError(f"{self.split}: a folder split line holds 1 to 3 paths (rgb [depth [mask]]), got "
                                 f"{' '.join(fields)!r}")
            entries.append(self._pair(fields[0]) if len(fields) == 1 else tuple(fields))
        return entries

    def _pair(self, rgb: str, names: set[str] | None = None) -> tuple[str, ...]:
        """``(rgb, depth[, mask])`` by the pairing rule; a depth not found is ``depth/<stem>.*`` (reported missing)."""
        parts = rgb.replace("\\", "/").split("/")
        if parts[0] != RGB_DIR or len(parts) < 2:
            raise ValueError(f"{self.root}: {rgb!r} is not under {RGB_DIR}/; the pairing rule needs rgb/<path> "
                             "(or give the depth path on the split line)")
        stem = posixpath.splitext("/".join(parts[1:]))[0]
        exists = (lambda n: n in names) if names is not None else self.archive.exists
        depth = next((f"{DEPTH_DIR}/{stem}{e}" for e in DEPTH_EXTENSIONS if exists(f"{DEPTH_DIR}/{stem}{e}")),
                     f"{DEPTH_DIR}/{stem}.*")
        mask = next((f"{MASK_DIR}/{stem}{e}" for e in MASK_EXTENSIONS if exists(f"{MASK_DIR}/{stem}{e}")), None)
        return (rgb, depth) if mask is None else (rgb, depth, mask)

    def entry_files(self, entry):
        return entry[:3]  # a depth the pairing rule did not find is "depth/<stem>.*": reported missing

    # ------------------------------------------------------------------ decoding

    def read_depth(self, rel: str) -> np.ndarray:
        """float32 ``[H, W]`` depth of a depth file (scaled, disparity converted; invalid values kept)."""
        values, is_int, file_scale = self._read_values(rel)
        if is_int and self.depth_scale is None and file_scale is not None:  # e.g. apdepth's png16mm outputs
            values, is_int = values.astype(np.float64) * file_scale, False
        if is_int and self.depth_scale is None:
            raise ValueError(f"{self.root}: {rel!r} stores integers; give its scale (data.folder.depth_scale / "
                             "depth_scale=, metres per unit, e.g. 0.001 for millimetres)")
        if is_int:
            values = values.astype(np.float64) * self.depth_scale
        values = values.astype(np.float32)
        if self.depth_kind == "disparity":
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.where(values > 0, np.float32(1.0) / values, np.float32(0.0))
        return values.astype(np.float32, copy=False)

    def _read_values(self, rel: str) -> tuple[np.ndarray, bool, float | None]:
        """(values, integer-coded, the scale a PNG records in a ``depth_scale`` text chunk or None)."""
        ext = posixpath.splitext(rel)[1].lower()
        file_scale = None
        if ext == ".png":
            img = self.read_image(rel)
            try:
                file_scale = float(img.info["depth_scale"]) if "depth_scale" in img.info else None
            except ValueError:
                file_scale = None
        if ext == ".npy":
            values = self.read_npy(rel)
        elif ext == ".exr":
            values = self._read_exr(rel)
        elif ext in (".png", ".tif", ".tiff"):
            values = self._read_raster(rel)
        else:
            raise ValueError(f"{self.root}: {rel!r}: depth files must be one of {', '.join(DEPTH_EXTENSIONS)}")
        values = np.asarray(values)
        if values.ndim == 3 and 1 in (values.shape[0], values.shape[-1]):
            values = values.reshape(values.shape[1:] if values.shape[0] == 1 else values.shape[:2])
        if values.ndim != 2:
            raise ValueError(f"{self.root}: {rel!r} holds an array of shape {values.shape}; a depth map is [H, W]")
        if values.dtype == bool or not (np.issubdtype(values.dtype, np.number)):
            raise ValueError(f"{self.root}: {rel!r} holds {values.dtype} values, not numbers")
        return values, bool(np.issubdtype(values.dtype, np.integer)), file_scale

    def _read_exr(self, rel: str) -> np.ndarray:
        try:
            import OpenEXR
        except ImportError as e:
            raise ImportError("EXR depth needs the OpenEXR package: pip install 'apdepth[finetune]'") from e
        with OpenEXR.File(io.BytesIO(self.archive.read_bytes(rel)), separate_channels=True) as f:
            channels = f.channels()
            name = next((c for c in EXR_CHANNELS if c in channels), None)
            if name is None and len(channels) == 1:
                name = next(iter(channels))
            if name is None:
                raise ValueError(f"{self.root}: {rel!r} has channels {sorted(channels)}; the depth must be in one "
                                 f"of {EXR_CHANNELS} (or the only channel)")
            return np.array(channels[name].pixels)

    def _read_raster(self, rel: str) -> np.ndarray:
        img = self.read_image(rel)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.asarray(img).astype(np.int32)
        if img.mode == "F":
            return np.asarray(img, dtype=np.float32)
        if rel.lower().endswith((".tif", ".tiff")):  # float64 or multi-sample TIFFs Pillow cannot read
            try:
                import tifffile
            except ImportError:
                tifffile = None
            if tifffile is not None:
                return tifffile.imread(io.BytesIO(self.archive.read_bytes(rel)))
        raise ValueError(f"{self.root}: {rel!r} is a PIL mode {img.mode!r} image; depth PNGs must be 16-bit, depth "
                         "TIFFs float32 or 16-bit integer (8-bit depth is too coarse)")

    def read_mask(self, rel: str) -> np.ndarray:
        if rel.lower().endswith(".npy"):
            mask = np.asarray(self.read_npy(rel))
        else:
            mask = np.asarray(self.read_image(rel))
        if mask.ndim == 3:
            mask = mask[..., 0] if mask.shape[-1] in (1, 3, 4) else mask[0]
        return mask != 0

    def load(self, entry):
        rgb = self.read_rgb(entry[0])
        out = {"rgb": rgb, "depth": self.read_depth(entry[1])}
        if len(entry) > 2:
            out["mask"] = self.read_mask(entry[2])
            if out["mask"].shape != rgb.shape[:2]:
                raise ValueError(f"{self.root}: mask {entry[2]!r} is {out['mask'].shape[1]}x{out['mask'].shape[0]} "
                                 f"but {entry[0]!r} is {rgb.shape[1]}x{rgb.shape[0]}")
        return out

    # ------------------------------------------------------------------ size

    def target_size(self, height: int, width: int) -> tuple[int, int] | None:
        if self.resize == "native":
            return None
        return None if (height, width) == self.resize else self.resize

    def native_item(self, index: int) -> dict:
        """The sample at its stored size (no resize, no transform)."""
        return super().__getitem__(index)

    def resize_sample(self, sample: dict, keys=("rgb", "depth", "valid_mask")) -> dict:
        """Resize ``[C, H, W]`` tensors of ``sample`` (in place) to ``resize``: RGB (uint8 or float) bilinear
        with antialiasing, the others nearest-exact. With ``resize="native"`` every frame must have the first
        frame's size (a micro-batch stacks them)."""
        height, width = sample[keys[0]].shape[-2:]
        target = self.target_size(height, width)
        if target is None:
            if self.resize == "native" and (height, width) != tuple(self.stored_size):
                raise ValueError(f"folder {self.root}: {sample.get('rgb_path', '?')!r} is {width}x{height} but the "
                                 f"first frame is {self.stored_size[1]}x{self.stored_size[0]}; frames of one data set "
                                 "share a micro-batch: give data.folder.resize=HxW (resize=) to train on mixed sizes")
            return sample
        for key in keys:
            if key not in sample:
                continue
            x = sample[key]
            if key == "rgb":
                y = F.interpolate(x[None].float(), size=target, mode="bilinear", align_corners=False, antialias=True)[0]
                sample[key] = y.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y.to(x.dtype)
            else:
                sample[key] = nearest_exact_resize(x, target)
        return sample

    def __getitem__(self, index: int) -> dict:
        sample = self.native_item(index)
        if self.resize != "native":
            sample = self.resize_sample(sample, ("rgb", "depth", "valid_mask", "edge_valid_mask"))
        return self.post_transform(sample) if self.post_transform is not None else sample

    def __repr__(self) -> str:
        split = "discovered" if self.discover else str(self.split)
        return f"FolderDataset(root={str(self.root)!r}, split={split!r}, samples={len(self)}, {self.depth_kind})"


# ---------------------------------------------------------------------------------------------- writing


def write_sample(root: str | os.PathLike, name: str, rgb: np.ndarray, depth: np.ndarray, depth_format: str = "npy",
                 mask: np.ndarray | None = None, png_scale: float = 0.001) -> tuple[str, ...]:
    """Write one sample in the folder layout; returns its relative ``(rgb, depth[, mask])`` paths.

    Args:
        root: the data set folder.
        name: relative path without extension (``scene1/0001``).
        rgb: uint8 ``[H, W, 3]`` (written as PNG).
        depth: float ``[H, W]`` depth; non-finite or non-positive values are invalid (written as 0).
        depth_format: ``npy`` (float32), ``exr`` (float32, channel ``Y``), ``tiff`` (float32) or ``png16``
            (uint16 ``round(depth / png_scale)``, clipped to 65535; read it back with
            ``depth_scale=png_scale``).
        mask: optional bool ``[H, W]`` (written as an 8-bit PNG, 255 = valid).
    """
    from PIL import Image

    if depth_format not in DEPTH_FORMATS:
        raise ValueError(f"depth_format must be one of {tuple(DEPTH_FORMATS)}, got {depth_format!r}")
    root = Path(root)
    depth = np.asarray(depth, dtype=np.float32)
    if depth.shape != rgb.shape[:2]:
        raise ValueError(f"depth {depth.shape} and rgb {rgb.shape[:2]} sizes differ")
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0)).astype(np.float32)
    rgb_rel = f"{RGB_DIR}/{name}.png"
    depth_rel = f"{DEPTH_DIR}/{name}{DEPTH_FORMATS[depth_format]}"
    with atomic_open(root / rgb_rel) as f:
        Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(f, format="PNG")
    if depth_format == "tiff":
        save_tiff32(root / depth_rel, depth)
    elif depth_format == "exr":
        save_exr(root / depth_rel, depth)
    else:
        with atomic_open(root / depth_rel) as f:
            if depth_format == "npy":
                np.save(f, depth)
            else:  # png16
                units = np.clip(np.round(depth.astype(np.float64) / png_scale), 0, 65535).astype(np.uint16)
                Image.fromarray(units).save(f, format="PNG")
    if mask is None:
        return rgb_rel, depth_rel
    mask_rel = f"{MASK_DIR}/{name}.png"
    with atomic_open(root / mask_rel) as f:
        Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255).save(f, format="PNG")
    return rgb_rel, depth_rel, mask_rel


def write_split(path: str | os.PathLike, entries) -> Path:
    """A split list: one sample a line (``rgb`` alone, or ``rgb depth [mask]``), atomically."""
    path = Path(path)
    with atomic_open(path, "w") as f:
        f.write("".join(" ".join([e] if isinstance(e, str) else e) + "\n" for e in entries))
    return path
