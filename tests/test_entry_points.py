"""Ecosystem entry points: diffusers' ``custom_pipeline`` loading and the transformers-style one-liner."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import random_image
from diffusers import DiffusionPipeline

import apdepth
from apdepth import ApDepthPipeline
from apdepth.community import PIPELINE_FILE


@pytest.fixture(scope="module")
def image():
    return random_image(40, 56, seed=3)


def _load_custom(path):
    pipe = DiffusionPipeline.from_pretrained(path, custom_pipeline=PIPELINE_FILE, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_custom_pipeline_file_loads_and_matches(tiny_pipeline_dir, pipe, image):
    custom = _load_custom(tiny_pipeline_dir)
    assert isinstance(custom, ApDepthPipeline) and type(custom) is not ApDepthPipeline  # the file's one class
    assert custom.prior is not None
    np.testing.assert_array_equal(custom(image, processing_resolution=32).prediction,
                                  pipe(image, processing_resolution=32).prediction)


def test_custom_pipeline_supplies_a_missing_prior_like_from_pretrained(tiny_pipeline_dir, tmp_path, image):
    """A folder without prior/ (the release's layout) that names its prior: the custom pipeline loads that prior on
    the first call, as ApDepthPipeline.from_pretrained does on load."""
    folder = tmp_path / "no_prior"
    shutil.copytree(tiny_pipeline_dir, folder)
    shutil.move(folder / "prior", tmp_path / "prior")
    index = json.loads((folder / "model_index.json").read_text())
    del index["prior"]
    index["prior_name"] = str(tmp_path / "prior")
    (folder / "model_index.json").write_text(json.dumps(index))

    reference = ApDepthPipeline.from_pretrained(folder)
    reference.set_progress_bar_config(disable=True)
    custom = _load_custom(folder)
    assert custom.prior is None
    np.testing.assert_array_equal(custom(image, processing_resolution=32).depth,
                                  reference(image, processing_resolution=32).depth)
    assert custom.prior is not None


def test_plain_diffusion_pipeline_names_the_missing_class(tiny_pipeline_dir):
    # diffusers looks _class_name up in its own namespace; the docs point to custom_pipeline instead
    with pytest.raises(AttributeError, match="ApDepthPipeline"):
        DiffusionPipeline.from_pretrained(tiny_pipeline_dir)


def test_depth_pipeline_one_liner(tiny_pipeline_dir, pipe, image, tmp_path):
    estimator = apdepth.depth_pipeline("depth-estimation", model=tiny_pipeline_dir, device="cpu",
                                       dtype=torch.float32, processing_resolution=32)
    result = estimator(image)
    assert set(result) == {"predicted_depth", "depth"}
    depth = result["predicted_depth"]
    assert isinstance(depth, torch.Tensor) and depth.shape == (40, 56) and depth.dtype == torch.float32
    expected = pipe(image, processing_resolution=32).depth[0]
    np.testing.assert_array_equal(depth.numpy(), expected)
    assert result["depth"].mode == "L" and result["depth"].size == (56, 40)
    scaled = (expected - expected.min()) / (expected.max() - expected.min())  # as transformers' pipeline does
    np.testing.assert_array_equal(np.asarray(result["depth"]), (scaled * 255).astype(np.uint8))

    path = tmp_path / "photo.png"
    image.save(path)
    several = estimator([str(path), image])
    assert isinstance(several, list) and len(several) == 2
    np.testing.assert_array_equal(several[0]["predicted_depth"].numpy(), expected)  # PNG is lossless
    with pytest.raises(ValueError, match="depth-estimation"):
        apdepth.depth_pipeline("image-classification", model=tiny_pipeline_dir)
    assert apdepth.depth_pipeline is __import__("apdepth.hf_pipeline", fromlist=["pipeline"]).pipeline


def test_depth_pipeline_is_lazy():
    code = ("import sys, apdepth; assert 'torch' not in sys.modules; "
            "f = apdepth.depth_pipeline; assert callable(f) and 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
