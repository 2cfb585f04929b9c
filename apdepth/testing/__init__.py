"""What only tests use: tiny random-config models (:mod:`.models`) and small data sets written in each
benchmark's real on-disk format (:mod:`.fixtures`)."""

from .models import (
    TEXT_DIM,
    save_tiny_prior,
    save_tiny_sd2,
    tiny_clip_vision,
    tiny_depth_anything_config,
    tiny_dinov2,
    tiny_pipeline,
    tiny_prior,
    tiny_sam_vision,
    tiny_text_encoder,
    tiny_tokenizer,
    tiny_unet,
    tiny_vae,
)

__all__ = [
    "TEXT_DIM", "save_tiny_prior", "save_tiny_sd2", "tiny_clip_vision", "tiny_depth_anything_config", "tiny_dinov2",
    "tiny_pipeline", "tiny_prior", "tiny_sam_vision", "tiny_text_encoder", "tiny_tokenizer", "tiny_unet", "tiny_vae",
]
