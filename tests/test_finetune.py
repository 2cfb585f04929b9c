"""End to end: fine-tune the embedded demo model on a folder of your own RGB-D and beat it on held-out frames.

The embedded model was trained on procedural rooms, open-air scenes and close-ups, never on the street
scenes that ``apdepth synth vkitti`` renders with exact depth; they are converted into the generic folder layout (one depth format per
frame: npy, EXR, float TIFF, 16-bit PNG in millimetres), the first four streets train, the last two are
held out. Full fine-tuning and LoRA both start from the embedded model (``model.init_from=embedded``) and
must lower the held-out AbsRel (per-image least-squares alignment, apdepth's evaluation protocol).

Margins measured while developing (60 steps, batch 4; held-out AbsRel fine-tuned / embedded, scene seeds 0-2
through ``APDEPTH_FINETUNE_TEST_SEED``) are in docs/training.md, "Fine-tune on your data".
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from apdepth import ApDepthPipeline
from apdepth.apps.cli import main as cli_main
from apdepth.data import VirtualKITTIDataset, get_dataset
from apdepth.data.folder import write_sample, write_split
from apdepth.embedded import embedded_model_path
from apdepth.evaluation.protocol import Protocol
from apdepth.evaluation.runner import PipelinePredictor, evaluate_dataset
from apdepth.training.config import build_config
from apdepth.training.loop import train

PRESET = Path(__file__).resolve().parents[1] / "apdepth" / "configs" / "finetune_folder.yaml"
SEED = int(os.environ.get("APDEPTH_FINETUNE_TEST_SEED", "0"))  # the scenes; other seeds check the margins
SIZE = "96x128"
FRAMES, PER_STREET, TRAIN_STREETS = 24, 4, 4
FORMATS = ("npy", "exr" if importlib.util.find_spec("OpenEXR") else "npy", "tiff", "png16")  # EXR: finetune extra
STEPS = 60


@pytest.fixture(scope="module")
def street_folder(tmp_path_factory):
    """``apdepth synth vkitti`` output converted to the folder layout, with train.txt and val.txt."""
    work = tmp_path_factory.mktemp("finetune")
    synth = work / "synth"
    assert cli_main(["synth", "vkitti", "-o", str(synth), "-n", str(FRAMES), "--size", SIZE,
                     "--frames-per-scene", str(PER_STREET), "--seed", str(SEED)]) == 0
    src = VirtualKITTIDataset(synth, synth / "vkitti_train.txt", benchmark_crop=False)
    folder = work / "my_rgbd"
    rgb_paths = []
    for i in range(len(src)):
        s = src[i]
        depth = torch.where(s["valid_mask"], s["depth"], 0.0)[0].numpy()  # sky (beyond 80 m) -> 0 = invalid
        rel = write_sample(folder, f"street{i // PER_STREET}/{i % PER_STREET:04d}", s["rgb"].permute(1, 2, 0).numpy(),
                           depth, FORMATS[i % len(FORMATS)])
        rgb_paths.append(rel[0])
    cut = TRAIN_STREETS * PER_STREET
    write_split(folder / "train.txt", rgb_paths[:cut])
    write_split(folder / "val.txt", rgb_paths[cut:])
    return folder


def held_out_abs_rel(model, folder, outdir) -> float:
    pipe = ApDepthPipeline.from_pretrained(model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    ds = get_dataset("folder", folder, folder / "val.txt", depth_scale=0.001)
    protocol = Protocol.for_dataset(ds, processing_resolution=0, edge_metrics=False)
    result = evaluate_dataset(ds, PipelinePredictor(pipe, 0), outdir, protocol, progress=False)
    assert result.ok and result.summary["evaluated"] == len(ds) == FRAMES - TRAIN_STREETS * PER_STREET
    return result.summary["metrics"]["abs_rel"]


@pytest.fixture(scope="module")
def embedded_abs_rel(street_folder):
    return held_out_abs_rel(embedded_model_path(), street_folder, street_folder.parent / "eval_embedded")


def finetune(folder, output_dir, overrides):
    cfg = build_config(PRESET, [
        f"run.output_dir={output_dir}", "model.init_from=embedded", f"data.folder.root={folder}",
        f"data.folder.split={folder / 'train.txt'}", "data.folder.depth_scale=0.001", "data.num_workers=0",
        "data.batch_size=4", "optim.effective_batch=4", f"optim.max_steps={STEPS}", "optim.warmup_steps=0",
        f"stage2.phase1_steps={STEPS}", "run.checkpoint_every=1000", "run.log_every=5", *overrides])
    losses = []
    final = train(cfg, on_step=lambda step, logged: losses.append(logged.get("train/loss")))
    return final, [v for v in losses if v is not None]


def test_full_finetune_beats_the_embedded_model(street_folder, embedded_abs_rel, tmp_path):
    final, losses = finetune(street_folder, tmp_path / "run", ["optim.lr=1e-4"])
    assert losses[-1] < losses[0]
    tuned = held_out_abs_rel(final, street_folder, tmp_path / "eval")
    print(f"full fine-tuning: held-out AbsRel {embedded_abs_rel:.4f} -> {tuned:.4f} ({tuned / embedded_abs_rel:.3f})")
    assert tuned < 0.9 * embedded_abs_rel, (tuned, embedded_abs_rel)
    saved = ApDepthPipeline.from_pretrained(final)
    assert saved.prior is not None and saved.config.prior_preprocessing == "compat"  # the embedded prior kept


def test_lora_finetune_merges_into_a_plain_pipeline(street_folder, embedded_abs_rel, tmp_path):
    pytest.importorskip("peft")
    final, _ = finetune(street_folder, tmp_path / "run", ["optim.lr=1e-3", "lora.rank=8"])
    tuned = held_out_abs_rel(final, street_folder, tmp_path / "eval")
    print(f"LoRA: held-out AbsRel {embedded_abs_rel:.4f} -> {tuned:.4f} ({tuned / embedded_abs_rel:.3f})")
    assert tuned < 0.9 * embedded_abs_rel, (tuned, embedded_abs_rel)
    merged = ApDepthPipeline.from_pretrained(final, dtype=torch.float32)
    base = ApDepthPipeline.from_pretrained(embedded_model_path(), dtype=torch.float32)
    changed = [k for k, v in merged.unet.state_dict().items() if not torch.equal(v, base.unet.state_dict()[k])]
    assert changed and all(".attn" in k or "resnets" in k for k in changed)  # only the LoRA targets moved
    assert set(merged.unet.state_dict()) == set(base.unet.state_dict())  # no peft keys left
    # the adapter alone, applied to the starting model as documented, gives the merged model's output
    base.unet.load_lora_adapter(str(final.parent / "lora"), prefix=None, use_safetensors=True)
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    for pipe in (merged, base):
        pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        a = merged(x, processing_resolution=0, output_type="pt").depth
        b = base(x, processing_resolution=0, output_type="pt").depth
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert np.isfinite(a.numpy()).all()
