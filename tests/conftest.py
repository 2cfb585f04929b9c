"""Shared fixtures: tiny seeded ApDepth components saved with save_pretrained and loaded back
through the public API, exactly as users load real checkpoints. No network."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# compiled kernels of the tests go to a temporary folder, not to the user's ~/.cache/apdepth/inductor
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="apdepth-test-inductor-"))
torch.set_num_threads(min(2, torch.get_num_threads()))


# The fast unit lane, `pytest -m unit` (about a minute on 2 cores): the tests of these files that build no
# pipeline, i.e. use none of PIPELINE_FIXTURES (directly or through another fixture) and are not slow. The full
# suite (`python -m pytest -m "not slow"`, scripts/test.sh) still runs everything.
UNIT_FILES = {
    "test_adapter.py", "test_affine_metric.py", "test_allocator.py", "test_architecture.py", "test_data_archive.py",
    "test_data_masks.py", "test_data_readers.py", "test_evaluation_edges.py", "test_evaluation_marigold.py",
    "test_evaluation_metrics.py", "test_evaluation_runner.py", "test_float_outputs.py", "test_image_utils.py",
    "test_losses.py", "test_packaging.py", "test_pointcloud.py", "test_prior.py", "test_synth_datasets.py",
    "test_synth_render.py", "test_training_config.py", "test_training_data.py", "test_tta.py", "test_video_motion.py",
    "test_whdr.py",
}
PIPELINE_FIXTURES = {"pipe", "tiny_pipeline_dir", "embedded_pipe"}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the markers added here
def pytest_collection_modifyitems(config, items):
    """Mark the unit lane; GPU tests need CUDA; tests on the real released weights need APDEPTH_TEST_WEIGHTS=1
    (and network)."""
    missing = UNIT_FILES - {p.name for p in Path(__file__).parent.glob("test_*.py")}
    if missing:
        raise pytest.UsageError(f"tests/conftest.py: UNIT_FILES names files that do not exist: {sorted(missing)}")
    no_cuda = not torch.cuda.is_available()
    no_weights = os.environ.get("APDEPTH_TEST_WEIGHTS") != "1"
    for item in items:
        if (item.path.name in UNIT_FILES and not PIPELINE_FIXTURES & set(getattr(item, "fixturenames", ()))
                and "slow" not in item.keywords):
            item.add_marker(pytest.mark.unit)
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
