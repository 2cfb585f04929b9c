"""Tiny, seeded, randomly initialised ApDepth components for tests and smoke runs (no download).

The SD-like parts and the Depth Anything V2 prior are defined once in :mod:`apdepth.diffusion.architectures`
(re-exported here); this module assembles them into a pipeline or an SD2-like folder and adds the tiny
external encoders that stage 1 aligns to (DINOv2, CLIP vision, Segment Anything).
"""

from __future__ import annotations

import os

import torch
from diffusers import DDIMScheduler

from ..diffusion.architectures import (
    TEXT_DIM,
    tiny_depth_anything_config,
    tiny_prior,
    tiny_text_encoder,
    tiny_tokenizer,
    tiny_unet,
    tiny_vae,
)
from ..pipeline import ApDepthPipeline

__all__ = [
    "TEXT_DIM", "save_tiny_prior", "save_tiny_sd2", "tiny_clip_vision", "tiny_depth_anything_config", "tiny_dinov2",
    "tiny_pipeline", "tiny_prior", "tiny_sam_vision", "tiny_text_encoder", "tiny_tokenizer", "tiny_unet", "tiny_vae",
]


def tiny_pipeline(workdir: str | os.PathLike, seed: int = 0, preprocessing: str = "compat",
                  default_processing_resolution: int = 0) -> ApDepthPipeline:
    """An untrained tiny ApDepthPipeline (CPU, fp32). ``workdir`` receives the tokenizer files."""
    return ApDepthPipeline(
        unet=tiny_unet(seed=seed), vae=tiny_vae(seed=seed), scheduler=DDIMScheduler(prediction_type="sample"),
        text_encoder=tiny_text_encoder(seed=seed), tokenizer=tiny_tokenizer(os.path.join(workdir, "tokenizer_src")),
        prior=tiny_prior(seed=seed, preprocessing=preprocessing), prior_preprocessing=preprocessing,
        default_processing_resolution=default_processing_resolution,
    )


# ---------------------------------------------------------------------------------------------- training


def tiny_dinov2(seed: int = 0, hidden_size: int = 32):
    """A tiny DINOv2 (transformers ``Dinov2Model``), the stage-1 external encoder's architecture."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    return Dinov2Model(Dinov2Config(hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=37, image_size=28, patch_size=14)).eval()


def tiny_clip_vision(seed: int = 0, hidden_size: int = 32):
    """A tiny CLIP vision tower (the OpenCLIP encoder's architecture in transformers)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    return CLIPVisionModel(CLIPVisionConfig(hidden_size=hidden_size, intermediate_size=37, num_hidden_layers=2,
                                            num_attention_heads=2, image_size=28, patch_size=14)).eval()


def tiny_sam_vision(seed: int = 0, output_channels: int = 32):
    """A tiny Segment Anything image encoder (64x64 input, 16-pixel patches)."""
    from transformers import SamVisionConfig, SamVisionModel

    torch.manual_seed(seed)
    return SamVisionModel(SamVisionConfig(hidden_size=32, output_channels=output_channels, num_hidden_layers=2,
                                          num_attention_heads=2, image_size=64, patch_size=16, window_size=2,
                                          global_attn_indexes=[1], mlp_dim=37)).eval()


def save_tiny_sd2(folder: str | os.PathLike, seed: int = 0) -> str:
    """Write a tiny Stable-Diffusion-2-like folder (4-channel UNet, VAE, CLIP text model, tokenizer,
    v-prediction scheduler), the layout training starts from."""
    folder = os.fspath(folder)
    tiny_unet(in_channels=4, seed=seed).save_pretrained(os.path.join(folder, "unet"))
    tiny_vae(seed=seed).save_pretrained(os.path.join(folder, "vae"))
    tiny_text_encoder(seed=seed).save_pretrained(os.path.join(folder, "text_encoder"))
    tiny_tokenizer(os.path.join(folder, "_tokenizer_src")).save_pretrained(os.path.join(folder, "tokenizer"))
    DDIMScheduler(prediction_type="v_prediction").save_pretrained(os.path.join(folder, "scheduler"))
    return folder


def save_tiny_prior(folder: str | os.PathLike, seed: int = 0) -> str:
    """Write a tiny Depth Anything V2 prior folder (loadable with ``load_prior(folder)``)."""
    tiny_prior(seed=seed).save_pretrained(os.fspath(folder))
    return os.fspath(folder)
