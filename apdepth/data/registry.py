"""Every reader by name: :data:`DATASETS` and :func:`get_dataset`."""

from __future__ import annotations

import os

from . import EVAL_DATASETS, TRAIN_DATASETS
from .base import DepthDataset
from .diode import DIODEDataset
from .eth3d import ETH3DDataset
from .folder import FolderDataset
from .hypersim import HypersimDataset
from .kitti import KITTIDataset
from .nyu import NYUDataset
from .scannet import ScanNetDataset
from .vkitti import VirtualKITTIDataset

DATASETS: dict[str, type[DepthDataset]] = {
    cls.name: cls
    for cls in (NYUDataset, KITTIDataset, ETH3DDataset, ScanNetDataset, DIODEDataset, HypersimDataset,
                VirtualKITTIDataset, FolderDataset)
}
if set(DATASETS) != {*EVAL_DATASETS, *TRAIN_DATASETS}:  # the names in __init__ and the readers' own
    raise ImportError(f"apdepth.data: readers {sorted(DATASETS)} do not match the data set names "
                      f"{sorted({*EVAL_DATASETS, *TRAIN_DATASETS})}")


def get_dataset(name: str, root: str | os.PathLike, split: str | os.PathLike, **kwargs) -> DepthDataset:
    """Build data set ``name`` (one of :data:`DATASETS`) from ``root`` (folder or tar) and ``split`` (list file).

    Extra keyword arguments go to the data set's class (``missing="skip"``, ``transform=...``,
    ``eval_crop="garg"`` for KITTI, ``edge_mask=False`` for DIODE, ...).
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}; choose among {', '.join(DATASETS)}")
    return DATASETS[key](root, split, **kwargs)
