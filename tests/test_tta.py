"""Test-time augmentation: flips are undone, members aligned, spread measured; works on any pipeline."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import random_image
from PIL import Image

from apdepth.postprocessing.tta import predict_tta, second_resolution


class StubPipeline:
    """Pipeline-shaped stub: depth = a per-pixel function of the image, plus ``ramp`` x the column
    coordinate (``ramp=0``: exactly flip-equivariant)."""

    def __init__(self, ramp: float = 0.0):
        self.ramp = ramp
        self.calls = []

    def __call__(self, images, processing_resolution=None, match_input_resolution=True, batch_size=1,
                 output_type="np", **kwargs):
        self.calls.append((len(images), processing_resolution, batch_size))
        depths = []
        for img in images:
            gray = img.float().mean(0).numpy() / 255.0  # [H, W]
            ramp = np.linspace(0, 1, gray.shape[1])[None, :]
            depths.append((0.5 * gray + self.ramp * ramp).astype(np.float32))
        return SimpleNamespace(depth=np.stack(depths))


def asymmetric_image():
    return random_image(24, 30, seed=3)


def symmetric_image():
    arr = np.asarray(random_image(24, 30, seed=4))
    arr = np.concatenate([arr[:, :15], arr[:, :15][:, ::-1]], axis=1)  # mirror the left half
    assert np.array_equal(arr, arr[:, ::-1])
    return Image.fromarray(arr)


@pytest.mark.parametrize("make_image", [symmetric_image, asymmetric_image])
def test_flip_equivariant_model_gives_zero_spread(make_image):
    stub = StubPipeline()
    out = predict_tta(stub, make_image(), flip=True)
    assert out.depth.shape == out.depth_std.shape == (1, 24, 30)
    assert out.members.shape == (1, 2, 24, 30)
    np.testing.assert_allclose(out.depth_std, 0.0, atol=1e-6)  # un-flipping makes the members agree
    gray = np.asarray(make_image().convert("RGB"), dtype=np.float32).mean(-1) / 255.0
    np.testing.assert_allclose(out.depth[0], 0.5 * gray, atol=1e-6)
    assert stub.calls == [(2, None, 1)]  # original and flip in one call


def test_spread_of_a_non_equivariant_model_is_hand_computable():
    stub = StubPipeline(ramp=0.4)
    out = predict_tta(stub, symmetric_image(), flip=True, align=False)
    ramp = np.linspace(0, 1, 30)
    # members: 0.5 g + 0.4 r and (flipped back) 0.5 g + 0.4 (1 - r): std = 0.4 |2r - 1| / 2
    np.testing.assert_allclose(out.depth_std[0], np.broadcast_to(0.2 * np.abs(2 * ramp - 1), (24, 30)), atol=1e-6)
    gray = np.asarray(symmetric_image().convert("RGB"), dtype=np.float32).mean(-1) / 255.0
    np.testing.assert_allclose(out.depth[0], 0.5 * gray + 0.2, atol=1e-6)


def test_alignment_removes_affine_disagreement():
    class Shifting(StubPipeline):  # the flipped member comes back at another scale and shift
        def __call__(self, images, **kw):
            out = super().__call__(images, **kw)
            out.depth[len(images) // 2:] = 0.5 * out.depth[len(images) // 2:] + 0.3
            return out

    out = predict_tta(Shifting(), asymmetric_image(), flip=True, align=True)
    np.testing.assert_allclose(out.depth_std, 0.0, atol=1e-5)
    assert predict_tta(Shifting(), asymmetric_image(), flip=True, align=False).depth_std.max() > 0.05


def test_tta_on_the_tiny_pipeline(pipe):
    image = symmetric_image()
    plain = pipe(image).depth[0]
    out = predict_tta(pipe, image, flip=True, processing_resolutions=(0, 16), align=False, colormap="Spectral",
                      batch_size=2)
    members = out.members[0]
    assert members.shape == (4, 24, 30)
    np.testing.assert_allclose(members[0], plain, atol=1e-5)  # the first member is the plain prediction
    # on a mirror-symmetric input the flipped member is the plain prediction mirrored
    np.testing.assert_allclose(members[1], plain[:, ::-1], atol=1e-5)
    np.testing.assert_allclose(out.depth_std[0], members.std(0), atol=1e-6)
    np.testing.assert_allclose(out.depth[0], np.clip(members.mean(0), 0, 1), atol=1e-6)
    assert out.depth_colored[0].size == (30, 24)
    # the spread is a mirror image of itself
    flip_only = predict_tta(pipe, image, flip=True, align=False)
    np.testing.assert_allclose(flip_only.depth_std[0], flip_only.depth_std[0][:, ::-1], atol=1e-5)
    np.testing.assert_allclose(flip_only.depth_std[0], np.abs(plain - plain[:, ::-1]) / 2, atol=1e-5)


def test_tta_arguments():
    with pytest.raises(ValueError) as e:
        predict_tta(StubPipeline(), asymmetric_image(), processing_resolutions=())
    assert "at least one resolution" in str(e.value)
    with pytest.raises(ValueError) as e:
        predict_tta(StubPipeline(), asymmetric_image(), match_input_resolution=False)
    assert "match_input_resolution=False" in str(e.value)
    assert second_resolution(480, 640, 768) == 576
    assert second_resolution(480, 640, 0) == 480
    assert second_resolution(20, 20, 0) == 64
    out = predict_tta(StubPipeline(), torch.rand(2, 3, 8, 10), flip=False)
    assert out.depth.shape == (2, 8, 10) and np.all(out.depth_std == 0)
