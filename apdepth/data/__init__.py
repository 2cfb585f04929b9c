"""Data sets: raw readers for the five evaluation sets and the two training sets.

Every reader takes a data root (extracted folder or ``.tar``) and a split list and returns samples
``{"rgb": uint8 [3,H,W], "depth": float32 [1,H,W] metres, "valid_mask": bool [1,H,W], "rgb_path": str,
"index": int}``. :func:`get_dataset` builds one by name.

The data set names (:data:`EVAL_DATASETS`, :data:`TRAIN_DATASETS`) are plain tuples; the readers are
imported on first use (PEP 562), so the command line can name the data sets without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

EVAL_DATASETS = ("nyu", "kitti", "eth3d", "scannet", "diode")  # Table 1, in the paper's order
TRAIN_DATASETS = ("hypersim", "vkitti", "folder")  # folder: your own RGB-D (apdepth.data.folder)

# public name -> module that defines it
_LAZY = {
    "Archive": ".archive", "normalize_member": ".archive",
    "DepthDataset": ".base",
    "DIODEDataset": ".diode", "sobel_edge_mask": ".diode", "sobel_magnitude": ".diode",
    "ETH3DDataset": ".eth3d",
    "FolderDataset": ".folder",
    "HypersimDataset": ".hypersim",
    "KITTIDataset": ".kitti", "kitti_benchmark_box": ".kitti", "kitti_benchmark_crop": ".kitti",
    "kitti_eval_mask": ".kitti",
    "NYUDataset": ".nyu", "nyu_eigen_mask": ".nyu",
    "ScanNetDataset": ".scannet",
    "VirtualKITTIDataset": ".vkitti",
    "DATASETS": ".registry", "get_dataset": ".registry",
}

__all__ = [
    "DATASETS", "Archive", "DIODEDataset", "DepthDataset", "ETH3DDataset", "EVAL_DATASETS", "FolderDataset",
    "HypersimDataset", "KITTIDataset", "NYUDataset", "ScanNetDataset", "TRAIN_DATASETS", "VirtualKITTIDataset",
    "get_dataset", "kitti_benchmark_box", "kitti_benchmark_crop", "kitti_eval_mask", "normalize_member",
    "nyu_eigen_mask", "sobel_edge_mask", "sobel_magnitude",
]

if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from .archive import Archive, normalize_member
    from .base import DepthDataset
    from .diode import DIODEDataset, sobel_edge_mask, sobel_magnitude
    from .eth3d import ETH3DDataset
    from .folder import FolderDataset
    from .hypersim import HypersimDataset
    from .kitti import KITTIDataset, kitti_benchmark_box, kitti_benchmark_crop, kitti_eval_mask
    from .nyu import NYUDataset, nyu_eigen_mask
    from .registry import DATASETS, get_dataset
    from .scannet import ScanNetDataset
    from .vkitti import VirtualKITTIDataset


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
