"""Measure the evaluation options that can differ from Marigold's code, on procedural scenes with the
embedded model (the numbers of docs/fidelity.md, "Evaluation", and docs/evaluation.md)::

    python scripts/fidelity_evaluation.py [--frames 4] [--seed 0] [--json OUT.json]

Each frame is rendered by :mod:`apdepth.synth` (indoor rooms, exact depth), written in the real on-disk
format of the data set (ETH3D: RGB JPEG and raw float32 depth at 4032x6048, the rendering upsampled 6x;
DIODE: PNG, ``[H, W, 1]`` depth ``.npy`` and mask ``.npy`` at 768x1024, the mask dropping Kinect-like
holes), read back through the readers, predicted by the embedded model at the set's processing
resolution, and scored under each option. Synthetic rooms are not ETH3D or DIODE: the numbers show the
size of each effect on one kind of data, not the change on the real benchmarks.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from apdepth.data import get_dataset
from apdepth.evaluation.protocol import Protocol, evaluate_sample

logger = logging.getLogger(__name__)

KEYS = ("abs_rel", "delta1", "rmse", "scale", "shift")


def render_frames(num: int, size: tuple[int, int], seed: int):
    """``num`` (uint8 RGB ``[H, W, 3]``, float32 depth ``[H, W]`` (inf: nothing hit), hole mask) triples."""
    from apdepth.synth import encode
    from apdepth.synth.datasets import render_scene

    out = []
    for i in range(num):
        res = render_scene("nyu", seed, i, [i], size=size, keep_depth=True)
        rgb = np.asarray(Image.open(io.BytesIO(dict(res.files)[res.lines[0].split()[0]])).convert("RGB"))
        depth = res.depths[0].astype(np.float32)
        holes = encode.kinect_holes(depth, np.random.default_rng([seed, i]))
        out.append((rgb, depth, holes))
    return out


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_eth3d(folder: Path, frames, factor: int = 6) -> Path:
    """ETH3D's layout; depth inf where the render or the Kinect-like holes have none (as ETH3D's inf)."""
    from apdepth.synth import encode

    lines = []
    for i, (rgb, depth, holes) in enumerate(frames):
        rel_rgb = f"rgb/room_{i}/images/dslr_images/DSC_{i:04d}.JPG"
        rel_depth = f"depth/room_{i}_dslr_depth/room_{i}/ground_truth_depth/dslr_images/DSC_{i:04d}.JPG"
        big_rgb = rgb.repeat(factor, 0).repeat(factor, 1)
        big_depth = np.where(holes, np.float32(np.inf), depth).repeat(factor, 0).repeat(factor, 1)
        _save(folder / rel_rgb, encode.jpg_bytes(big_rgb))
        _save(folder / rel_depth, big_depth.astype("<f4").tobytes())
        lines.append(f"{rel_rgb} {rel_depth}")
    split = folder.parent / "eth3d_split.txt"
    split.write_text("".join(line + "\n" for line in lines))
    return split


def write_diode(folder: Path, frames) -> Path:
    """DIODE's layout; the provided mask drops the holes, whose depth is stored as 0."""
    from apdepth.synth import encode

    lines = []
    for i, (rgb, depth, holes) in enumerate(frames):
        stem = f"indoors/scene_{i:05d}/scan_{i:05d}/{i:05d}_{i:05d}_indoors_000_000"
        _save(folder / f"{stem}.png", encode.png_bytes(rgb))
        _save(folder / f"{stem}_depth.npy", encode.npy_bytes(np.where(holes, np.float32(0), depth).astype(np.float32)[..., None]))
        _save(folder / f"{stem}_depth_mask.npy", encode.npy_bytes((~holes).astype(np.float32)))
        lines.append(f"{stem}.png {stem}_depth.npy {stem}_depth_mask.npy")
    split = folder.parent / "diode_split.txt"
    split.write_text("".join(line + "\n" for line in lines))
    return split


def predict(pipe, sample: dict, processing_resolution: int) -> torch.Tensor:
    out = pipe(sample["rgb"], processing_resolution=processing_resolution, match_input_resolution=False,
               output_type="pt")
    return out.depth.reshape(out.depth.shape[-2:]).float()  # [h, w]


def score(variants: dict[str, tuple], pipe, base: Protocol) -> dict[str, dict]:
    """``variants``: name -> (dataset, protocol overrides). Means over the frames, plus valid pixel counts."""
    results = {}
    cache: dict[int, torch.Tensor] = {}
    for name, (ds, overrides) in variants.items():
        protocol = Protocol(**{**base.__dict__, **overrides})
        rows = []
        for i in range(len(ds)):
            sample = ds[i]
            if i not in cache:
                cache[i] = predict(pipe, sample, base.processing_resolution)
            rows.append(evaluate_sample(cache[i], sample, protocol))
        results[name] = {k: float(np.mean([r[k] for r in rows])) for k in (*KEYS, "n_valid")}
        logger.info("%s: %s", name, results[name])
    return results


def nonfinite_effect(pipe, ds, base: Protocol) -> dict:
    """One NaN pixel in the first frame's prediction: apdepth's numbers against the clean prediction's
    (Marigold's code would report NaN for the frame and for the data set's mean)."""
    sample = ds[0]
    pred = predict(pipe, sample, base.processing_resolution)
    clean = evaluate_sample(pred, sample, base)
    big = torch.nn.functional.interpolate(pred[None, None], size=sample["depth"].shape[-2:], mode="bilinear",
                                          antialias=True, align_corners=False)[0, 0]
    ys, xs = torch.nonzero(sample["valid_mask"][0], as_tuple=True)
    big[ys[len(ys) // 2], xs[len(xs) // 2]] = math.nan
    broken = evaluate_sample(big, sample, base)
    return {"n_nonfinite": broken["n_nonfinite"],
            **{f"delta_{k}": abs(broken[k] - clean[k]) for k in ("abs_rel", "delta1", "rmse")}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=4, help="frames per data set (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default: 0)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from apdepth.embedded import embedded_model_path
    from apdepth.pipeline import ApDepthPipeline

    torch.manual_seed(0)
    pipe = ApDepthPipeline.from_pretrained(str(embedded_model_path()))
    pipe.set_progress_bar_config(disable=True)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        eth_split = write_eth3d(tmp / "eth3d", render_frames(args.frames, (672, 1008), args.seed))
        eth = get_dataset("eth3d", tmp / "eth3d", eth_split)
        base = Protocol.for_dataset(eth, edge_metrics=False)
        report["eth3d"] = score({"width (default, Marigold)": (eth, {}),
                                 "both": (eth, {"alignment_subsample": "both"}),
                                 "full resolution": (eth, {"alignment_max_resolution": None})}, pipe, base)
        del eth
        for path in (tmp / "eth3d").rglob("*"):  # free the disk before DIODE
            if path.is_file():
                path.unlink()
        diode_split = write_diode(tmp / "diode", render_frames(args.frames, (768, 1024), args.seed + 1))
        sets = {m: get_dataset("diode", tmp / "diode", diode_split, mask=m) for m in ("paper", "marigold", "range")}
        base = Protocol.for_dataset(sets["paper"], edge_metrics=False)
        report["diode"] = score({f"{m}{' (default)' if m == 'paper' else ''}": (ds, {}) for m, ds in sets.items()},
                                pipe, base)
        report["nonfinite"] = nonfinite_effect(pipe, sets["marigold"], base)
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
