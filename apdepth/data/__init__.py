"""Data sets: raw readers for the five evaluation sets and the two training sets.

Every reader takes a data root (extracted folder or ``.tar``) and a split list and returns samples
``{"rgb": uint8 [3,H,W], "depth": float32 [1,H,W] metres, "valid_mask": bool [1,H,W], "rgb_path": str,
"index": int}``. :func:`get_dataset` builds one by name.
"""

from __future__ import annotations

import os

from .archive import Archive, normalize_member
from .base import DepthDataset
from .diode import DIODEDataset, sobel_edge_mask, sobel_magnitude
from .eth3d import ETH3DDataset
from .folder import FolderDataset
from .hypersim import HypersimDataset
from .kitti import KITTIDataset, kitti_benchmark_box, kitti_benchmark_crop, kitti_eval_mask
from .nyu import NYUDataset, nyu_eigen_mask
from .scannet import ScanNetDataset
from .vkitti import VirtualKITTIDataset

DATASETS: dict[str, type[DepthDataset]] = {
    cls.name: cls
    for cls in (NYUDataset, KITTIDataset, ETH3DDataset, ScanNetDataset, DIODEDataset, HypersimDataset,
                VirtualKITTIDataset, FolderDataset)
}
EVAL_DATASETS = ("nyu", "kitti", "eth3d", "scannet", "diode")  # Table 1, in the paper's order
TRAIN_DATASETS = ("hypersim", "vkitti", "folder")  # folder: your own RGB-D (apdepth.data.folder)


def get_dataset(name: str, root: str | os.PathLike, split: str | os.PathLike, **kwargs) -> DepthDataset:
    """Build data set ``name`` (one of :data:`DATASETS`) from ``root`` (folder or tar) and ``split`` (list file).

    Extra keyword arguments go to the data set's class (``missing="skip"``, ``transform=...``,
    ``eval_crop="garg"`` for KITTI, ``edge_mask=False`` for DIODE, ...).
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}; choose among {', '.join(DATASETS)}")
    return DATASETS[key](root, split, **kwargs)


__all__ = [
    "Archive", "DATASETS", "DIODEDataset", "DepthDataset", "ETH3DDataset", "EVAL_DATASETS", "FolderDataset",
    "HypersimDataset",
    "KITTIDataset", "NYUDataset", "ScanNetDataset", "TRAIN_DATASETS", "VirtualKITTIDataset", "get_dataset",
    "kitti_benchmark_box", "kitti_benchmark_crop", "kitti_eval_mask", "normalize_member", "nyu_eigen_mask",
    "sobel_edge_mask", "sobel_magnitude",
]
