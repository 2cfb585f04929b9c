"""ApDepthPipeline: the docs/reference.md section 1 recipe, shapes, ranges, determinism, inputs, loading."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import random_image

from apdepth import ApDepthPipeline, load_prior
from apdepth.diffusion import decode_depth, encode_latent
from apdepth.pipeline import processing_size
from apdepth.testing import tiny_prior


@pytest.mark.parametrize("size", [(37, 51), (45, 33), (64, 64), (9, 130)])
def test_output_matches_input_size_and_range(pipe, size):
    h, w = size
    out = pipe(random_image(h, w), processing_resolution=0)
    assert out.depth.shape == (1, h, w)
    assert out.depth.dtype == np.float32
    assert out.depth.min() >= 0.0 and out.depth.max() <= 1.0
    assert out.depth.std() > 0  # not a constant map


def test_processing_resolution_resizes_long_edge(pipe):
    img = random_image(30, 50)
    out = pipe(img, processing_resolution=40, match_input_resolution=False)
    assert out.depth.shape == (1, 24, 40)  # 30 * 0.8, 50 * 0.8
    out = pipe(img, processing_resolution=40)
    assert out.depth.shape == (1, 30, 50)
    assert processing_size(480, 640, 768) == (576, 768)
    assert processing_size(480, 640, 0) == (480, 640)


def test_default_processing_resolution_comes_from_config(pipe):
    assert pipe.config.default_processing_resolution == 0
    img = random_image(21, 34)
    np.testing.assert_array_equal(pipe(img).depth, pipe(img, processing_resolution=0).depth)


def test_deterministic_and_generator_is_accepted(pipe):
    img = random_image(33, 47, seed=3)
    a = pipe(img).depth
    b = pipe(img, generator=torch.Generator().manual_seed(123)).depth
    np.testing.assert_array_equal(a, b)


def test_batch_equals_single(pipe):
    imgs = [random_image(32, 40, seed=s) for s in range(3)]
    batched = pipe(imgs, batch_size=3).depth
    single = np.concatenate([pipe(im).depth for im in imgs])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_input_types(pipe):
    img = random_image(26, 30, seed=1)
    ref = pipe(img).depth
    arr = np.asarray(img)
    np.testing.assert_allclose(pipe(arr).depth, ref, atol=1e-6)
    np.testing.assert_allclose(pipe(arr.astype(np.float32) / 255).depth, ref, atol=1e-5)
    t = torch.from_numpy(arr).permute(2, 0, 1)
    np.testing.assert_allclose(pipe(t).depth, ref, atol=1e-6)  # uint8 tensor
    out = pipe(t[None].float() / 255, output_type="pt")
    assert out.depth.shape == (1, 1, 26, 30) and out.depth.dtype == torch.float32
    np.testing.assert_allclose(out.depth[:, 0].numpy(), ref, atol=1e-5)


def test_mixed_sizes_return_a_list(pipe):
    out = pipe([random_image(20, 30), random_image(31, 17)], colormap="Spectral", output_prior=True)
    assert isinstance(out.depth, list)
    assert [d.shape for d in out.depth] == [(20, 30), (31, 17)]
    assert [c.size for c in out.depth_colored] == [(30, 20), (17, 31)]
    assert [p.shape for p in out.prior] == [(20, 30), (31, 17)]


def test_colormap_matches_matplotlib(pipe):
    import matplotlib

    out = pipe(random_image(16, 24), colormap="viridis")
    rgb = np.asarray(out.depth_colored[0])
    expected = matplotlib.colormaps["viridis"](out.depth[0], bytes=True)[..., :3]
    np.testing.assert_array_equal(rgb, expected)


def test_recipe_matches_spec(pipe):
    """predict_depth is exactly: prior -> VAE mean latents -> cat([prior, rgb]) -> UNet(t=1, empty text)
    -> decode -> channel mean -> clip -> (d + 1) / 2."""
    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 32, 48) * 2 - 1
    prior = pipe.prior(rgb)
    z_prior = encode_latent(pipe.vae, prior.repeat(1, 3, 1, 1))
    z_rgb = encode_latent(pipe.vae, rgb)
    ids = pipe.tokenizer("", padding="do_not_pad", return_tensors="pt").input_ids
    assert ids.shape == (1, 2)  # start and end tokens only
    emb = pipe.text_encoder(ids)[0].expand(2, -1, -1)
    with torch.no_grad():
        z = pipe.unet(torch.cat([z_prior, z_rgb], 1), 1, encoder_hidden_states=emb).sample
        expected = (decode_depth(pipe.vae, z).clamp(-1, 1) + 1) / 2
        got = pipe.predict_depth(rgb)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_encode_latent_is_the_posterior_mean(pipe):
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    h = pipe.vae.quant_conv(pipe.vae.encoder(x))
    mean = h.chunk(2, dim=1)[0]
    torch.testing.assert_close(encode_latent(pipe.vae, x), mean * 0.18215)


def test_prior_latent_goes_first(pipe):
    """A UNet whose conv_in ignores the RGB half reacts to the prior only, and vice versa."""
    rgb_a = torch.rand(1, 3, 32, 32) * 2 - 1
    rgb_b = torch.rand(1, 3, 32, 32) * 2 - 1
    prior_a, prior_b = pipe.prior(rgb_a), pipe.prior(rgb_b)
    p = copy.deepcopy(pipe)
    with torch.no_grad():
        p.unet.conv_in.weight[:, 4:].zero_()  # channels 4..7 = RGB latent: ignored
        same_prior = [p.predict_depth(rgb, prior_a) for rgb in (rgb_a, rgb_b)]
        other_prior = p.predict_depth(rgb_a, prior_b)
    torch.testing.assert_close(same_prior[0], same_prior[1])
    assert (other_prior - same_prior[0]).abs().max() > 1e-4

    p = copy.deepcopy(pipe)
    with torch.no_grad():
        p.unet.conv_in.weight[:, :4].zero_()  # channels 0..3 = prior latent: ignored
        a = p.predict_depth(rgb_a, prior_a)
        b = p.predict_depth(rgb_a, prior_b)
        c = p.predict_depth(rgb_b, prior_a)
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-4


def test_empty_text_embedding_is_computed_once(tiny_pipeline_dir):
    pipe = ApDepthPipeline.from_pretrained(tiny_pipeline_dir)
    calls = []
    pipe.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    for _ in range(3):
        pipe(random_image(16, 16))
    assert len(calls) == 1
    assert pipe.empty_text_embedding(torch.device("cpu"), torch.float32).shape == (1, 2, 32)


def test_bf16_on_cpu(tiny_pipeline_dir, pipe):
    img = random_image(32, 40, seed=2)
    ref = pipe(img).depth
    bf16 = ApDepthPipeline.from_pretrained(tiny_pipeline_dir, dtype=torch.bfloat16)
    assert bf16.unet.dtype == torch.bfloat16 and bf16.prior.dtype == torch.bfloat16
    out = bf16(img).depth
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert np.abs(out - ref).mean() < 0.05


def test_save_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["prior"] == ["apdepth.priors.depth_anything", "DepthAnythingPrior"]
    assert index["prior_preprocessing"] == "compat"
    assert {p.name for p in tmp_path.iterdir()} >= {"unet", "vae", "scheduler", "text_encoder", "tokenizer", "prior"}
    again = ApDepthPipeline.from_pretrained(tmp_path)
    img = random_image(24, 36)
    np.testing.assert_array_equal(again(img).depth, pipe(img).depth)


def _authors_layout(src: str, dst) -> None:
    """The released checkpoint's layout: no prior/, a Marigold-style model_index.json."""
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "prior")
    index = {
        "_class_name": "MarigoldDepthPipeline",
        "_diffusers_version": "0.25.0",
        "default_denoising_steps": 1,
        "default_processing_resolution": 768,
        "prediction_type": "depth",
        "scale_invariant": True,
        "shift_invariant": True,
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (dst / "model_index.json").write_text(json.dumps(index))


def test_loads_the_authors_layout_with_a_given_prior(tiny_pipeline_dir, pipe, tmp_path):
    _authors_layout(tiny_pipeline_dir, tmp_path / "release")
    prior_dir = tmp_path / "prior"
    pipe.prior.save_pretrained(prior_dir)
    loaded = ApDepthPipeline.from_pretrained(tmp_path / "release", prior=str(prior_dir))
    assert loaded.config.prior_preprocessing == "compat"  # the release's behaviour
    assert loaded.config.default_processing_resolution == 768
    assert loaded.config.prior_name == str(prior_dir)
    img = random_image(24, 36)
    np.testing.assert_array_equal(loaded(img, processing_resolution=0).depth, pipe(img).depth)


def test_prior_preprocessing_mismatch_is_refused(pipe):
    with pytest.raises(ValueError) as err:
        ApDepthPipeline(unet=pipe.unet, vae=pipe.vae, prior=tiny_prior(preprocessing="normalized"),
                        prior_preprocessing="compat")
    assert "normalized" in str(err.value) and "compat" in str(err.value)


def test_saved_normalized_pipeline_keeps_its_preprocessing(pipe, tmp_path):
    p = ApDepthPipeline(unet=pipe.unet, vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                        prior=load_prior(tiny_prior(), preprocessing="normalized"), prior_preprocessing="normalized")
    p.save_pretrained(tmp_path)
    again = ApDepthPipeline.from_pretrained(tmp_path)
    assert again.config.prior_preprocessing == "normalized" and again.prior.preprocessing == "normalized"
    assert again(random_image(20, 20)).depth.shape == (1, 20, 20)


def test_four_channel_unet_is_refused(pipe):
    from apdepth.testing import tiny_unet

    with pytest.raises(ValueError, match="8-channel UNet"):
        ApDepthPipeline(unet=tiny_unet(in_channels=4), vae=pipe.vae)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"processing_resolution": -1}, "processing_resolution must be an int >= 0"),
        ({"resample": "lanczos"}, "resample must be one of"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"output_type": "pil"}, "output_type must be one of"),
    ],
)
def test_bad_arguments_are_named(pipe, kwargs, message):
    with pytest.raises(ValueError) as err:
        pipe(random_image(8, 8), **kwargs)
    assert message in str(err.value)
