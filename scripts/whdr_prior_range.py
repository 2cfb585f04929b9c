"""Diagnosis: does the range of the prior's maps on real photographs explain the model's WHDR?

Prints the prior's 2nd / 50th / 98th percentiles (mean, std, min, max over images) on the labelled photographs
and on every 17th image of a training folder, then the model's WHDR with each prior map as it is and
stretched to the training range (min-max, and 1st-99th percentiles, to [0.005, 0.935]) before it is encoded.

    python scripts/whdr_prior_range.py MODEL_DIR|embedded TRAIN_FOLDER
"""
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from apdepth.evaluation.whdr import DEFAULT_IMAGES, DEFAULT_LABELS, evaluate_whdr, read_labels
from apdepth.pipeline import ApDepthPipeline

model, train = sys.argv[1], Path(sys.argv[2])
if model == "embedded":
    from apdepth.embedded import WEIGHTS_DIR as model
pipe = ApDepthPipeline.from_pretrained(model, dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
original = pipe.run_prior


def percentiles(paths) -> None:
    rows = []
    for path in paths:
        out = pipe(Image.open(path).convert("RGB"), processing_resolution=256, match_input_resolution=False,
                   output_type="np", output_prior=True)
        rows.append(np.percentile(out.prior[0], [2, 50, 98]))
    rows = np.array(rows)  # [N, 3]
    for name, values in (("mean", rows.mean(0)), ("std", rows.std(0)), ("min", rows.min(0)), ("max", rows.max(0))):
        print(f"  {name:<4} p2 {values[0]:.3f}  p50 {values[1]:.3f}  p98 {values[2]:.3f}")


print("prior on the photographs:")
percentiles(sorted(DEFAULT_IMAGES.glob("*.jpg")))
print("prior on the training images (every 17th):")
percentiles(sorted(train.glob("*/rgb_*.png"))[::17])


def stretched(kind: str):
    def run(rgb: torch.Tensor) -> torch.Tensor:
        disp = original(rgb)  # [B, 1, H, W]
        flat = disp.flatten(1)
        if kind == "min-max":
            lo, hi = flat.min(1).values, flat.max(1).values
        else:
            lo, hi = flat.quantile(0.01, 1), flat.quantile(0.99, 1)
        lo, hi = lo.view(-1, 1, 1, 1), hi.view(-1, 1, 1, 1)
        return (disp - lo) / (hi - lo).clamp_min(1e-6) * 0.93 + 0.005

    return run


labels = read_labels(DEFAULT_LABELS)
for kind in ("as is", "min-max", "percentiles"):
    pipe.run_prior = original if kind == "as is" else stretched(kind)
    report = evaluate_whdr(labels, DEFAULT_IMAGES, ["model"], pipe=pipe, processing_resolution=256)
    worst = sorted(report["per_image"].items(), key=lambda kv: -kv[1]["model"])[:3]
    print(f"prior maps {kind:<12} model WHDR {report['whdr']['model']:.3f}; worst: "
          + ", ".join(f"{name} {row['model']:.2f}" for name, row in worst))
