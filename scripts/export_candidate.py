"""Export a trained pipeline folder as the recipe's export step does (fp16 weights, default processing
resolution 256, no recipe paths in the configs) and write its WHDR report next to it.
python scripts/export_candidate.py TRAINED_FOLDER OUT_FOLDER"""
import shutil
import sys
from pathlib import Path

import torch

from apdepth.embedded.evaluate import evaluate_whdr_photos
from apdepth.embedded.recipe import PROCESSING_RES, strip_load_paths
from apdepth.pipeline import ApDepthPipeline

src, out = Path(sys.argv[1]), Path(sys.argv[2])
pipe = ApDepthPipeline.from_pretrained(src)
pipe.register_to_config(default_processing_resolution=PROCESSING_RES["nyu"], prior_name=None)
shutil.rmtree(out, ignore_errors=True)
pipe.to(dtype=torch.float16).save_pretrained(out)
strip_load_paths(out)
report = evaluate_whdr_photos(out, out.parent / f"{out.name}_whdr.json")
print({k: round(v, 4) for k, v in report["whdr"].items()})
print(f"{sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 1e6:.1f} MB")
