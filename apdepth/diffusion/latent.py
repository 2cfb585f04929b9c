"""VAE latent encoding and depth decoding, exactly as ApDepth uses them (docs/reference.md section 1)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL


def encode_latent(vae: AutoencoderKL, x: torch.Tensor) -> torch.Tensor:
    """Deterministic latent of ``x`` ``[B, 3, H, W]`` in [-1, 1]: posterior mean x scaling factor.

    Returns ``[B, 4, H/8, W/8]``. No sampling: ApDepth encodes RGB, prior and GT by the mean.
    """
    posterior = vae.encode(x.to(vae.dtype)).latent_dist
    return posterior.mean * vae.config.scaling_factor


def decode_depth(vae: AutoencoderKL, latent: torch.Tensor) -> torch.Tensor:
    """Decode a depth latent ``[B, 4, h, w]`` to depth ``[B, 1, 8h, 8w]`` (mean of the 3 channels).

    The result is in the VAE's output range (nominally [-1, 1]) and is not clipped here.
    """
    decoded = vae.decode(latent.to(vae.dtype) / vae.config.scaling_factor).sample  # [B, 3, H, W]
    return decoded.mean(dim=1, keepdim=True)
