"""Shared fixtures: tiny seeded ApDepth components saved with save_pretrained and loaded back
through the public API, exactly as users load real checkpoints. No network."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    """GPU tests need CUDA; tests on the real released weights need APDEPTH_TEST_WEIGHTS=1 (and network)."""
    no_cuda = not torch.cuda.is_available()
    no_weights = os.environ.get("APDEPTH_TEST_WEIGHTS") != "1"
    for item in items:
        if no_cuda and "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if no_weights and "weights" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs the released weights: set APDEPTH_TEST_WEIGHTS=1"))


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> str:
    """A tiny untrained ApDepth pipeline saved in the package's own layout (with prior/)."""
    from apdepth.testing import tiny_pipeline

    work = tmp_path_factory.mktemp("tiny_pipeline")
    pipe = tiny_pipeline(work / "src")
    path = work / "saved"
    pipe.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def pipe(tiny_pipeline_dir):
    from apdepth import ApDepthPipeline

    pipe = ApDepthPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def embedded_pipe():
    """The embedded demo model as `apdepth` loads it without --model (fp32)."""
    import torch

    from apdepth import ApDepthPipeline
    from apdepth.embedded import embedded_model_path

    pipe = ApDepthPipeline.from_pretrained(embedded_model_path(), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_image(height: int, width: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    # smooth random field plus noise: more image-like than white noise
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], axis=-1)
    arr = np.clip((base * 0.4 + 0.5 + rng.normal(0, 0.05, base.shape)) * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert(mode)
