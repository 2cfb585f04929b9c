"""Code written for diffusers' ``MarigoldDepthPipeline`` output runs on ``ApDepthPipeline``'s.

The layouts and the helpers' results are checked against diffusers' own ``MarigoldImageProcessor``
functions and against the pipeline's existing ``depth`` / :func:`apdepth.postprocessing.tta.predict_tta` outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_image
from diffusers.pipelines.marigold.marigold_image_processing import MarigoldImageProcessor

from apdepth.postprocessing.tta import predict_tta


@pytest.fixture(scope="module")
def images():
    return [random_image(40, 56, seed=1), random_image(40, 56, seed=2)]


def test_prediction_layouts_match_marigold(pipe, images):
    out = pipe(images, processing_resolution=32)
    assert out.prediction.shape == (2, 40, 56, 1) and out.prediction.dtype == np.float32
    np.testing.assert_array_equal(out.prediction[..., 0], out.depth)  # depth unchanged, prediction a view
    assert out.uncertainty is None

    pt = pipe(images, processing_resolution=32, output_type="pt")
    assert pt.prediction.shape == (2, 1, 40, 56) and pt.prediction.dtype == torch.float32
    np.testing.assert_allclose(pt.prediction[:, 0].numpy(), out.depth, atol=1e-6)


def test_marigold_user_code_runs_on_apdepth_output(pipe, images):
    out = pipe(images, processing_resolution=32)
    # code written for MarigoldDepthPipeline's output
    vis = pipe.image_processor.visualize_depth(out.prediction)
    png = pipe.image_processor.export_depth_to_16bit_png(out.prediction)

    assert len(vis) == len(png) == 2
    for i in range(2):
        assert vis[i].mode == "RGB" and vis[i].size == (56, 40)
        expected_vis = MarigoldImageProcessor.colormap(torch.from_numpy(out.depth[i]), cmap="Spectral", bytes=True)
        np.testing.assert_array_equal(np.asarray(vis[i]), expected_vis.numpy())
        assert png[i].mode == "I;16" and png[i].size == (56, 40)
        levels = np.asarray(png[i]).astype(np.int64)
        np.testing.assert_array_equal(levels, (out.depth[i] * 65535).astype(np.uint16))
    # the same helpers on the pt layout give the same images
    pt = pipe(images, processing_resolution=32, output_type="pt")
    vis_pt = pipe.image_processor.visualize_depth(pt.prediction)
    assert np.abs(np.asarray(vis_pt[0]).astype(int) - np.asarray(vis[0]).astype(int)).max() <= 1


def test_return_dict_false_is_marigolds_tuple(pipe, images):
    prediction, uncertainty, latent = pipe(images[0], processing_resolution=32, return_dict=False)
    np.testing.assert_array_equal(prediction, pipe(images[0], processing_resolution=32).prediction)
    assert uncertainty is None and latent is None

    prediction, uncertainty, latent = pipe(images[0], processing_resolution=32, output_uncertainty=True,
                                           return_dict=False)
    assert prediction.shape == uncertainty.shape == (1, 40, 56, 1) and latent is None


def test_output_uncertainty_is_the_tta_spread(pipe, images):
    out = pipe(images, processing_resolution=32, output_uncertainty=True)
    tta = predict_tta(pipe, images, processing_resolutions=(32,), flip=True)
    assert out.uncertainty.shape == out.prediction.shape == (2, 40, 56, 1)
    np.testing.assert_allclose(out.prediction[..., 0], tta.depth, atol=1e-6)
    np.testing.assert_allclose(out.uncertainty[..., 0], tta.depth_std, atol=1e-6)
    # independently: std over the plain prediction and the flipped-back prediction of the mirror image,
    # the latter aligned to the former by least squares
    plain = pipe(images[0], processing_resolution=32).depth[0].astype(np.float64)
    mirrored = pipe(np.ascontiguousarray(np.asarray(images[0])[:, ::-1]), processing_resolution=32).depth[0][:, ::-1]
    a = np.stack([mirrored.ravel(), np.ones(mirrored.size)], axis=1).astype(np.float64)
    scale, shift = np.linalg.lstsq(a, plain.ravel(), rcond=None)[0]
    members = np.stack([plain, scale * mirrored + shift])
    np.testing.assert_allclose(out.uncertainty[0, ..., 0], members.std(axis=0), atol=1e-5)
    assert out.uncertainty.max() > 0  # the untrained tiny model is not mirror-symmetric

    pt = pipe(images, processing_resolution=32, output_uncertainty=True, output_type="pt")
    assert pt.uncertainty.shape == (2, 1, 40, 56)
    np.testing.assert_allclose(pt.uncertainty[:, 0].numpy(), out.uncertainty[..., 0], atol=1e-7)
    # Marigold's uncertainty visualiser takes it as is
    assert len(pipe.image_processor.visualize_uncertainty(out.uncertainty)) == 2


def test_uncertainty_argument_errors(pipe, images):
    with pytest.raises(ValueError, match="two augmentation members"):
        pipe(images[0], processing_resolution=32, output_uncertainty=True, tta_kwargs={"flip": False})
    with pytest.raises(ValueError, match="tta_kwargs takes"):
        pipe(images[0], processing_resolution=32, output_uncertainty=True, tta_kwargs={"reduction": "median"})
    with pytest.raises(ValueError, match="only applies"):
        pipe(images[0], processing_resolution=32, tta_kwargs={"flip": True})
    with pytest.raises(ValueError, match="match_input_resolution"):
        pipe(images[0], processing_resolution=32, output_uncertainty=True, match_input_resolution=False)


def test_mixed_sizes_give_lists_the_helpers_take(pipe):
    out = pipe([random_image(40, 56), random_image(48, 32)], processing_resolution=32)
    assert [p.shape for p in out.prediction] == [(40, 56), (48, 32)]
    assert [v.size for v in pipe.image_processor.visualize_depth(out.prediction)] == [(56, 40), (32, 48)]


def test_progress_bar_follows_set_progress_bar_config(pipe, images, capsys):
    pipe.set_progress_bar_config(disable=False)
    try:
        pipe(images[0], processing_resolution=32)
        assert "1/1" in capsys.readouterr().err  # on by default, as Marigold's
        pipe(images[0], processing_resolution=32, show_progress_bar=False)
        assert "1/1" not in capsys.readouterr().err
    finally:
        pipe.set_progress_bar_config(disable=True)
    pipe(images[0], processing_resolution=32)
    assert "1/1" not in capsys.readouterr().err
