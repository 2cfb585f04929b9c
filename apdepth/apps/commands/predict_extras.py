"""`apdepth predict` options beyond the depth map: metric scale from sparse depths, point clouds (PLY)
and test-time-augmentation uncertainty. Kept apart from predict.py, which calls into it."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

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


def check_arguments(args: argparse.Namespace) -> None:
    """The options of this module that can be checked without inputs or model (raises UsageError)."""
    if args.focal is not None and args.fov is not None:
        raise UsageError("--focal and --fov: give one of them")
    if args.focal is not None and not args.focal > 0:
        raise UsageError(f"--focal must be > 0 pixels, got {args.focal}")
    if args.fov is not None and not 0 < args.fov < 180:
        raise UsageError(f"--fov must be in (0, 180) degrees, got {args.fov}")
    if args.edge_threshold < 0:
        raise UsageError(f"--edge-threshold must be >= 0, got {args.edge_threshold}")
    if args.tta and args.no_match_input_res:
        raise UsageError("--tta needs outputs at the input size; drop --no-match-input-res")
    if args.tta_res is not None and (args.tta_res < 0 or not args.tta):
        raise UsageError("--tta-res needs --tta and a resolution >= 0")
    check_processing_res(args.tta_res, getattr(args, "max_processing_res", MAX_PROCESSING_RES), "--tta-res")
    if args.sparse_depth is not None and not args.sparse_depth.exists():
        raise UsageError(f"--sparse-depth: {args.sparse_depth}: no such file or folder")
    formats = getattr(args, "formats", None) or []
    if "exr" in formats:
        import importlib.util

        if importlib.util.find_spec("OpenEXR") is None:
            raise UsageError("--formats exr needs the OpenEXR package: pip install 'apdepth[exr]'")
    if "png16mm" in formats and args.sparse_depth is None:
        raise UsageError("--formats png16mm writes metric depth: it needs --sparse-depth")


@dataclass
class Extras:
    formats: list[str]
    sparse: Path | None
    sparse_scale: float
    align_space: str
    align_loss: str
    align_threshold: float | None
    focal: float | None
    fov: float | None
    edge_threshold: float
    ply_ascii: bool
    ply_offset: float
    tta: bool
    tta_res: int | None

    @classmethod
    def from_args(cls, args: argparse.Namespace, formats: list[str], num_inputs: int) -> Extras:
        if args.sparse_depth is not None:
            if args.sparse_depth.is_file() and num_inputs != 1:
                raise UsageError(f"--sparse-depth {args.sparse_depth} is one file but there are {num_inputs} "
                                 "inputs; pass a folder with one sparse file per image")
        check_arguments(args)
        return cls(formats, args.sparse_depth, args.sparse_scale, args.align_space, args.align_loss,
                   args.align_threshold, args.focal, args.fov, args.edge_threshold, args.ply_ascii,
                   args.ply_offset, args.tta, args.tta_res)

    @property
    def wants_prior(self) -> bool:
        return self.sparse is not None and self.align_space == "disparity"

    def paths(self, outdir: Path, stem: str) -> dict[str, Path]:
        keys = (["metric", "metric_json"] if self.sparse is not None else []) + (["std"] if self.tta else [])
        if self.sparse is not None:
            keys += [f"metric_{fmt}" for fmt in METRIC_FORMATS if fmt in self.formats]
        return {key: outdir / (stem + EXTRA_SUFFIXES[key]) for key in keys}

    # ---------------------------------------------------------------- prediction

    def predict(self, pipe, images: list, call: dict) -> list[dict]:
        """Per image: ``{"depth", "colored", "std", "prior"}`` (std/prior ``None`` when not asked for)."""
        if not self.tta:
            out = pipe(images, batch_size=len(images), output_prior=self.wants_prior, **call)
            colored = out.depth_colored or [None] * len(images)
            priors = out.prior if self.wants_prior else [None] * len(images)
            return [{"depth": d, "colored": c, "std": None, "prior": p}
                    for d, c, p in zip(out.depth, colored, priors)]
        from ...postprocessing.tta import predict_tta, second_resolution

        base = call["processing_resolution"]
        base = pipe.config.default_processing_resolution if base is None else base
        tta_call = {k: v for k, v in call.items()
                    if k not in ("match_input_resolution", "processing_resolution", "output_type")}
        results = []
        for image in images:  # each image with its flip in one batch
            second = self.tta_res if self.tta_res is not None else second_resolution(image.height, image.width, base)
            out = predict_tta(pipe, image, processing_resolutions=(base, second), batch_size=2, **tta_call)
            prior = None
            if self.wants_prior:
                prior = pipe(image, processing_resolution=base, output_prior=True, output_type="np").prior[0]
            results.append({"depth": out.depth[0], "colored": (out.depth_colored or [None])[0],
                            "std": out.depth_std[0], "prior": prior})
        return results

    # ---------------------------------------------------------------- outputs

    def find_sparse(self, source: Path, stem: str) -> Path | None:
        from ...postprocessing.metric_scale import SPARSE_EXTENSIONS

        if self.sparse.is_file():
            return self.sparse
        for name_suffix in SPARSE_NAME_SUFFIXES:
            for ext in SPARSE_EXTENSIONS:
                candidate = self.sparse / f"{stem}{name_suffix}{ext}"
                if candidate.is_file() and candidate.resolve() != source.resolve():
                    return candidate
        return None

    def write(self, source: Path, stem: str, paths: dict[str, Path], image, result: dict) -> list[str]:
        """Write the metric, std and PLY outputs of one image; returns problems (empty when all went well)."""
        import numpy as np

        from ...io import save_json, save_npy

        depth = np.asarray(result["depth"], dtype=np.float32)
        problems: list[str] = []
        alignment = None
        if self.sparse is not None:
            try:
                sparse_file, alignment = self._align(source, stem, image, depth, result["prior"])
                save_npy(paths["metric"], alignment.depth_metric)
                record = {"sparse_depth": str(sparse_file), **alignment.to_dict()}
                record.update(self._write_metric_formats(paths, alignment.depth_metric))
                save_json(paths["metric_json"], record)
                logger.info("%s: metric scale %.6g, shift %.6g (%s space), %d/%d sparse points inliers", source,
                            alignment.scale, alignment.shift, alignment.space, alignment.num_inliers,
                            alignment.num_points)
            except (OSError, ValueError) as e:
                problems.append(f"{source}: metric alignment failed ({e})")
        if result["std"] is not None:
            save_npy(paths["std"], np.asarray(result["std"], dtype=np.float32))
        if "ply" in paths:
            self._write_ply(paths["ply"], source, image, depth, alignment)
        return problems

    def _write_metric_formats(self, paths: dict[str, Path], depth_metric) -> dict:
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

    def _align(self, source: Path, stem: str, image, depth, prior):
        import numpy as np

        from ...postprocessing.metric_scale import align_to_metric, load_sparse_depth

        sparse_file = self.find_sparse(source, stem)
        if sparse_file is None:
            raise ValueError(f"no sparse depth file for it under {self.sparse} (looked for {stem}"
                             f"[{'|'.join(SPARSE_NAME_SUFFIXES[1:])}].npy/csv/txt/png/tif)")
        sparse = load_sparse_depth(sparse_file, depth_scale=self.sparse_scale)
        if sparse.size is None:  # (u, v) are pixels of the input image
            sparse.size = (image.height, image.width)
        relative = depth if self.align_space == "depth" else np.asarray(prior, dtype=np.float32)
        return sparse_file, align_to_metric(relative, sparse, space=self.align_space, loss=self.align_loss,
                                            threshold=self.align_threshold)

    def _write_ply(self, path: Path, source: Path, image, depth, alignment) -> None:
        import numpy as np
        from PIL import Image

        from ...postprocessing.pointcloud import depth_to_ply, resolve_focal

        H, W = depth.shape
        focal, how = resolve_focal(image, W, H, focal=self.focal, fov=self.fov, default_fov=DEFAULT_FOV,
                                   name=str(source))
        rgb = np.asarray(image.convert("RGB").resize((W, H), Image.BILINEAR) if image.size != (W, H)
                         else image.convert("RGB"))
        if alignment is not None:
            z = alignment.depth_metric
            what = (f"metric depth (units of the sparse depths), {alignment.space}-space fit scale "
                    f"{alignment.scale:.6g} shift {alignment.shift:.6g}")
        else:
            z = depth + self.ply_offset
            what = (f"affine-invariant depth (not metric): z = depth + {self.ply_offset:g}; shape correct only up "
                    "to an unknown scale and shift")
        count = depth_to_ply(path, z, rgb, focal, edge_threshold=self.edge_threshold or None,
                             binary=not self.ply_ascii,
                             comments=[f"apdepth point cloud of {source.name}", what, f"focal from {how}"])
        logger.debug("%s: %d points -> %s", source, count, path)
