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

import torch

from ..training.config import Stage2Config
from ..training.inputs import TrainModule, encode_inputs
from ..training.stage2 import Stage2
from .report import Row

logger = logging.getLogger(__name__)

# (setting, latent cache, gradient checkpointing, fused Adam, autocast dtype, pixel L1 on a half-size crop)
VARIANTS = (
    ("step: raw inputs (encode every step)", False, False, False, None, False),
    ("step: latent cache", True, False, False, None, False),
    ("step: cache + gradient checkpointing", True, True, False, None, False),
    ("step: cache + fused Adam", True, False, True, None, False),
    ("step: cache + L1 on a 1/4-area crop", True, False, False, None, True),
    ("step: cache + checkpointing + fused + bf16", True, True, True, torch.bfloat16, False),
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
    pipe, device = bench.pipe, bench.device
    bench.set_dtype("fp32")
    pipe.set_channels_last(False)  # as `apdepth train` runs
    height, width = resolution
    data = training_batch(batch, height, width, device)
    cached = encode_inputs(pipe, data)  # what the latent cache holds
    stage = Stage2(Stage2Config(), pipe.vae)
    crop_stage = Stage2(Stage2Config(l1_crop=half_crop(height, width)), pipe.vae, torch.Generator().manual_seed(0))
    module = TrainModule(pipe)
    unet = pipe.unet
    unet.requires_grad_(True).train()
    try:
        for setting, use_cache, checkpointing, fused, autocast, crop in VARIANTS:
            if autocast is not None and not bf16:
                continue
            if checkpointing:
                unet.enable_gradient_checkpointing()
                pipe.vae.enable_gradient_checkpointing()
            optimizer = torch.optim.Adam(unet.parameters(), lr=1e-9, fused=fused or None)

            def step(use_cache=use_cache, autocast=autocast, optimizer=optimizer, crop=crop):
                inputs = cached if use_cache else encode_inputs(pipe, data)
                ctx = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()
                with ctx:
                    loss = (crop_stage if crop else stage).losses(module, inputs, step=1)["loss"]
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            label, oom = ("bf16" if autocast else "fp32"), False
            try:
                bench.record("train", setting, label, batch, step, resolution=resolution,
                              note=f"stage 2, phase 1{', stage2.l1_crop=' + half_crop(height, width) if crop else ''}",
                              long=True)
            except torch.OutOfMemoryError:
                oom = True
            finally:
                del optimizer, step  # the closure holds the optimizer (and its state) too
                if checkpointing:
                    unet.disable_gradient_checkpointing()
                    pipe.vae.disable_gradient_checkpointing()
            if oom:  # outside the except block, so the traceback's tensors are freed before the next variant
                logger.warning("train %s: out of memory at batch %d", setting, batch)
                unet.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    gc.collect()
                    torch.cuda.empty_cache()
                bench.add(Row("train", setting, label, f"{width}x{height}", batch, None, note="out of memory"))
    finally:
        unet.requires_grad_(False).eval()
        unet.zero_grad(set_to_none=True)
        pipe.set_channels_last(bench.channels_last)
