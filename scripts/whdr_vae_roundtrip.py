"""Diagnosis: WHDR of the prior's disparity after the VAE (encode, decode), i.e. what the UNet's input keeps
and what its output can express. python scripts/whdr_vae_roundtrip.py MODEL_DIR"""
import sys

import torch

from apdepth.diffusion import decode_depth, encode_latent
from apdepth.evaluation.whdr import DEFAULT_IMAGES, DEFAULT_LABELS, evaluate_whdr, read_labels
from apdepth.pipeline import ApDepthPipeline

model = sys.argv[1]
if model == "embedded":
    from apdepth.embedded import WEIGHTS_DIR as model
pipe = ApDepthPipeline.from_pretrained(model, dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
run_prior = pipe.run_prior


@torch.no_grad()
def roundtrip(rgb):
    disp = run_prior(rgb)
    return decode_depth(pipe.vae, encode_latent(pipe.vae, disp.expand(-1, 3, -1, -1)))


pipe.run_prior = roundtrip
r = evaluate_whdr(read_labels(DEFAULT_LABELS), DEFAULT_IMAGES, ["prior"], pipe)
print(f"prior through the VAE: WHDR {r['whdr']['prior']:.3f}")
