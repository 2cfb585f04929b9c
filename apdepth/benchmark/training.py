"""Training-step benchmark: one stage-2 optimizer step (phase 1: latent MSE + pixel L1 through the
frozen VAE decoder) on the benchmark's full-size models, with the training speed-ups on and off.

Each row is a whole step: inputs (encoded, or read from the latent cache), UNet forward, VAE decode,
losses, backward, Adam update. It reuses the training code itself (:class:`~apdepth.training.Stage2`,
:func:`~apdepth.training.inputs.encode_inputs`, :class:`~apdepth.training.inputs.TrainModule`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from typing import NamedTuple

import torch

from ..training.config import Stage2Config
from ..training.inputs import TrainModule, encode_inputs
from ..training.stage2 import Stage2
from .report import Row

logger = logging.getLogger(__name__)



class Variant(NamedTuple):
    setting: str
    use_cache: bool  # inputs read from the latent cache instead of encoded every step
    checkpointing: bool  # gradient checkpointing in the UNet and the VAE
    fused: bool  # fused Adam
    autocast: torch.dtype | None
    crop: bool  # pixel L1 on a half-size crop (stage2.l1_crop)


VARIANTS = (
    Variant("step: raw inputs (encode every step)", False, False, False, None, False),
    Variant("step: latent cache", True, False, False, None, False),
    Variant("step: cache + gradient checkpointing", True, True, False, None, False),
    Variant("step: cache + fused Adam", True, False, True, None, False),
    Variant("step: cache + L1 on a 1/4-area crop", True, False, False, None, True),
    Variant("step: cache + checkpointing + fused + bf16", True, True, True, torch.bfloat16, False),
)


def half_crop(height: int, width: int) -> str:
    """``stage2.l1_crop`` of half the height and width (1/4 of the area), in multiples of 8."""
    return f"{max(8, height // 16 * 8)}x{max(8, width // 16 * 8)}"


def training_batch(batch: int, height: int, width: int, device: torch.device, seed: int = 0) -> dict:
    """A synthetic training micro-batch in the training view's format."""
    gen = torch.Generator().manual_seed(seed)
    rgb = torch.rand(batch, 3, height, width, generator=gen) * 2 - 1
    depth = torch.rand(batch, 1, height, width, generator=gen) * 2 - 1
    valid = torch.rand(batch, 1, height, width, generator=gen) > 0.1
    return {"rgb": rgb.to(device), "depth_norm": depth.to(device), "valid_mask": valid.to(device)}


def training_step_rows(bench, batch: int, resolution: tuple[int, int], bf16: bool) -> None:
    """Append one row per variant to ``bench.rows`` (fp32 weights; the last variant autocasts to bf16)."""
    pipe = bench.pipe
    bench.set_dtype("fp32")
    pipe.set_channels_last(False)  # as `apdepth train` runs
    height, width = resolution
    data = training_batch(batch, height, width, bench.device)
    stages = (Stage2(Stage2Config(), pipe.vae),  # full-size pixel L1, then on a half-size crop
              Stage2(Stage2Config(l1_crop=half_crop(height, width)), pipe.vae, torch.Generator().manual_seed(0)))
    inputs = {"raw": data, "cached": encode_inputs(pipe, data)}  # "cached": what the latent cache holds
    pipe.unet.requires_grad_(True).train()
    try:
        for variant in VARIANTS:
            if variant.autocast is None or bf16:
                _time_variant(bench, variant, batch, resolution, inputs, stages)
    finally:
        pipe.unet.requires_grad_(False).eval()
        pipe.unet.zero_grad(set_to_none=True)
        pipe.set_channels_last(bench.channels_last)


def _time_variant(bench, variant: Variant, batch: int, resolution: tuple[int, int], inputs: dict,
                  stages: tuple[Stage2, Stage2]) -> None:
    """One row: a whole optimizer step under ``variant``, or an "out of memory" row."""
    pipe, device, unet = bench.pipe, bench.device, bench.pipe.unet
    height, width = resolution
    module = TrainModule(pipe)
    if variant.checkpointing:
        unet.enable_gradient_checkpointing()
        pipe.vae.enable_gradient_checkpointing()
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-9, fused=variant.fused or None)

    def step(optimizer=optimizer):
        step_inputs = inputs["cached"] if variant.use_cache else encode_inputs(pipe, inputs["raw"])
        ctx = torch.autocast(device.type, dtype=variant.autocast) if variant.autocast else contextlib.nullcontext()
        with ctx:
            loss = stages[variant.crop].losses(module, step_inputs, step=1)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    label, oom = ("bf16" if variant.autocast else "fp32"), False
    crop_note = f", stage2.l1_crop={half_crop(height, width)}" if variant.crop else ""
    try:
        bench.record("train", variant.setting, label, batch, step, resolution=resolution,
                     note=f"stage 2, phase 1{crop_note}", long=True)
    except torch.OutOfMemoryError:
        oom = True
    finally:
        del optimizer, step  # the closure holds the optimizer (and its state) too
        if variant.checkpointing:
            unet.disable_gradient_checkpointing()
            pipe.vae.disable_gradient_checkpointing()
    if oom:  # outside the except block, so the traceback's tensors are freed before the next variant
        logger.warning("train %s: out of memory at batch %d", variant.setting, batch)
        unet.zero_grad(set_to_none=True)
        if device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
        bench.add(Row("train", variant.setting, label, f"{width}x{height}", batch, None, note="out of memory"))
