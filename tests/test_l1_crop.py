"""stage2.l1_crop: the pixel L1 on a random latent crop. Full-size crops are the exact path, crops take the
matching pixels, and over many crops the estimate centres on the whole image's L1."""

from __future__ import annotations

import pytest
import torch

from apdepth.benchmark.training import training_batch
from apdepth.testing import tiny_pipeline
from apdepth.training.config import ConfigError, Stage2Config, build_config
from apdepth.training.inputs import TrainModule, encode_inputs
from apdepth.training.stage2 import Stage2, coverage_weights, random_crops


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pipe = tiny_pipeline(tmp_path_factory.mktemp("crop"))
    inputs = encode_inputs(pipe, training_batch(2, 32, 48, torch.device("cpu"), seed=3))
    return pipe, inputs


def _l1_and_grad(pipe, inputs, crop, seed=0):
    unet = pipe.unet.requires_grad_(True)
    unet.zero_grad(set_to_none=True)
    stage = Stage2(Stage2Config(l1_crop=crop, latent_mse_weight=0.0), pipe.vae, torch.Generator().manual_seed(seed))
    terms = stage.losses(TrainModule(pipe), inputs, step=1)
    terms["loss"].backward()
    grad = torch.cat([p.grad.flatten() for p in unet.parameters() if p.grad is not None])
    unet.requires_grad_(False)
    return float(terms["pixel_l1"].detach()), grad


def test_full_size_crop_is_the_exact_path(setup):
    pipe, inputs = setup
    exact, grad = _l1_and_grad(pipe, inputs, None)
    for crop in ("32x48", "64x64"):  # the image's size, and larger (clipped to the image)
        l1, g = _l1_and_grad(pipe, inputs, crop)
        assert l1 == exact
        assert torch.equal(g, grad)


def test_crops_take_the_matching_pixels():
    b, h, w = 3, 4, 6
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    latent = (ys * 100 + xs).float().expand(b, 4, h, w).clone()  # cell (y, x) holds 100 y + x
    py, px = torch.meshgrid(torch.arange(8 * h), torch.arange(8 * w), indexing="ij")
    target = (py * 1000 + px).float().expand(b, 1, 8 * h, 8 * w).clone()
    mask = target.remainder(2) == 0
    seen = set()
    for seed in range(30):
        lat, tgt, msk, weight = random_crops(latent, target, mask, (16, 24), torch.Generator().manual_seed(seed))
        assert lat.shape == (b, 4, 2, 3) and tgt.shape == msk.shape == weight.shape == (b, 1, 16, 24)
        for i in range(b):
            y, x = divmod(int(lat[i, 0, 0, 0]), 100)
            seen.add((y, x))
            assert float(tgt[i, 0, 0, 0]) == 8 * y * 1000 + 8 * x
            assert torch.equal(msk[i], tgt[i].remainder(2) == 0)
            assert torch.equal(tgt[i, 0], target[i, 0, 8 * y:8 * y + 16, 8 * x:8 * x + 24])
    assert seen == {(y, x) for y in range(h - 1) for x in range(w - 2)}  # every position occurs


def test_coverage_weights_make_the_crop_sums_unbiased():
    """Averaged over every crop position, the weighted sums over the crop equal the sums over the image,
    whatever the values (here: large at the border, where uniform crops look least often)."""
    h, w, hc, wc = 5, 7, 2, 3
    gen = torch.Generator().manual_seed(0)
    values = torch.rand(8 * h, 8 * w, generator=gen)
    values[:8] += 5  # a top border row of cells with large errors
    mask = torch.rand(8 * h, 8 * w, generator=gen) > 0.3
    wy = coverage_weights(h, hc).repeat_interleave(8)
    wx = coverage_weights(w, wc).repeat_interleave(8)
    num = den = 0.0
    positions = [(y, x) for y in range(h - hc + 1) for x in range(w - wc + 1)]
    for y, x in positions:
        sl = (slice(8 * y, 8 * (y + hc)), slice(8 * x, 8 * (x + wc)))
        wgt = wy[sl[0], None] * wx[None, sl[1]]
        num += float((wgt * values[sl] * mask[sl]).sum()) / len(positions)
        den += float((wgt * mask[sl]).sum()) / len(positions)
    assert num == pytest.approx(float((values * mask).sum()), rel=1e-6)
    assert den == pytest.approx(float(mask.sum()), rel=1e-6)
    assert coverage_weights(6, 6).tolist() == [1.0] * 6
    assert coverage_weights(3, 2).tolist() == [2.0, 1.0, 2.0]  # the middle cell is in both positions


def test_crop_l1_centres_on_the_full_l1(setup):
    """The mean of many seeded half-size crops' L1 is within 5% of the whole image's L1 (tiny model)."""
    pipe, inputs = setup
    module = TrainModule(pipe)
    full = Stage2(Stage2Config(latent_mse_weight=0.0), pipe.vae)
    crop = Stage2(Stage2Config(l1_crop="16x24", latent_mse_weight=0.0), pipe.vae, torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact = float(full.losses(module, inputs, step=1)["pixel_l1"])
        estimates = torch.tensor([float(crop.losses(module, inputs, step=1)["pixel_l1"]) for _ in range(200)])
    assert estimates.std() > 0  # the crops do move
    assert float(estimates.mean()) == pytest.approx(exact, rel=0.05)


@pytest.mark.parametrize("bad", ["240", "240x0", "100x320", "axb"])
def test_bad_crop_sizes_are_config_errors(bad):
    with pytest.raises(ConfigError, match="stage2.l1_crop"):
        build_config(overrides=["stage=2", f"stage2.l1_crop={bad}"])


def test_crop_override_parses():
    assert build_config(overrides=["stage=2", "stage2.l1_crop=240x320"]).stage2.l1_crop_size() == (240, 320)
    assert build_config(overrides=["stage=2"]).stage2.l1_crop_size() is None
