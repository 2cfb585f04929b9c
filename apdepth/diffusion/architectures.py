"""Stable-Diffusion-2-like architectures, defined once, with random weights (no download).

* Full size: the numbers of Stable Diffusion 2 (``stabilityai/stable-diffusion-2``: UNet, VAE, OpenCLIP ViT-H
  text tower as ``CLIPTextModel``). The benchmark times these: runtime does not depend on weight values.
* Tiny: the same families at toy size, seeded: an SD-style ``UNet2DConditionModel`` with cross-attention,
  an ``AutoencoderKL`` with SD's 8x downsampling, a CLIP text model with a locally written BPE tokenizer and
  a Depth Anything V2 (DINOv2 + DPT) prior. The tests (:mod:`apdepth.testing`), the benchmark's dry run and
  the embedded demo model's text parts (ApDepth only ever encodes the empty prompt) build them from here.
"""

from __future__ import annotations

import json
import os

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, DepthAnythingConfig, Dinov2Config

from ..priors import DepthAnythingPrior

# ---------------------------------------------------------------------------------------------- full size

SD2_UNET = dict(  # with ApDepth's 8 input channels: cat([prior_latent, rgb_latent])
    sample_size=96, in_channels=8, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True, upcast_attention=True,
)
SD2_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=768, scaling_factor=0.18215,
)
SD2_TEXT = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512, bos_token_id=49406, eos_token_id=49407,
    pad_token_id=1,
)
EMPTY_PROMPT_IDS = (49406, 49407)  # CLIP start and end tokens: the empty prompt without padding

# ---------------------------------------------------------------------------------------------- tiny

TEXT_DIM = 32  # the tiny text encoder's width = the tiny UNet's cross-attention width
TINY_UNET = dict(  # in_channels is the builder's argument (8 for ApDepth, 4 for an SD2-like starting point)
    sample_size=8, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=TEXT_DIM, attention_head_dim=(2, 4), norm_num_groups=8, use_linear_projection=True,
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 8, 16, 16), sample_size=32,
)
TINY_TEXT = dict(
    vocab_size=8, hidden_size=TEXT_DIM, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
    bos_token_id=0, eos_token_id=1, pad_token_id=1, max_position_embeddings=77, projection_dim=TEXT_DIM,
)
TINY_VOCAB = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}


def tiny_unet(in_channels: int = 8, seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(in_channels=in_channels, **TINY_UNET)


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(**TINY_VAE)


def tiny_text_encoder(seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(**TINY_TEXT)).eval()


def tiny_tokenizer(workdir: str | os.PathLike) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over a six-token vocabulary (:data:`TINY_VOCAB`), written to ``workdir``."""
    os.makedirs(workdir, exist_ok=True)
    vocab_file, merges_file = os.path.join(workdir, "vocab.json"), os.path.join(workdir, "merges.txt")
    with open(vocab_file, "w") as f:
        json.dump(TINY_VOCAB, f)
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
        probe = torch.rand(1, 3, 42, 56, generator=torch.Generator().manual_seed(seed)) * 2 - 1  # [1, 3, H, W]
        means: list[float] = []
        handle = conv3.register_forward_hook(lambda mod, inp, out: means.append(float(out.mean())))
        prior.model(pixel_values=probe)
        handle.remove()
        conv3.bias.fill_(2.0 - means[0])
    return prior
