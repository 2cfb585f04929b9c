"""`apdepth predict` beyond the depth map: test-time augmentation (how the pipeline is called) and the
post-steps that run after the depth-map writers, each only when asked for: metric scale from sparse depths
(with its EXR / TIFF / millimetre PNG copies), the TTA standard deviation, point clouds (PLY).

predict.py builds :class:`ExtraOptions` once from the command line, then asks :func:`predictor` for the
pipeline call and :func:`post_steps` for the list of steps; each step takes one :class:`ImageResult`
and returns the problems it met (empty when all went well)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .common import MAX_PROCESSING_RES, UsageError, check_processing_res

logger = logging.getLogger(__name__)

EXTRA_SUFFIXES = {"metric": "_depth_metric.npy", "metric_json": "_depth_metric.json", "std": "_depth_std.npy",
                  "metric_exr": "_depth_metric.exr", "metric_tiff32": "_depth_metric.tif",
                  "metric_png16mm": "_depth_metric_mm.png"}
METRIC_FORMATS = ("exr", "tiff32", "png16mm")  # --formats that also write the metric depth
SPARSE_NAME_SUFFIXES = ("", "_sparse", "_lidar", "_depth")
DEFAULT_FOV = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("metric scale (sparse known depths)")
    g.add_argument("--sparse-depth", type=Path, default=None, metavar="PATH_OR_DIR",
                   help="sparse depths: a file (one input image) or a folder searched for <name>[_sparse|_lidar|"
                        "_depth].{npy,csv,txt,png,tif} mirroring the inputs. A depth map (zeros invalid) or "
                        "(u, v, depth) rows. Writes <name>_depth_metric.npy and .json (scale, shift, inliers)")
    g.add_argument("--sparse-scale", type=float, default=1.0,
                   help="multiply sparse depths by this (e.g. 0.00390625 = 1/256 for KITTI PNGs; default 1)")
    g.add_argument("--align-space", choices=("depth", "disparity"), default="depth",
                   help="depth: metric = s*depth + t on ApDepth's depth (default); disparity: 1/metric = "
                        "s*disparity + t on the Depth Anything V2 prior's relative disparity")
    g.add_argument("--align-loss", choices=("tukey", "huber"), default="tukey", help="robust loss (default tukey)")
    g.add_argument("--align-threshold", type=float, default=None,
                   help="inlier threshold on the relative error, e.g. 0.1 (default: from the data)")
    g = parser.add_argument_group("point clouds (--formats ply)")
    g.add_argument("--focal", type=float, default=None, metavar="PIXELS", help="focal length in input-image pixels")
    g.add_argument("--fov", type=float, default=None, metavar="DEGREES",
                   help=f"horizontal field of view (without --focal or EXIF: {DEFAULT_FOV:g}, with a warning)")
    g.add_argument("--edge-threshold", type=float, default=0.05,
                   help="drop flying pixels whose depth jumps by more than this fraction to a neighbour "
                        "(default 0.05; 0 keeps all)")
    g.add_argument("--ply-ascii", action="store_true", help="ASCII PLY instead of binary little endian")
    g.add_argument("--ply-offset", type=float, default=0.25,
                   help="without metric depth, points use z = depth + this offset (affine-invariant depth "
                        "has an unknown shift; default 0.25)")
    g = parser.add_argument_group("uncertainty (test-time augmentation)")
    g.add_argument("--tta", action="store_true",
                   help="average a horizontal flip and a second processing resolution; writes <name>_depth_std.npy")
    g.add_argument("--tta-res", type=int, default=None,
                   help="the second processing resolution (default: 3/4 of the first)")


@dataclass(frozen=True)
class ExtraOptions:
    """The extras' options, checked (built once from the command line by :meth:`from_args`)."""

    formats: tuple[str, ...]
    sparse: Path | None = None
    sparse_scale: float = 1.0
    align_space: str = "depth"
    align_loss: str = "tukey"
    align_threshold: float | None = None
    focal: float | None = None
    fov: float | None = None
    edge_threshold: float = 0.05
    ply_ascii: bool = False
    ply_offset: float = 0.25
    tta: bool = False
    tta_res: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, formats: list[str]) -> ExtraOptions:
        """Everything that can be checked without inputs or model (raises UsageError); ``formats``: the
        parsed --formats."""
        _check_ply_options(args)
        _check_tta_options(args)
        _check_metric_options(args, formats)
        return cls(tuple(formats), args.sparse_depth, args.sparse_scale, args.align_space, args.align_loss,
                   args.align_threshold, args.focal, args.fov, args.edge_threshold, args.ply_ascii,
                   args.ply_offset, args.tta, args.tta_res)

    def check_inputs(self, num_inputs: int) -> None:
        """One --sparse-depth file serves one input only."""
        if self.sparse is not None and self.sparse.is_file() and num_inputs != 1:
            raise UsageError(f"--sparse-depth {self.sparse} is one file but there are {num_inputs} "
                             "inputs; pass a folder with one sparse file per image")

    @property
    def wants_prior(self) -> bool:
        return self.sparse is not None and self.align_space == "disparity"

    def paths(self, outdir: Path, stem: str) -> dict[str, Path]:
        keys = (["metric", "metric_json"] if self.sparse is not None else []) + (["std"] if self.tta else [])
        if self.sparse is not None:
            keys += [f"metric_{fmt}" for fmt in METRIC_FORMATS if fmt in self.formats]
        return {key: outdir / (stem + EXTRA_SUFFIXES[key]) for key in keys}


def _check_ply_options(args: argparse.Namespace) -> None:
    if args.focal is not None and args.fov is not None:
        raise UsageError("--focal and --fov: give one of them")
    if args.focal is not None and not args.focal > 0:
        raise UsageError(f"--focal must be > 0 pixels, got {args.focal}")
    if args.fov is not None and not 0 < args.fov < 180:
        raise UsageError(f"--fov must be in (0, 180) degrees, got {args.fov}")
    if args.edge_threshold < 0:
        raise UsageError(f"--edge-threshold must be >= 0, got {args.edge_threshold}")


def _check_tta_options(args: argparse.Namespace) -> None:
    if args.tta and args.no_match_input_res:
        raise UsageError("--tta needs outputs at the input size; drop --no-match-input-res")
    if args.tta_res is not None and (args.tta_res < 0 or not args.tta):
        raise UsageError("--tta-res needs --tta and a resolution >= 0")
    check_processing_res(args.tta_res, getattr(args, "max_processing_res", MAX_PROCESSING_RES), "--tta-res")


def _check_metric_options(args: argparse.Namespace, formats: list[str]) -> None:
    if args.sparse_depth is not None and not args.sparse_depth.exists():
        raise UsageError(f"--sparse-depth: {args.sparse_depth}: no such file or folder")
    if "exr" in formats:
        import importlib.util

        if importlib.util.find_spec("OpenEXR") is None:
            raise UsageError("--formats exr needs the OpenEXR package: pip install 'apdepth[exr]'")
    if "png16mm" in formats and args.sparse_depth is None:
        raise UsageError("--formats png16mm writes metric depth: it needs --sparse-depth")


# ---------------------------------------------------------------------------- the pipeline call


@dataclass
class ImageResult:
    """One image through the pipeline, handed to the writers and then to each post-step in turn."""

    source: Path
    stem: str  # output path without suffix, relative to OUTDIR
    paths: dict[str, Path]  # output key (a format or an EXTRA_SUFFIXES key) -> file
    image: Any  # the input, a PIL image
    depth: Any  # [H, W] float in [0, 1], near small
    colored: Any = None  # PIL image (the 'color' format) or None
    std: Any = None  # [H, W] float (--tta) or None
    prior: Any = None  # [H, W] the prior's relative disparity (--align-space disparity) or None
    alignment: Any = None  # MetricAlignment: set by the metric step, read by the point cloud step


Predictor = Callable[[Any, list, dict], list[dict]]  # (pipe, images, call kwargs) -> per image {depth, colored, std, prior}


def predictor(options: ExtraOptions) -> Predictor:
    """The pipeline call, chosen once: one batched call, or test-time augmentation (--tta) image by image."""
    if options.tta:
        return partial(predict_tta, tta_res=options.tta_res, want_prior=options.wants_prior)
    return partial(predict_plain, want_prior=options.wants_prior)


def predict_plain(pipe, images: list, call: dict, want_prior: bool = False) -> list[dict]:
    """Per image: ``{"depth", "colored", "std": None, "prior"}`` (prior ``None`` unless ``want_prior``)."""
    out = pipe(images, batch_size=len(images), output_prior=want_prior, **call)
    colored = out.depth_colored or [None] * len(images)
    priors = out.prior if want_prior else [None] * len(images)
    return [{"depth": d, "colored": c, "std": None, "prior": p} for d, c, p in zip(out.depth, colored, priors)]


def predict_tta(pipe, images: list, call: dict, tta_res: int | None = None, want_prior: bool = False) -> list[dict]:
    """Per image: the mean over a horizontal flip and two processing resolutions, and its standard deviation."""
    from ...postprocessing import tta

    base = call["processing_resolution"]
    base = pipe.config.default_processing_resolution if base is None else base
    tta_call = {k: v for k, v in call.items()
                if k not in ("match_input_resolution", "processing_resolution", "output_type")}
    results = []
    for image in images:  # each image with its flip in one batch
        second = tta_res if tta_res is not None else tta.second_resolution(image.height, image.width, base)
        out = tta.predict_tta(pipe, image, processing_resolutions=(base, second), batch_size=2, **tta_call)
        prior = None
        if want_prior:
            prior = pipe(image, processing_resolution=base, output_prior=True, output_type="np").prior[0]
        results.append({"depth": out.depth[0], "colored": (out.depth_colored or [None])[0],
                        "std": out.depth_std[0], "prior": prior})
    return results


# ---------------------------------------------------------------------------- post-steps

PostStep = Callable[[ImageResult], list[str]]  # writes some outputs of one image; returns its problems


def post_steps(options: ExtraOptions) -> list[PostStep]:
    """The steps after the depth-map writers, in order, each only when asked for (the point cloud last: it
    uses the metric alignment when there is one)."""
    steps: list[PostStep] = []
    if options.sparse is not None:
        steps.append(partial(align_metric, options))
    if options.tta:
        steps.append(write_std)
    if "ply" in options.formats:
        steps.append(partial(write_point_cloud, options))
    return steps


def align_metric(options: ExtraOptions, result: ImageResult) -> list[str]:
    """--sparse-depth: fit the depth to the sparse depths; write the metric depth (.npy, the asked-for float
    formats) and the fit (.json). Sets ``result.alignment``."""
    import numpy as np

    from ...io import save_json, save_npy

    depth = np.asarray(result.depth, dtype=np.float32)
    try:
        sparse_file, alignment = _align(options, result, depth)
        result.alignment = alignment  # the point cloud uses it even if a file below cannot be written
        save_npy(result.paths["metric"], alignment.depth_metric)
        record = {"sparse_depth": str(sparse_file), **alignment.to_dict()}
        record.update(_write_metric_formats(result.paths, alignment.depth_metric))
        save_json(result.paths["metric_json"], record)
    except (OSError, ValueError) as e:
        return [f"{result.source}: metric alignment failed ({e})"]
    logger.info("%s: metric scale %.6g, shift %.6g (%s space), %d/%d sparse points inliers", result.source,
                alignment.scale, alignment.shift, alignment.space, alignment.num_inliers, alignment.num_points)
    return []


def write_std(result: ImageResult) -> list[str]:
    """--tta: the per-pixel standard deviation."""
    import numpy as np

    from ...io import save_npy

    save_npy(result.paths["std"], np.asarray(result.std, dtype=np.float32))
    return []


def find_sparse(sparse: Path, source: Path, stem: str) -> Path | None:
    """The sparse depth file of one input: ``sparse`` itself (a file), or ``sparse/<stem>[_sparse|...].ext``."""
    from ...postprocessing.metric_scale import SPARSE_EXTENSIONS

    if sparse.is_file():
        return sparse
    for name_suffix in SPARSE_NAME_SUFFIXES:
        for ext in SPARSE_EXTENSIONS:
            candidate = sparse / f"{stem}{name_suffix}{ext}"
            if candidate.is_file() and candidate.resolve() != source.resolve():
                return candidate
    return None


def _write_metric_formats(paths: dict[str, Path], depth_metric) -> dict:
    """The metric depth as EXR / float TIFF / millimetre PNG when asked for; what to add to the JSON."""
    from ...depth_io import save_float_depth, save_png16_mm

    record = {}
    for fmt in ("exr", "tiff32"):
        if f"metric_{fmt}" in paths:
            save_float_depth(fmt, paths[f"metric_{fmt}"], depth_metric,
                             "metric depth in the units of the sparse depths (apdepth)")
    if "metric_png16mm" in paths:
        png = save_png16_mm(paths["metric_png16mm"], depth_metric, unit="the sparse depths' units")
        record["png16mm"] = {"file": paths["metric_png16mm"].name, **png}
        if png["clipped"]:
            logger.warning("%s: %d pixels beyond 65535 x %g clipped", paths["metric_png16mm"], png["clipped"],
                           png["depth_scale"])
    return record


def _align(options: ExtraOptions, result: ImageResult, depth):
    """(sparse file, MetricAlignment) of one image; ValueError when it has no sparse file."""
    import numpy as np

    from ...postprocessing.metric_scale import align_to_metric, load_sparse_depth

    sparse_file = find_sparse(options.sparse, result.source, result.stem)
    if sparse_file is None:
        raise ValueError(f"no sparse depth file for it under {options.sparse} (looked for {result.stem}"
                         f"[{'|'.join(SPARSE_NAME_SUFFIXES[1:])}].npy/csv/txt/png/tif)")
    sparse = load_sparse_depth(sparse_file, depth_scale=options.sparse_scale)
    if sparse.size is None:  # (u, v) are pixels of the input image
        sparse.size = (result.image.height, result.image.width)
    relative = depth if options.align_space == "depth" else np.asarray(result.prior, dtype=np.float32)
    return sparse_file, align_to_metric(relative, sparse, space=options.align_space, loss=options.align_loss,
                                        threshold=options.align_threshold)


def write_point_cloud(options: ExtraOptions, result: ImageResult) -> list[str]:
    """--formats ply: coloured points, metric when the alignment step succeeded, else z = depth + --ply-offset."""
    import numpy as np
    from PIL import Image

    from ...postprocessing.pointcloud import depth_to_ply, resolve_focal

    depth = np.asarray(result.depth, dtype=np.float32)  # [H, W]
    image, alignment, source = result.image, result.alignment, result.source
    H, W = depth.shape
    focal, how = resolve_focal(image, W, H, focal=options.focal, fov=options.fov, default_fov=DEFAULT_FOV,
                               name=str(source))
    rgb = np.asarray(image.convert("RGB").resize((W, H), Image.BILINEAR) if image.size != (W, H)
                     else image.convert("RGB"))  # [H, W, 3]
    if alignment is not None:
        z = alignment.depth_metric
        what = (f"metric depth (units of the sparse depths), {alignment.space}-space fit scale "
                f"{alignment.scale:.6g} shift {alignment.shift:.6g}")
    else:
        z = depth + options.ply_offset
        what = (f"affine-invariant depth (not metric): z = depth + {options.ply_offset:g}; shape correct only up "
                "to an unknown scale and shift")
    count = depth_to_ply(result.paths["ply"], z, rgb, focal, edge_threshold=options.edge_threshold or None,
                         binary=not options.ply_ascii,
                         comments=[f"apdepth point cloud of {source.name}", what, f"focal from {how}"])
    logger.debug("%s: %d points -> %s", source, count, result.paths["ply"])
    return []
