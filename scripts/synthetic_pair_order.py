"""Diagnosis: how often the model and its prior order random point pairs of synthetic images the wrong way
round (a WHDR with ground truth: pairs whose depths differ by 1.5x or more), split by scene kind and by
whether the pair's farther point is beyond 20 m (so the near pairs of scenes with sky are seen apart).
python scripts/synthetic_pair_order.py MODEL_DIR HYPERSIM_FOLDER [N_IMAGES]"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from apdepth.pipeline import ApDepthPipeline

model, root = sys.argv[1], Path(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 120
pipe = ApDepthPipeline.from_pretrained(model, dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
kinds = {m["rgb"]: m.get("room") for m in json.loads((root / "synth_meta.json").read_text())["frames"]}
lines = [ln.split() for ln in (root / "filename_list_train.txt").read_text().splitlines() if ln.strip()]
rng = np.random.default_rng(0)
tally = {}
for rgb_rel, depth_rel in lines[:: max(1, len(lines) // n)]:
    kind = {"open_air": "open", "closeup": "closeup"}.get(kinds[rgb_rel], "room")
    image = Image.open(root / rgb_rel).convert("RGB")
    gt = np.asarray(Image.open(root / depth_rel)).astype(np.float32) / 1000.0
    out = pipe(image, match_input_resolution=True, output_type="np", output_prior=True)
    maps = {"model": out.depth[0], "prior": -out.prior[0]}
    h, w = gt.shape
    ys, xs = rng.integers(0, h, (2, 600)), rng.integers(0, w, (2, 600))
    g1, g2 = gt[ys[0], xs[0]], gt[ys[1], xs[1]]
    keep = (g1 > 0) & (g2 > 0) & (np.maximum(g1, g2) > 1.5 * np.minimum(g1, g2))
    far = np.maximum(g1, g2) > 20.0
    for name, m in maps.items():
        wrong = (m[ys[0], xs[0]] < m[ys[1], xs[1]]) != (g1 < g2)
        for band, sel in (("near", keep & ~far), ("far", keep & far)):
            t = tally.setdefault((kind, band, name), [0, 0])
            t[0] += int(wrong[sel].sum())
            t[1] += int(sel.sum())
for (kind, band, name), (bad, total) in sorted(tally.items()):
    print(f"{kind:8s} {band:5s} {name:6s} wrong {bad / max(total, 1):.3f} of {total}")
