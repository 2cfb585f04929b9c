"""Sheet of random training samples (RGB | disparity) from a Hypersim-layout folder: python scripts/sample_sheet.py DIR OUT [N] [SEED]"""
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

root, out = Path(sys.argv[1]), sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 24
random.seed(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
lines = [ln.split() for ln in (root / "filename_list_train.txt").read_text().splitlines() if ln.strip()]
tiles = []
for rgbp, dp, *_ in random.sample(lines, n):
    rgb = np.asarray(Image.open(root / rgbp).convert("RGB").resize((128, 96)))
    d = np.asarray(Image.open(root / dp)).astype(np.float32)
    v = d > 0
    disp = np.where(v, 1 / np.maximum(d, 1), 0)
    lo, hi = np.percentile(disp[v], [2, 98])
    g = np.asarray(Image.fromarray((np.clip((disp - lo) / (hi - lo + 1e-9), 0, 1) * 255).astype(np.uint8)).resize((128, 96)))
    tiles.append(np.concatenate([rgb, np.repeat(g[..., None], 3, -1)], 1))
rows = [np.concatenate(tiles[i:i + 4], 1) for i in range(0, n, 4)]
Image.fromarray(np.concatenate(rows, 0)).save(out)
