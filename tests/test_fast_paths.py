"""Every inference fast path gives the plain path's output (within float tolerance)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import random_image
from diffusers.models.attention_processor import AttnProcessor

from apdepth import ApDepthPipeline
from apdepth.devices import auto_dtype, cpu_has_native_bf16, prefers_channels_last


@pytest.fixture()
def fresh(tiny_pipeline_dir):
    pipe = ApDepthPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


IMG = random_image(48, 64, seed=11)


def test_one_vae_call_equals_two(fresh):
    assert not fresh.fuse_encode  # two calls by default: the release's layout, exactly
    ref = fresh(IMG).depth
    fresh.fuse_encode = True
    np.testing.assert_allclose(fresh(IMG).depth, ref, atol=1e-5)  # batched convolutions: ~2e-6


def test_sdpa_equals_classic_attention(fresh):
    ref = fresh(IMG).depth  # diffusers' default processors use torch SDPA
    fresh.unet.set_attn_processor(AttnProcessor())
    fresh.vae.set_attn_processor(AttnProcessor())
    np.testing.assert_allclose(fresh(IMG).depth, ref, atol=1e-5)


def test_channels_last_equals_contiguous(fresh):
    ref = fresh(IMG).depth
    fresh.set_channels_last()
    assert fresh.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert fresh.vae.decoder.conv_out.weight.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(fresh(IMG).depth, ref, atol=1e-5)
    fresh.set_channels_last(False)
    assert fresh.unet.conv_in.weight.is_contiguous()
    np.testing.assert_array_equal(fresh(IMG).depth, ref)


def test_vae_slicing_equals_batched(fresh):
    imgs = [random_image(40, 40, seed=s) for s in range(3)]
    ref = fresh(imgs, batch_size=3).depth
    fresh.vae.enable_slicing()
    np.testing.assert_allclose(fresh(imgs, batch_size=3).depth, ref, atol=1e-5)


def test_cached_text_embedding_and_dropping_the_text_encoder(fresh):
    ref = fresh(IMG).depth
    emb = fresh.empty_text_embedding(torch.device("cpu"), torch.float32).clone()
    fresh.set_empty_text_embedding(None)  # cleared: computed again, identically
    np.testing.assert_array_equal(fresh(IMG).depth, ref)
    lean = copy.copy(fresh)
    lean.register_modules(text_encoder=None, tokenizer=None)
    lean.set_empty_text_embedding(emb)
    np.testing.assert_array_equal(lean(IMG).depth, ref)
    lean.set_empty_text_embedding(None)
    with pytest.raises(ValueError, match="no text_encoder/tokenizer"):
        lean(IMG)
    with pytest.raises(ValueError, match=r"\[1, tokens, C\]"):
        lean.set_empty_text_embedding(torch.zeros(2, 32))


@pytest.mark.slow
def test_torch_compile_equals_eager(fresh):
    ref = fresh(IMG).depth
    fresh.compile_models()
    np.testing.assert_allclose(fresh(IMG).depth, ref, atol=1e-4)


def test_vae_tiling_matches_whole_decoding_with_a_trained_vae():
    """Large-input mode on the embedded model's trained VAE (a random VAE gives no such guarantee): the depth
    latent decoded in overlapping tiles blends into the whole-image result, and the encoder, run one image
    per call, gives the same latents as the fused call. Measured: correlation 0.955, mean |difference| 0.066
    of the [0, 1] range (the current VAE, 400 training steps; the earlier 800-step one measured 0.989 / 0.026).
    (Tiling the encoder too, ``encode=True``, measured 0.83 / 0.10: see the docstring.)"""
    from apdepth.embedded import embedded_model_path
    from apdepth.synth.datasets import render_scene

    pipe = ApDepthPipeline.from_pretrained(embedded_model_path(), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    tile = pipe.vae.config.sample_size  # tiles of this many pixels, overlapping by a quarter
    import io

    from PIL import Image

    rel, data = render_scene("hypersim", seed=5, scene=0, frames=[0], size=(2 * tile, 3 * tile)).files[0]
    assert rel.endswith(".png") and "rgb" in rel
    rgb = Image.open(io.BytesIO(data)).convert("RGB")
    plain = pipe(rgb, processing_resolution=0, output_type="np").depth

    calls = []  # (use_tiling, use_slicing, batch) of every VAE call in large-input mode
    for name in ("encode", "decode"):
        original = getattr(pipe.vae, name)

        def spy(x, *args, _original=original, _name=name, **kwargs):
            calls.append((_name, pipe.vae.use_tiling, pipe.vae.use_slicing, x.shape[0]))
            return _original(x, *args, **kwargs)

        setattr(pipe.vae, name, spy)
    pipe.enable_vae_tiling()
    tiled = pipe(rgb, processing_resolution=0, output_type="np").depth
    assert calls == [("encode", False, True, 1)] * 2 + [("decode", True, False, 1)]  # RGB, prior, depth
    assert (pipe.vae.use_tiling, pipe.vae.use_slicing) == (False, False)  # the VAE's own settings restored
    assert plain.shape == tiled.shape == (1, 2 * tile, 3 * tile)
    # 0.92 with the model of 2026-12-03 (tiles misplaced or unblended would fall far lower)
    assert np.corrcoef(plain.ravel(), tiled.ravel())[0, 1] > 0.9
    assert np.abs(plain - tiled).mean() < 0.08

    pipe.disable_vae_tiling()
    np.testing.assert_allclose(pipe(rgb, processing_resolution=0, output_type="np").depth, plain, atol=1e-5)


def test_memory_and_speed_flags_of_the_commands():
    """``--vae-tiling`` turns on the pipeline's large-input mode; ``--low-memory`` (model CPU offload) needs CUDA
    and says so instead of silently running without it."""
    import argparse

    from apdepth.apps.commands import common

    parser = argparse.ArgumentParser()
    common.add_model_arguments(parser)
    args = parser.parse_args(["--model", "embedded", "--device", "cpu", "--vae-tiling"])
    assert common.load_pipeline(args).vae_tiling == "decode"
    args = parser.parse_args(["--model", "embedded", "--device", "cpu", "--low-memory"])
    with pytest.raises(SystemExit, match="--low-memory.*CUDA"):
        common.load_pipeline(args)
    # the layout follows the device unless named (channels_last pays on CPUs, costs on GPUs)
    def layout(flags):
        pipe = common.load_pipeline(parser.parse_args(["--model", "embedded", "--device", "cpu", *flags]))
        return pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)

    assert layout([]) is True and layout(["--memory-format", "contiguous"]) is False
    # --dtype auto: the device's fastest faithful dtype
    args = parser.parse_args(["--model", "embedded", "--device", "cpu", "--dtype", "auto"])
    assert common.load_pipeline(args).unet.dtype == auto_dtype(torch.device("cpu"))
    # --compile wraps the UNet and the VAE's encoder and decoder (compilation itself waits for the first call)
    args = parser.parse_args(["--model", "embedded", "--device", "cpu", "--compile", "reduce-overhead"])
    pipe = common.load_pipeline(args)
    for module in (pipe.unet, pipe.vae.encoder, pipe.vae.decoder):
        assert module._compiled_call_impl is not None
    assert pipe.prior._compiled_call_impl is None


@pytest.mark.parametrize(("flags", "native"), [("fpu sse avx2 avx512f", False), ("avx512f amx_bf16 amx_tile", True),
                                                ("avx512f avx512_bf16", True)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, monkeypatch, flags, native):
    import apdepth.devices as devices

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n")
    assert devices.cpu_has_native_bf16(str(info)) is native
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    assert devices.auto_dtype(torch.device("cpu")) == (torch.bfloat16 if native else torch.float32)
    assert devices.auto_dtype(torch.device("mps")) == torch.float32
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False  # unreadable: no claim of bf16
    assert prefers_channels_last(torch.device("cpu")) and not prefers_channels_last(torch.device("cuda"))
