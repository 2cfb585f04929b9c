"""The 8-channel ApDepth UNet, built from Stable Diffusion 2 by widening ``conv_in``."""

from __future__ import annotations

import logging
import os

import torch
from diffusers import UNet2DConditionModel

from .._compat import diffusers_dtype

logger = logging.getLogger(__name__)

APDEPTH_IN_CHANNELS = 8  # cat([prior_latent, rgb_latent])


def widen_conv_in(unet: UNet2DConditionModel, in_channels: int = APDEPTH_IN_CHANNELS) -> UNet2DConditionModel:
    """Widen ``unet.conv_in`` in place to ``in_channels`` inputs and update the config.

    The kernel is repeated along the input axis and scaled by ``old / new`` (0.5 for 4 -> 8), the bias
    kept, so that on input ``cat([z, z])`` the widened layer gives exactly the original output.
    """
    old = unet.conv_in
    if old.in_channels == in_channels:
        return unet
    if in_channels % old.in_channels:
        raise ValueError(
            f"Cannot widen conv_in from {old.in_channels} to {in_channels} channels: not a multiple."
        )
    repeats = in_channels // old.in_channels
    new = torch.nn.Conv2d(
        in_channels, old.out_channels, kernel_size=old.kernel_size, stride=old.stride, padding=old.padding,
        dilation=old.dilation, groups=old.groups, bias=old.bias is not None,
        device=old.weight.device, dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(old.weight.repeat(1, repeats, 1, 1) / repeats)  # [C_out, 8, k, k]
        if old.bias is not None:
            new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def load_apdepth_unet(
    pretrained: str | os.PathLike,
    subfolder: str | None = "unet",
    dtype: torch.dtype | None = None,
    **kwargs,
) -> UNet2DConditionModel:
    """Load a UNet for ApDepth training: an SD2 UNet gets its ``conv_in`` widened to 8 channels, an
    8-channel (ApDepth) UNet is returned unchanged. ``pretrained`` is a hub id or local folder."""
    path = os.fspath(pretrained)
    if subfolder and os.path.isdir(path) and not os.path.isdir(os.path.join(path, subfolder)):
        subfolder = None  # a folder that is the UNet itself
    unet = UNet2DConditionModel.from_pretrained(path, subfolder=subfolder, **diffusers_dtype(dtype), **kwargs)
    n_in = unet.config.in_channels
    if n_in == APDEPTH_IN_CHANNELS:
        return unet
    if n_in != 4:
        raise ValueError(
            f"{path}: UNet has {n_in} input channels; expected 4 (Stable Diffusion) or "
            f"{APDEPTH_IN_CHANNELS} (ApDepth)."
        )
    logger.info("Widening conv_in of %s from 4 to %d channels", path, APDEPTH_IN_CHANNELS)
    return widen_conv_in(unet, APDEPTH_IN_CHANNELS)
