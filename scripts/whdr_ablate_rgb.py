"""Diagnosis: the model's WHDR when the UNet's RGB latent is replaced (zeros; the latent of a blurred or a
grey copy of the photo), to see how much of the model's ordering on real photographs comes from the RGB branch.
python scripts/whdr_ablate_rgb.py MODEL_DIR"""
import sys

import torch
import torch.nn.functional as F

from apdepth.diffusion import encode_latent
from apdepth.evaluation.whdr import DEFAULT_IMAGES, DEFAULT_LABELS, evaluate_whdr, read_labels
from apdepth.pipeline import ApDepthPipeline

model = sys.argv[1]
if model == "embedded":
    from apdepth.embedded import WEIGHTS_DIR as model
pipe = ApDepthPipeline.from_pretrained(model, dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
original = pipe.encode_condition
labels = read_labels(DEFAULT_LABELS)


def variant(kind):
    def encode(rgb, prior_disp=None, rgb_latent=None):
        cond = original(rgb, prior_disp, rgb_latent)  # [B, 8, h, w]: prior latent, RGB latent
        if kind == "zeros":
            cond[:, 4:] = 0
        elif kind == "blur":
            cond[:, 4:] = encode_latent(pipe.vae, F.avg_pool2d(rgb, 9, 1, 4, count_include_pad=False))
        elif kind == "grey":
            cond[:, 4:] = encode_latent(pipe.vae, rgb.mean(1, keepdim=True).expand_as(rgb))
        elif kind == "prior_zero":
            cond[:, :4] = 0
        return cond
    return encode


for kind in ("none", "zeros", "blur", "grey", "prior_zero"):
    pipe.encode_condition = variant(kind)
    r = evaluate_whdr(labels, DEFAULT_IMAGES, ["model"], pipe)
    worst = sorted(r["per_image"].items(), key=lambda kv: -kv[1]["model"])[:3]
    print(f"{kind:10s} model WHDR {r['whdr']['model']:.3f}; worst: "
          + ", ".join(f"{name} {row['model']:.2f}" for name, row in worst), flush=True)
