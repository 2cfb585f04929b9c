"""Tiny, seeded, randomly initialised ApDepth components for tests and smoke runs (no download).

Every builder mirrors a real component's architecture family at toy size: an SD-style
``UNet2DConditionModel`` with cross-attention, an ``AutoencoderKL`` with the SD 8x downsampling, a
CLIP text model with a locally written BPE tokenizer, and a Depth Anything V2 (DINOv2 + DPT).
"""

from __future__ import annotations

import json
import os

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, DepthAnythingConfig, Dinov2Config

from ..pipeline import ApDepthPipeline
from ..priors import DepthAnythingPrior

TEXT_DIM = 32


def tiny_unet(in_channels: int = 8, seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_DIM,
        attention_head_dim=(2, 4), norm_num_groups=8, use_linear_projection=True,
    )


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), sample_size=32,
    )


def tiny_text_encoder(seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=8, hidden_size=TEXT_DIM, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        bos_token_id=0, eos_token_id=1, pad_token_id=1, max_position_embeddings=77, projection_dim=TEXT_DIM,
    )
    return CLIPTextModel(config).eval()


def tiny_tokenizer(workdir: str | os.PathLike) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over a six-token vocabulary, written to ``workdir``."""
    os.makedirs(workdir, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}
    vocab_file, merges_file = os.path.join(workdir, "vocab.json"), os.path.join(workdir, "merges.txt")
    with open(vocab_file, "w") as f:
        json.dump(vocab, f)
    with open(merges_file, "w") as f:
        f.write("#version: 0.2\n")
    return CLIPTokenizer(vocab_file, merges_file, model_max_length=77)


def tiny_depth_anything_config(hidden_size: int = 32, layers: int = 4, swiglu: bool = False) -> DepthAnythingConfig:
    backbone = Dinov2Config(
        hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=2, mlp_ratio=2, image_size=28,
        patch_size=14, use_swiglu_ffn=swiglu, out_indices=list(range(1, layers + 1))[-4:],
        reshape_hidden_states=False, apply_layernorm=True, layerscale_value=1.0,
    )
    return DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, reassemble_hidden_size=hidden_size,
        reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
        head_hidden_size=8, depth_estimation_type="relative",
    )


def tiny_prior(seed: int = 0, preprocessing: str = "compat", swiglu: bool = False) -> DepthAnythingPrior:
    torch.manual_seed(seed)
    prior = DepthAnythingPrior(tiny_depth_anything_config(swiglu=swiglu).to_dict(), preprocessing=preprocessing)
    # transformers' small-normal init leaves a toy DPT's output constant. Use PyTorch's default init,
    # amplify the last layer, and set its bias (measured on a fixed image) so the disparity varies
    # with the image around 2 instead of being clipped by the final ReLU.
    for module in prior.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            module.reset_parameters()
    conv3 = prior.model.head.conv3
    with torch.no_grad():
        conv3.weight.mul_(100.0)
        conv3.bias.zero_()
        probe = torch.rand(1, 3, 42, 56, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        means: list[float] = []
        handle = conv3.register_forward_hook(lambda mod, inp, out: means.append(float(out.mean())))
        prior.model(pixel_values=probe)
        handle.remove()
        conv3.bias.fill_(2.0 - means[0])
    return prior


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
