"""The base reader shared by every data set: split list, archive access, decoding and the valid mask.

A sample is a dict:

- ``"rgb"``: uint8 ``[3, H, W]``
- ``"depth"``: float32 ``[1, H, W]``, metric depth in metres, 0 where unknown (no measurement or not
  finite); measured values outside the data set's range are kept (``valid_mask`` excludes them)
- ``"valid_mask"``: bool ``[1, H, W]``: finite, inside ``(min_depth, max_depth)`` (closed interval
  where ``range_inclusive``), and the data set's own masks (provided masks, evaluation crops)
- ``"rgb_path"``: the split entry's RGB path, as written in the split list
- ``"index"``: position in the data set
- ``"edge_valid_mask"`` (DIODE only, bool ``[1, H, W]``): the valid mask without the paper's Sobel
  edge removal, for the edge metrics (which need the discontinuities that mask removes)

Subclasses set ``name``, ``min_depth``, ``max_depth`` and implement :meth:`DepthDataset.load`.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .archive import Archive

logger = logging.getLogger(__name__)

MISSING_POLICIES = ("error", "skip")


class DepthDataset(Dataset):
    """A depth data set read from a folder or tar archive through a split list.

    Args:
        root: the data root: an extracted folder or a ``.tar`` / ``.tar.gz`` archive.
        split: the split list: one sample a line, space-separated paths relative to ``root``.
        missing: what to do with split entries whose files are not in ``root``: ``"error"`` raises a
            ``FileNotFoundError`` naming them (default); ``"skip"`` drops them with a warning.
        transform: optional callable applied to each sample dict (e.g. training augmentation).
    """

    name: ClassVar[str] = "base"
    min_depth: ClassVar[float] = 0.0
    max_depth: ClassVar[float] = float("inf")
    range_inclusive: ClassVar[bool] = False  # Marigold's protocol: min_depth < d < max_depth
    num_paths: ClassVar[int] = 2  # leading fields of a split line that are files: rgb, depth, ...
    # Evaluation defaults (docs/reference.md section 5): 0 = native resolution; None = align at full resolution.
    processing_resolution: ClassVar[int] = 0
    alignment_max_resolution: ClassVar[int | None] = None
    expected_samples: ClassVar[int | None] = None  # the protocol's sample count (a check on the split list)

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | os.PathLike,
        missing: str = "error",
        transform: Callable[[dict], dict] | None = None,
    ):
        super().__init__()
        if missing not in MISSING_POLICIES:
            raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
        self.root = Path(root)
        self.split = Path(split)
        self.archive = Archive(root)
        self.transform = transform
        entries = self.filter_entries(self._read_split())
        self.missing_entries: list[tuple[str, ...]] = []
        self.entries: list[tuple[str, ...]] = self._check_files(entries, missing)
        if not self.entries:
            raise ValueError(f"{self.name}: no samples left from split {self.split} in {self.root}")

    # ------------------------------------------------------------------ split list

    def _read_split(self) -> list[tuple[str, ...]]:
        if not self.split.is_file():
            raise FileNotFoundError(f"{self.name}: split list {self.split} does not exist")
        entries = []
        for lineno, line in enumerate(self.split.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) < self.num_paths:
                raise ValueError(
                    f"{self.split}:{lineno}: {self.name} split lines need {self.num_paths} space-separated "
                    f"paths, got {len(fields)}: {line.strip()!r}"
                )
            entries.append(tuple(fields))
        return entries

    def filter_entries(self, entries: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
        """Hook: drop entries the protocol excludes (KITTI frames without ground truth). Log the count."""
        return entries

    def entry_files(self, entry: tuple[str, ...]) -> tuple[str, ...]:
        """The archive members a sample reads."""
        return entry[: self.num_paths]

    def _check_files(self, entries: list[tuple[str, ...]], missing: str) -> list[tuple[str, ...]]:
        kept, absent = [], []
        for entry in entries:
            lost = [f for f in self.entry_files(entry) if not self.archive.exists(f)]
            if lost:
                absent.append(lost)
                self.missing_entries.append(entry)
            else:
                kept.append(entry)
        if absent:
            listed = "; ".join(", ".join(x) for x in absent[:5]) + (" ..." if len(absent) > 5 else "")
            message = (f"{self.name}: {len(absent)} of {len(entries)} split entries of {self.split} have files "
                       f"missing from {self.root}: {listed}")
            if missing == "error":
                raise FileNotFoundError(message + " (pass missing='skip' / --missing skip to evaluate the rest)")
            logger.warning("%s; skipping them", message)
        return kept

    # ------------------------------------------------------------------ decoding helpers

    def read_image(self, rel: str) -> Image.Image:
        """Decode an image member as stored (no EXIF rotation: ground truth is aligned with the raw pixels)."""
        data = self.archive.read_bytes(rel)
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"{self.root}: {rel!r} is not a readable image ({e})") from e
        return img

    def read_rgb(self, rel: str) -> np.ndarray:
        """uint8 ``[H, W, 3]``."""
        img = self.read_image(rel)
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.asarray(img, dtype=np.uint8)

    def read_png_depth(self, rel: str, units_per_metre: float) -> np.ndarray:
        """A 16-bit depth PNG divided by ``units_per_metre``: float32 ``[H, W]`` metres (0 = no data)."""
        img = self.read_image(rel)
        if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise ValueError(f"{self.root}: {rel!r} should be a 16-bit depth PNG, got PIL mode {img.mode!r}")
        return np.asarray(img).astype(np.float32) / np.float32(units_per_metre)

    def read_npy(self, rel: str) -> np.ndarray:
        data = self.archive.read_bytes(rel)
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.root}: {rel!r} is not a readable .npy file ({e})") from e

    # ------------------------------------------------------------------ sample assembly

    def load(self, entry: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Read one entry: ``{"rgb": uint8 [H, W, 3], "depth": float32 [H, W] metres (may hold inf/nan),
        "mask": bool [H, W] (optional: the data set's own validity mask), "edge_metric_mask": bool [H, W] (optional:
        the mask for edge metrics where it differs from "mask")}``. Crops happen here."""
        raise NotImplementedError

    def range_mask(self, depth: np.ndarray) -> np.ndarray:
        """Finite and inside the data set's depth range."""
        with np.errstate(invalid="ignore"):
            if self.range_inclusive:
                inside = (depth >= self.min_depth) & (depth <= self.max_depth)
            else:
                inside = (depth > self.min_depth) & (depth < self.max_depth)
        return inside & np.isfinite(depth)

    def settings(self) -> dict:
        """The reader's options that change which pixels are valid (recorded with evaluation results; a
        resumed run must match them). Subclasses with such options extend it."""
        return {}

    def eval_mask(self, height: int, width: int) -> np.ndarray | None:
        """Hook: a fixed evaluation region (NYU Eigen crop, KITTI Eigen/Garg crop); None = everywhere."""
        return None

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.entries):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self.entries)} samples")
        entry = self.entries[index]
        raw = self.load(entry)
        rgb, depth = raw["rgb"], raw["depth"].astype(np.float32, copy=False)
        if rgb.shape[:2] != depth.shape:
            raise ValueError(f"{self.name}: {entry[0]!r} is {rgb.shape[1]}x{rgb.shape[0]} but its depth map is "
                             f"{depth.shape[1]}x{depth.shape[0]}")
        in_range = self.range_mask(depth)
        region = self.eval_mask(*depth.shape)
        if region is not None:
            in_range &= region
        valid = in_range & raw["mask"].astype(bool) if raw.get("mask") is not None else in_range
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0)).astype(np.float32)
        sample = {
            "rgb": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))),  # [3, H, W] uint8
            "depth": torch.from_numpy(depth)[None],  # [1, H, W] float32
            "valid_mask": torch.from_numpy(valid)[None],  # [1, H, W] bool
            "rgb_path": entry[0],
            "index": index,
        }
        if raw.get("edge_metric_mask") is not None:
            sample["edge_valid_mask"] = torch.from_numpy(in_range & raw["edge_metric_mask"].astype(bool))[None]
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={str(self.split)!r}, samples={len(self)})"
