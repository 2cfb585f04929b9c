"""``ApDepthPipeline.__call__`` equals the authors' released inference algorithm, output for output.

``release_depth`` below re-implements the release's algorithm from its semantics (its pipeline's ``__call__`` /
``single_infer``, ``resize_max_res`` with torchvision's tensor-resize semantics, Depth Anything V2's
``infer_batch``), written against the same modules the pipeline holds: VAE, UNet, text encoder + tokenizer
and the prior's network. The prior network itself is compared with an independent implementation of the
original DINOv2 / DPT forward in ``tests/test_prior.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

# the release's names for its resampling modes, as torchvision InterpolationModes
RELEASE_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest-exact"}


def torchvision_resize(img: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """torchvision ``transforms.functional.resize`` of a tensor with ``antialias=True``: integer images are
    interpolated in float32 and rounded back (bicubic clamped to the dtype's range first)."""
    integer = not img.is_floating_point()
    x = img.to(torch.float32) if integer else img
    smooth = mode in ("bilinear", "bicubic")
    x = F.interpolate(x, size=size, mode=mode, align_corners=False if smooth else None, antialias=smooth)
    if integer:
        if mode == "bicubic":
            x = x.clamp(0, 255)
        x = torch.round(x).to(img.dtype)
    return x


def release_prior(network, rgb_norm: torch.Tensor) -> torch.Tensor:
    """Depth Anything V2's ``infer_batch``: [-1, 1] RGB up to multiples of 14 (bilinear, corners aligned, only
    when needed), the network, back to H x W the same way, repeated to 3 channels."""
    _, _, h, w = rgb_norm.shape
    nh, nw = (h + 13) // 14 * 14, (w + 13) // 14 * 14
    x = rgb_norm if (nh, nw) == (h, w) else F.interpolate(rgb_norm, (nh, nw), mode="bilinear", align_corners=True)
    depth = network(pixel_values=x).predicted_depth[:, None]  # [B, 1, nh, nw], ReLU'd by the head
    depth = F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=True)
    return depth.repeat(1, 3, 1, 1)


def release_depth(pipe, rgb: torch.Tensor, processing_res: int, resample: str = "bilinear",
                  match_input_res: bool = True) -> np.ndarray:
    """The release's ``ApDepthPipeline.__call__`` with one ensemble member: ``rgb`` uint8 ``[1, 3, H, W]``."""
    mode = RELEASE_MODES[resample]
    vae, unet = pipe.vae, pipe.unet
    scale = vae.config.scaling_factor  # the release hard-codes SD2's 0.18215, the value SD2's VAE records
    height, width = rgb.shape[-2:]
    if processing_res > 0:  # resize_max_res
        factor = min(processing_res / width, processing_res / height)
        rgb = torchvision_resize(rgb, (int(height * factor), int(width * factor)), mode)
    rgb_norm = rgb / 255.0 * 2.0 - 1.0
    prior = release_prior(pipe.prior.model, rgb_norm)

    def encode(x):
        moments = vae.quant_conv(vae.encoder(x))
        mean, _ = torch.chunk(moments, 2, dim=1)
        return mean * scale

    rgb_latent = encode(rgb_norm)
    prior_latent = encode(prior)
    ids = pipe.tokenizer("", padding="do_not_pad", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids
    text = pipe.text_encoder(ids)[0].repeat(rgb_latent.shape[0], 1, 1)
    latent = unet(torch.cat([prior_latent, rgb_latent], dim=1), 1, encoder_hidden_states=text).sample
    decoded = vae.decoder(vae.post_quant_conv(latent / scale)).mean(dim=1, keepdim=True)
    depth = (torch.clip(decoded, -1.0, 1.0) + 1.0) / 2.0
    if match_input_res:
        depth = torchvision_resize(depth, (height, width), mode)
    return depth.squeeze().numpy().clip(0, 1)


def photo(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """uint8 ``[1, 3, H, W]``: smooth structure, edges and noise (so every resize changes levels)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = torch.stack([torch.sin(7 * xx + c) * torch.cos(5 * yy - c) for c in range(3)])  # [3, H, W]
    base = base + (xx > 0.37).float() * 0.5 - (yy > 0.61).float() * 0.3
    noisy = base * 0.3 + 0.5 + 0.08 * torch.randn(3, height, width, generator=g)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)[None]


def assert_release_equal(pipe, rgb, res, resample="bilinear", match=True, tol=1e-6):
    with torch.no_grad():
        expected = release_depth(pipe, rgb, res, resample, match)
    got = pipe(rgb[0], processing_resolution=res, resample=resample, match_input_resolution=match).depth[0]
    assert got.shape == expected.shape
    diff = float(np.abs(got - expected).max())
    assert diff <= tol, f"max |pipeline - release| = {diff:.3g}"
    return diff


# (input H, W, processing resolution): the processing sizes are in the comments
CASES = [
    (480, 640, 0),  # 480 x 640, multiples of 8 (not of 14: the prior pads)
    (352, 1216, 0),  # KITTI's 352 x 1216
    (1008, 1512, 756),  # ETH3D's geometry: 504 x 756, the VAE decodes 504 x 752
    (481, 643, 0),  # nothing divides: decoded 480 x 640, stretched back
    (427, 640, 0),  # a 427 x 640 photo at its size
    (800, 533, 400),  # portrait: 400 x 266
    (100, 150, 0),  # small; the prior sees 112 x 154
    (36, 40, 10),  # 9 x 10 after resizing: a 1 x 1 latent
]


@pytest.mark.parametrize("height,width,res", CASES)
def test_tiny_model_equals_the_release(pipe, height, width, res):
    assert pipe.config.prior_preprocessing == "compat" and pipe.inference_modes() == ("release", "uint8")
    assert not pipe.fuse_encode
    diff = assert_release_equal(pipe, photo(height, width, seed=height + width), res)
    assert diff == 0.0  # the same operations in the same order


@pytest.mark.parametrize("resample", ["bicubic", "nearest"])
def test_resampling_modes_equal_the_release(pipe, resample):
    assert_release_equal(pipe, photo(97, 131, seed=3), 70, resample=resample)


def test_without_matching_the_input_size_the_vae_size_is_returned(pipe):
    """The release returns the VAE's output (multiples of 8) when it does not resize back."""
    rgb = photo(1008, 1512, seed=4)
    with torch.no_grad():
        expected = release_depth(pipe, rgb, 756, match_input_res=False)
    assert expected.shape == (504, 752)
    got = pipe(rgb[0], processing_resolution=756, match_input_resolution=False).depth[0]
    np.testing.assert_array_equal(got, expected)
    padded = pipe(rgb[0], processing_resolution=756, match_input_resolution=False, size_mode="pad").depth[0]
    assert padded.shape == (504, 756)


def test_pil_and_tensor_inputs_agree(pipe):
    from PIL import Image

    rgb = photo(61, 83, seed=5)
    img = Image.fromarray(rgb[0].permute(1, 2, 0).numpy())
    np.testing.assert_array_equal(pipe(img, processing_resolution=50).depth, pipe(rgb[0], processing_resolution=50).depth)


def test_geometric_options_differ_from_the_release(pipe):
    """``size_mode="pad"`` and ``resize_mode="float"`` are the paper-geometric behaviour: different outputs."""
    rgb = photo(481, 643, seed=6)[0]
    release = pipe(rgb, processing_resolution=0).depth
    padded = pipe(rgb, processing_resolution=0, size_mode="pad").depth
    assert release.shape == padded.shape and np.abs(release - padded).max() > 1e-4
    from apdepth.image_utils import to_rgb_images

    img = to_rgb_images(photo(200, 300, seed=7)[0])[0]  # halved: many interpolated values end in .5
    uint8 = pipe._preprocess(img, 150, "bilinear", "uint8")
    floats = pipe._preprocess(img, 150, "bilinear", "float")
    levels = torch.stack([(x + 1.0) / 2.0 * 255.0 for x in (uint8, floats)])
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)  # both on 8-bit levels
    steps = (levels[0] - levels[1]).abs().round()
    assert steps.max() == 1 and 0 < float((steps > 0).float().mean()) < 0.05  # one level on a few pixels
    with pytest.raises(ValueError, match="size_mode"):
        pipe(rgb, size_mode="crop")


def test_inputs_below_eight_pixels_are_padded(pipe):
    """The release cannot encode a side under 8 pixels (the VAE's latent would be empty); apdepth pads it."""
    out = pipe(photo(3, 40, seed=8)[0], processing_resolution=0, output_type="pt").depth
    assert out.shape == (1, 1, 3, 40) and torch.isfinite(out).all()


def test_modes_are_recorded_in_model_index(pipe, tmp_path):
    from apdepth import ApDepthPipeline

    pipe.register_to_config(size_mode="pad", resize_mode="float")
    try:
        pipe.save_pretrained(tmp_path)
        loaded = ApDepthPipeline.from_pretrained(tmp_path)
        assert loaded.inference_modes() == ("pad", "float")
        assert loaded.inference_modes("release") == ("release", "float")
    finally:
        pipe.register_to_config(size_mode=None, resize_mode=None)
    assert pipe.inference_modes() == ("release", "uint8")


@pytest.mark.parametrize("height,width,res", [(480, 640, 256), (352, 1216, 256), (481, 643, 256), (643, 427, 200)])
def test_embedded_model_equals_the_release(embedded_pipe, height, width, res):
    assert embedded_pipe.config.prior_preprocessing == "compat"
    assert_release_equal(embedded_pipe, photo(height, width, seed=width), res)


@pytest.mark.slow
@pytest.mark.parametrize("height,width,res", CASES[:5])
def test_embedded_model_equals_the_release_at_full_size(embedded_pipe, height, width, res):
    assert_release_equal(embedded_pipe, photo(height, width, seed=width), res)
