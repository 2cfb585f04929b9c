"""Every inference fast path gives the plain path's output (within float tolerance)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import random_image
from diffusers.models.attention_processor import AttnProcessor

from apdepth import ApDepthPipeline


@pytest.fixture()
def fresh(tiny_pipeline_dir):
    pipe = ApDepthPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


IMG = random_image(48, 64, seed=11)


def test_one_vae_call_equals_two(fresh):
    ref = fresh(IMG).depth
    fresh.fuse_encode = False
    np.testing.assert_allclose(fresh(IMG).depth, ref, atol=1e-5)  # batched convolutions: ~2e-6


def test_sdpa_equals_classic_attention(fresh):
    ref = fresh(IMG).depth  # diffusers' default processors use torch SDPA
    fresh.unet.set_attn_processor(AttnProcessor())
    fresh.vae.set_attn_processor(AttnProcessor())
    np.testing.assert_allclose(fresh(IMG).depth, ref, atol=1e-5)


def test_channels_last_equals_contiguous(fresh):
    ref = fresh(IMG).depth
    fresh.unet.to(memory_format=torch.channels_last)
    fresh.vae.to(memory_format=torch.channels_last)
    np.testing.assert_allclose(fresh(IMG).depth, ref, atol=1e-5)


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
    fresh.unet.compile()
    np.testing.assert_allclose(fresh(IMG).depth, ref, atol=1e-4)
