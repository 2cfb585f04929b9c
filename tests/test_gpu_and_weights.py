"""Checks that need hardware or downloads this project's CI does not have. They run on a user's
machine: GPU tests whenever CUDA is present, real-weight tests with APDEPTH_TEST_WEIGHTS=1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_image

from apdepth import ApDepthPipeline


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(tiny_pipeline_dir, pipe, dtype):
    img = random_image(48, 64, seed=7)
    ref = pipe(img).depth
    gpu = ApDepthPipeline.from_pretrained(tiny_pipeline_dir, dtype=dtype).to("cuda")
    out = gpu(img).depth
    assert out.shape == ref.shape
    assert np.abs(out - ref).mean() < (1e-4 if dtype == torch.float32 else 0.05)


@pytest.mark.gpu
def test_model_cpu_offload(tiny_pipeline_dir):
    """Offloading moves each model to the GPU only while it runs; the result is the GPU pipeline's (the CPU's
    differs by TF32 convolutions, which test_cuda_matches_cpu bounds)."""
    img = random_image(40, 40, seed=8)
    on_gpu = ApDepthPipeline.from_pretrained(tiny_pipeline_dir).to("cuda")(img).depth
    offloaded = ApDepthPipeline.from_pretrained(tiny_pipeline_dir)
    offloaded.enable_model_cpu_offload()
    assert offloaded.unet.device.type == "cpu"  # nothing on the GPU until it runs
    np.testing.assert_allclose(offloaded(img).depth, on_gpu, atol=1e-5)


@pytest.mark.weights
def test_released_checkpoint_on_sample_photos():
    """The authors' checkpoint with the public DA2-Large prior: sensible depth on real photos."""
    from pathlib import Path

    from PIL import Image

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = ApDepthPipeline.from_pretrained("developy/ApDepth", prior="large").to(device)
    photos = sorted(Path(__file__).parents[1].joinpath("examples", "images").glob("*.jpg"))
    for path in photos:
        depth = pipe(Image.open(path), processing_resolution=768).depth[0]
        assert depth.shape == Image.open(path).size[::-1]
        assert depth.std() > 0.05  # a real scene has depth structure
