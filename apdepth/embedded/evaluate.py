"""Held-out numbers for the model card: the model, its prior alone, and two trivial baselines.

All four go through the same evaluation runner and protocol as ``apdepth evaluate`` (affine
least-squares alignment per image, then AbsRel, delta1 and boundary F1). The prior predicts
disparity, so it is aligned in disparity space; the others in depth space.

A fifth row is a reference, not a method: the ground truth itself, resampled to the processing
resolution and back. Boundary F1 counts pixel-exact occluding contours at full resolution, so this
row is what any prediction made at that resolution can reach at best.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..data import get_dataset
from ..evaluation.protocol import Protocol
from ..evaluation.runner import PipelinePredictor, evaluate_dataset
from ..pipeline import ApDepthPipeline, processing_size, resize

logger = logging.getLogger(__name__)

METHODS = ("apdepth", "prior", "constant", "ramp", "gt_resampled")
REPORTED = ("abs_rel", "delta1", "boundary_f1")


class PriorPredictor:
    """The pipeline's prior alone on the image resized like the pipeline resizes it: disparity ``[h, w]``."""

    def __init__(self, pipe: ApDepthPipeline, processing_resolution: int):
        self.pipe, self.processing_resolution = pipe, processing_resolution

    @torch.no_grad()
    def __call__(self, samples: list[dict]) -> list[torch.Tensor]:
        out = []
        for s in samples:
            rgb = s["rgb"].float()[None] / 255.0  # [1, 3, H, W]
            size = processing_size(*rgb.shape[-2:], self.processing_resolution)
            rgb = resize(rgb, size, "bilinear").clamp(0, 1) * 2.0 - 1.0
            out.append(self.pipe.run_prior(rgb.to(self.pipe.device))[0, 0].float().cpu())
        return out


def constant_depth(samples: list[dict]) -> list[torch.Tensor]:
    """One depth for every pixel: after alignment, each image's mean ground-truth depth."""
    return [torch.ones(s["rgb"].shape[-2:]) for s in samples]


def ground_plane_ramp(samples: list[dict]) -> list[torch.Tensor]:
    """Depth growing linearly from the bottom row (near) to the top row (far), as on an open floor or road."""
    out = []
    for s in samples:
        height, width = s["rgb"].shape[-2:]
        rows = torch.linspace(1.0, 0.0, height)[:, None]  # top 1 (far) -> bottom 0 (near)
        out.append(rows.expand(height, width).clone())
    return out


class ResampledGroundTruth:
    """The ground truth at the processing resolution (bilinear; the runner resizes it back): ``[h, w]``.

    Invalid pixels take the image's median valid depth first, so that they do not bleed zeros across
    the valid ones when resizing.
    """

    def __init__(self, processing_resolution: int):
        self.processing_resolution = processing_resolution

    def __call__(self, samples: list[dict]) -> list[torch.Tensor]:
        out = []
        for s in samples:
            depth, valid = s["depth"].float(), s["valid_mask"].bool()  # [1, H, W] each
            fill = depth[valid].median() if valid.any() else depth.new_tensor(1.0)
            depth = torch.where(valid, depth, fill)
            size = processing_size(*depth.shape[-2:], self.processing_resolution)
            out.append(resize(depth[None], size, "bilinear")[0, 0])
        return out


def evaluate_all(model_dir: str | os.PathLike, outdir: str | os.PathLike, sets: dict[str, tuple[Path, Path]],
                 processing_resolution: dict[str, int], device: torch.device | str = "cpu") -> dict:
    """Evaluate the four methods and the reference on each held-out set; returns ``{set: {method: summary}}``."""
    pipe = ApDepthPipeline.from_pretrained(model_dir, dtype=torch.float32).to(device)  # as `apdepth evaluate` loads it
    pipe.set_progress_bar_config(disable=True)
    results: dict[str, dict] = {}
    for name, (data, split) in sets.items():
        dataset = get_dataset(name, data, split)
        res = processing_resolution[name]
        predictors = {
            "apdepth": (PipelinePredictor(pipe, res), "depth"),
            "prior": (PriorPredictor(pipe, res), "disparity"),
            "constant": (constant_depth, "depth"),
            "ramp": (ground_plane_ramp, "depth"),
            "gt_resampled": (ResampledGroundTruth(res), "depth"),
        }
        results[name] = {}
        for method, (predictor, space) in predictors.items():
            protocol = Protocol.for_dataset(dataset, processing_resolution=res, alignment_space=space)
            result = evaluate_dataset(dataset, predictor, Path(outdir) / name / method, protocol,
                                      source={"method": method, "model": str(model_dir)}, progress=False)
            results[name][method] = result.summary
            logger.info("%s / %s: %s", name, method,
                        ", ".join(f"{k} {result.summary['metrics'].get(k, float('nan')):.4f}" for k in REPORTED))
    return results


PHOTOS = Path(__file__).resolve().parent / "photos"
WHDR_IMAGES = Path(__file__).resolve().parents[1] / "evaluation" / "whdr_data" / "images"
EXAMPLE_PHOTOS = (PHOTOS / "cheetah_cub.jpg", WHDR_IMAGES / "bikes_125.jpg", WHDR_IMAGES / "china.jpg")


def evaluate_whdr_photos(model_dir: str | os.PathLike, output: str | os.PathLike,
                         device: torch.device | str = "cpu") -> dict:
    """``apdepth evaluate-whdr --model MODEL`` (model, prior, ramp, constant over the shipped labelled pairs)
    at the model's default processing resolution, fp32; the report is also written to ``output``."""
    from ..evaluation.whdr import DEFAULT_IMAGES, DEFAULT_LABELS, METHODS, evaluate_whdr, read_labels
    from ..io import save_json

    pipe = ApDepthPipeline.from_pretrained(model_dir, dtype=torch.float32).to(device)
    pipe.set_progress_bar_config(disable=True)
    labels = read_labels(DEFAULT_LABELS)
    report = {"images": len(labels), "pairs": sum(len(p) for p in labels.values()),
              "processing_resolution": pipe.config.default_processing_resolution,
              **evaluate_whdr(labels, DEFAULT_IMAGES, list(METHODS), pipe)}
    save_json(output, report)
    logger.info("WHDR on real photographs: %s", ", ".join(f"{k} {v:.3f}" for k, v in report["whdr"].items()))
    return report


def _to_grey(values: np.ndarray) -> np.ndarray:
    """Min-max normalised ``[h, w]`` -> uint8 (2nd / 98th percentiles, so a few outliers do not flatten it)."""
    lo, hi = np.percentile(values, [2, 98])
    return (np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def example_pictures(model_dir: str | os.PathLike, outdir: str | os.PathLike, photos=EXAMPLE_PHOTOS,
                     height: int = 160, device: torch.device | str = "cpu") -> list[Path]:
    """For each photograph, a PNG of the photograph, the model's depth and its prior's disparity side by side
    (near bright, far dark; each ``height`` pixels high). Photographs that are missing are skipped."""
    from PIL import Image

    pipe = ApDepthPipeline.from_pretrained(model_dir, dtype=torch.float32).to(device)
    pipe.set_progress_bar_config(disable=True)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in photos:
        if not Path(path).is_file():
            logger.warning("%s: example photograph missing; skipped", path)
            continue
        image = Image.open(path).convert("RGB")
        out = pipe(image, match_input_resolution=False, output_type="np", output_prior=True)
        depth, prior = out.depth[0], out.prior[0]  # [h, w] each: depth near small, disparity near large
        width = round(height * image.width / image.height)
        panels = [np.asarray(image.resize((width, height), Image.LANCZOS))]
        for grey in (_to_grey(-depth), _to_grey(prior)):
            panel = Image.fromarray(grey).resize((width, height), Image.BILINEAR)
            panels.append(np.repeat(np.asarray(panel)[..., None], 3, axis=-1))
        gap = np.full((height, 4, 3), 255, np.uint8)
        strip = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
        target = outdir / f"{Path(path).stem}.png"
        Image.fromarray(strip).save(target, optimize=True)
        written.append(target)
    return written
