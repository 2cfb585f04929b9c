"""Which data sets to evaluate and where their files are: the Table 1 preset, config files, and the
combined report over several data sets."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..data import EVAL_DATASETS
from ..io import atomic_open, save_json
from .protocol import Protocol
from .report import table1

# Marigold's evaluation archives (under the data root) and split lists (under the split root, which may
# be the Marigold repository's data_split/ folder; later Marigold versions renamed some folders).
TABLE1_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "nyu": ("nyuv2/nyu_labeled_extracted.tar",
            ("nyu/labeled/filename_list_test.txt", "nyu_depth/labeled/filename_list_test.txt")),
    "kitti": ("kitti/kitti_eigen_split_test.tar",
              ("kitti/eigen_test_files_with_gt.txt", "kitti_depth/eigen_test_files_with_gt.txt")),
    "eth3d": ("eth3d/eth3d.tar", ("eth3d/eth3d_filename_list.txt", "eth3d_depth/eth3d_filename_list.txt")),
    "scannet": ("scannet/scannet_val_sampled_800_1.tar",
                ("scannet/scannet_val_sampled_list_800_1.txt", "scannet_depth/scannet_val_sampled_list_800_1.txt")),
    "diode": ("diode/diode_val.tar",
              ("diode/diode_val_all_filename_list.txt", "diode_depth/diode_val_all_filename_list.txt")),
}
PROTOCOL_KEYS = {f.name for f in fields(Protocol)} - {"dataset", "min_depth", "max_depth"}


@dataclass
class DatasetSpec:
    """One data set to evaluate: its files, and settings that differ from its defaults.

    ``options`` go to the data set's constructor (``missing``, ``eval_crop``, DIODE's ``mask``, ...);
    ``protocol`` overrides :class:`~apdepth.evaluation.protocol.Protocol` fields.
    """

    name: str
    data: Path
    split: Path
    predictions: Path | None = None
    options: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in EVAL_DATASETS:
            raise ValueError(f"Unknown evaluation data set {self.name!r}; choose among {', '.join(EVAL_DATASETS)}")


def _first_existing(root: Path, candidates: list[str], what: str) -> Path:
    tried = []
    for rel in candidates:
        for base in (root, root / "data_split"):
            path = base / rel
            tried.append(path)
            if path.exists():
                return path
    raise FileNotFoundError(f"{what}: none of {', '.join(str(p) for p in tried)} exists")


def _preset(name: str) -> tuple[str, tuple[str, ...]]:
    if name not in TABLE1_FILES:
        raise ValueError(f"No Table 1 preset for {name!r}; choose among {', '.join(TABLE1_FILES)}")
    return TABLE1_FILES[name]


def table1_data(name: str, data_root: str | os.PathLike) -> Path:
    """Marigold's archive of ``name`` under ``data_root`` (or the folder it was extracted to)."""
    archive, _ = _preset(name)
    return _first_existing(Path(data_root), [archive, archive[: -len(".tar")]], f"{name} data under {data_root}")


def table1_split(name: str, split_root: str | os.PathLike) -> Path:
    """Marigold's split list of ``name`` under ``split_root`` (its ``data_split/`` folder, the repository
    root, or a folder holding the list files themselves)."""
    _, splits = _preset(name)
    return _first_existing(Path(split_root), [*splits, Path(splits[0]).name], f"{name} split list under {split_root}")


def table1_spec(name: str, data_root: str | os.PathLike, split_root: str | os.PathLike) -> DatasetSpec:
    """The spec of data set ``name`` laid out as Marigold publishes it."""
    return DatasetSpec(name=name, data=table1_data(name, data_root), split=table1_split(name, split_root))


def load_config(path: str | os.PathLike) -> list[DatasetSpec]:
    """Data sets from a YAML or JSON file::

        data_root: /data/marigold_eval          # optional: base of relative data paths
        split_root: /src/Marigold/data_split    # optional: base of relative split paths
        datasets:
          nyu: {data: nyuv2/nyu_labeled_extracted.tar, split: nyu/labeled/filename_list_test.txt}
          kitti: {data: kitti/kitti_eigen_split_test.tar, split: kitti/eigen_test_files_with_gt.txt,
                  eval_crop: garg}
          diode: {}                              # empty: the Table 1 preset under the roots

    Relative roots resolve against the file's folder. Per data set, ``predictions`` names saved
    predictions, keys of :class:`Protocol` (``processing_resolution``, ``alignment_space``, ...) override
    the protocol, and any other key goes to the data set's constructor.
    """
    path = Path(path)
    text = path.read_text()
    import yaml

    try:
        config = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({e})") from e
    if not isinstance(config, dict) or not isinstance(config.get("datasets"), dict) or not config["datasets"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty 'datasets' mapping (see docs/evaluation.md)")
    unknown = set(config) - {"data_root", "split_root", "datasets"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}; allowed: data_root, split_root, datasets")
    here = path.parent
    data_root = here / Path(config.get("data_root", ".")).expanduser()
    split_root = here / Path(config.get("split_root", ".")).expanduser()
    specs = []
    for name, entry in config["datasets"].items():
        entry = dict(entry or {})
        if "data" in entry or "split" in entry:
            if not ("data" in entry and "split" in entry):
                raise ValueError(f"{path}: data set {name!r} needs both 'data' and 'split' (or neither, for the preset)")
            spec = DatasetSpec(name=name, data=data_root / entry.pop("data"), split=split_root / entry.pop("split"))
        else:
            spec = table1_spec(name, data_root, split_root)
        if "predictions" in entry:
            spec.predictions = here / entry.pop("predictions")
        spec.protocol = {k: entry.pop(k) for k in list(entry) if k in PROTOCOL_KEYS}
        spec.options = entry
        specs.append(spec)
    return specs


def write_combined_report(outdir: str | os.PathLike, method: str = "ApDepth (this run)") -> dict[str, dict]:
    """Gather ``<outdir>/<dataset>/summary.json`` of every evaluation data set present and write
    ``results.json`` and ``results.md`` (Table 1 layout) in ``outdir``. Returns the summaries."""
    outdir = Path(outdir)
    summaries = {}
    for name in EVAL_DATASETS:
        path = outdir / name / "summary.json"
        if path.is_file():
            summaries[name] = json.loads(path.read_text())
    if summaries:
        save_json(outdir / "results.json", summaries)
        with atomic_open(outdir / "results.md", "w") as f:
            f.write(table1(summaries, method=method))
    return summaries
