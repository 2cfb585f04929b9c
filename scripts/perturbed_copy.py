"""A copy of a Hypersim-layout folder whose RGB images went through the prior's photometric augmentation
(apdepth.embedded.pretraining.photometric, every image) plus sensor noise; depth files are linked, not
copied. For stage-2 experiments: the frozen prior then sees inputs it was not fitted to, as on photographs.
python scripts/perturbed_copy.py SRC DST [SEED]"""
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from apdepth.embedded.pretraining import photometric

src, dst = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
gen = torch.Generator().manual_seed(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
lines = [ln.split() for ln in (src / "filename_list_train.txt").read_text().splitlines() if ln.strip()]
for rgb_rel, depth_rel, *_ in lines:
    (dst / rgb_rel).parent.mkdir(parents=True, exist_ok=True)
    rgb = torch.from_numpy(np.asarray(Image.open(src / rgb_rel).convert("RGB"))).permute(2, 0, 1)[None].float()
    x = photometric(rgb / 127.5 - 1.0, 1.0, gen)
    x = x + torch.randn(x.shape, generator=gen) * float(torch.rand(1, generator=gen)) * 0.06
    out = ((x.clamp(-1, 1) + 1) * 127.5).round().byte()[0].permute(1, 2, 0).numpy()
    Image.fromarray(out).save(dst / rgb_rel)
    if not (dst / depth_rel).exists():
        os.symlink(src / depth_rel, dst / depth_rel)
(dst / "filename_list_train.txt").write_text((src / "filename_list_train.txt").read_text())
