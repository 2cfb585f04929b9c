"""Contact sheet of the WHDR photographs: photo | model depth | prior (near bright), for a model folder."""
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from apdepth.embedded.evaluate import _to_grey
from apdepth.evaluation.whdr import DEFAULT_IMAGES
from apdepth.pipeline import ApDepthPipeline

model, out = sys.argv[1], sys.argv[2]
if model == "embedded":
    from apdepth.embedded import WEIGHTS_DIR as model
pipe = ApDepthPipeline.from_pretrained(model, dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
rows = []
h = 120
for path in sorted(Path(DEFAULT_IMAGES).glob("*.jpg")):
    image = Image.open(path).convert("RGB")
    o = pipe(image, match_input_resolution=False, output_type="np", output_prior=True)
    w = round(h * image.width / image.height)
    panels = [np.asarray(image.resize((w, h)))]
    for g in (_to_grey(-o.depth[0]), _to_grey(o.prior[0])):
        panels.append(np.repeat(np.asarray(Image.fromarray(g).resize((w, h)))[..., None], 3, -1))
    strip = np.concatenate([p for q in panels for p in (q, np.full((h, 3, 3), 255, np.uint8))], 1)
    rows.append(strip)
W = max(r.shape[1] for r in rows)
rows = [np.pad(r, ((0, 3), (0, W - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
half = (len(rows) + 1) // 2
a, b = np.concatenate(rows[:half]), np.concatenate(rows[half:])
b = np.pad(b, ((0, a.shape[0] - b.shape[0]), (0, 0), (0, 0)), constant_values=255)
Image.fromarray(np.concatenate([a, b], 1)).save(out)
