"""Model pieces shared by inference and training: UNet assembly and VAE latent helpers."""

from .latent import decode_depth, encode_latent
from .unet import load_apdepth_unet, widen_conv_in

__all__ = ["decode_depth", "encode_latent", "load_apdepth_unet", "widen_conv_in"]
