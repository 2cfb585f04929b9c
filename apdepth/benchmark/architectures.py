"""Full-size ApDepth (and Marigold) pipelines from configs alone, with random weights.

Runtime does not depend on weight values, so these time exactly like the released models without a
download. The configurations (Stable Diffusion 2 and the tiny dry-run models) are those of
:mod:`apdepth.diffusion.architectures`; the prior is Depth Anything V2 (:mod:`apdepth.priors.variants`).
"""

from __future__ import annotations

import os
import tempfile

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, DepthAnythingForDepthEstimation

from ..diffusion.architectures import (
    EMPTY_PROMPT_IDS,
    SD2_TEXT,
    SD2_UNET,
    SD2_VAE,
    tiny_prior,
    tiny_text_encoder,
    tiny_tokenizer,
    tiny_unet,
    tiny_vae,
)
from ..pipeline import ApDepthPipeline
from ..priors import DepthAnythingPrior, get_variant

__all__ = ["EMPTY_PROMPT_IDS", "SD2_TEXT", "SD2_UNET", "SD2_VAE", "apdepth_pipeline", "empty_prompt_embedding",
           "full_size_components", "marigold_pipeline", "tiny_components"]


def _built(factory, device: torch.device, dtype: torch.dtype):
    # Constructing directly on the target device makes the random init of a 1B-parameter model fast on GPUs.
    with torch.device(device):
        module = factory()
    return module.to(dtype=dtype).eval().requires_grad_(False)


def full_size_components(prior: str = "small", device="cpu", dtype=torch.float32) -> dict:
    """Random-weight SD2 UNet (8 channels), SD2 VAE, SD2 text encoder and a DA2 prior of size ``prior``."""
    device = torch.device(device)
    unet = _built(lambda: UNet2DConditionModel(**SD2_UNET), device, dtype)
    vae = _built(lambda: AutoencoderKL(**SD2_VAE), device, dtype)
    text_encoder = _built(lambda: CLIPTextModel(CLIPTextConfig(**SD2_TEXT)), device, dtype)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "prior": full_size_prior(prior, device, dtype)}


def full_size_prior(size: str = "small", device="cpu", dtype=torch.float32) -> DepthAnythingPrior:
    """A random-weight Depth Anything V2 prior of ``size`` (small, base, large, giant)."""
    da2 = _built(lambda: DepthAnythingForDepthEstimation(get_variant(size).to_config()), torch.device(device), dtype)
    return DepthAnythingPrior.from_model(da2, variant=get_variant(size).name)


def tiny_components(device="cpu", dtype=torch.float32) -> dict:
    """The test suite's tiny components, for a fast dry run of the benchmark."""
    return {name: m.to(device=device, dtype=dtype) for name, m in (
        ("unet", tiny_unet()), ("vae", tiny_vae()), ("text_encoder", tiny_text_encoder()), ("prior", tiny_prior()))}


def empty_prompt_embedding(text_encoder: CLIPTextModel) -> torch.Tensor:
    """``[1, 2, C]``: the text encoder on the start and end tokens, as the tokenizer gives for ""."""
    ids = torch.tensor([EMPTY_PROMPT_IDS if text_encoder.config.vocab_size > max(EMPTY_PROMPT_IDS) else (0, 1)],
                       device=text_encoder.device)
    with torch.no_grad():
        return text_encoder(ids)[0]


def apdepth_pipeline(components: dict) -> ApDepthPipeline:
    pipe = ApDepthPipeline(
        unet=components["unet"], vae=components["vae"], text_encoder=components["text_encoder"],
        prior=components["prior"], default_processing_resolution=0,
    )
    pipe.set_empty_text_embedding(empty_prompt_embedding(components["text_encoder"]))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def marigold_pipeline(components: dict):
    """diffusers' Marigold depth pipeline on the same UNet and VAE (DDIM, as Marigold v1.0)."""
    from diffusers import MarigoldDepthPipeline
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:  # the text embedding is set below; any tokenizer will do
        tokenizer: CLIPTokenizer = tiny_tokenizer(os.path.join(tmp, "tok"))
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
        timestep_spacing="trailing",
    )
    pipe = MarigoldDepthPipeline(
        unet=components["unet"], vae=components["vae"], scheduler=scheduler,
        text_encoder=components["text_encoder"], tokenizer=tokenizer, prediction_type="depth",
        scale_invariant=True, shift_invariant=True, default_denoising_steps=50, default_processing_resolution=0,
    )
    pipe.empty_text_embedding = empty_prompt_embedding(components["text_encoder"])
    pipe.set_progress_bar_config(disable=True)
    return pipe
