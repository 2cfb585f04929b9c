"""stage2.prior_degrade: order-keeping degradations of the prior's map (monotone remap, blur, lower
resolution) and the stage-2 step that encodes the degraded map in place of the clean one."""

from __future__ import annotations

import pytest
import torch

from apdepth.benchmark.training import training_batch
from apdepth.testing import tiny_pipeline
from apdepth.training.config import ConfigError, Stage2Config, build_config
from apdepth.training.inputs import encode_inputs
from apdepth.training.prior_degrade import degrade_prior, gaussian_blur, monotone_remap, stretch
from apdepth.training.stage2 import Stage2


def test_monotone_remap_is_the_piecewise_linear_curve():
    u = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]).view(1, 1, 1, 5)
    knots = torch.tensor([[0.0, 0.8, 1.0]])  # (0, 0) -> (0.5, 0.8) -> (1, 1)
    out = monotone_remap(u, knots).flatten().tolist()
    assert out == pytest.approx([0.0, 0.4, 0.8, 0.9, 1.0])
    identity = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]])
    assert torch.allclose(monotone_remap(u, identity), u)


def test_gaussian_blur_keeps_constants_and_mass_and_spreads_by_sigma():
    flat = torch.full((1, 1, 9, 11), 0.3)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat)
    impulse = torch.zeros(1, 1, 41, 41)
    impulse[..., 20, 20] = 1.0
    out = gaussian_blur(impulse, 2.0)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)  # far from the border: nothing lost
    d = torch.arange(41.0) - 20
    var_x = float((out[0, 0].sum(0) * d ** 2).sum())
    assert var_x == pytest.approx(4.0, rel=0.02)  # sigma^2 (the kernel is cut at 3 sigma)
    assert gaussian_blur(impulse, 0.1) is impulse  # below 0.3 px: no blur


def test_stretch_maps_the_minimum_and_maximum_to_the_given_range():
    x = torch.tensor([2.0, 3.0, 6.0]).view(1, 1, 1, 3)
    lo, hi = torch.full((1, 1, 1, 1), -1.0), torch.ones(1, 1, 1, 1)
    assert stretch(x, lo, hi).flatten().tolist() == pytest.approx([-1.0, -0.5, 1.0])
    assert stretch(x, lo + 1, hi * 0.5).flatten().tolist() == pytest.approx([0.0, 0.125, 0.5])


def test_degradation_keeps_each_maps_own_range():
    """The release's ("compat") prior output is unnormalised: a degraded map keeps the clean map's minimum and
    maximum, so the UNet sees the value range it sees at inference."""
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(4, 1, 32, 64) * torch.tensor([0.5, 1.0, 2.0, 7.0]).view(
        4, 1, 1, 1) + torch.tensor([0.0, 0.1, -3.0, 2.0]).view(4, 1, 1, 1)
    out = degrade_prior(ramp.contiguous(), 1.0, torch.Generator().manual_seed(2))
    torch.testing.assert_close(out.amin((1, 2, 3)), ramp.amin((1, 2, 3)))
    torch.testing.assert_close(out.amax((1, 2, 3)), ramp.amax((1, 2, 3)))


def test_degradation_keeps_the_order_and_the_prior_range():
    ramp = torch.linspace(-1, 1, 64).view(1, 1, 1, 64).expand(8, 1, 48, 64).contiguous()  # far on the left
    out = degrade_prior(ramp, 1.0, torch.Generator().manual_seed(0))
    assert out.shape == ramp.shape
    assert torch.all(out[..., 1:] - out[..., :-1] >= -1e-5)  # still non-decreasing along the ramp
    assert torch.allclose(out.amin((1, 2, 3)), torch.full((8,), -1.0)) and torch.allclose(out.amax((1, 2, 3)),
                                                                                           torch.ones(8))
    assert not torch.allclose(out, ramp, atol=1e-3)  # the curve changed
    again = degrade_prior(ramp, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # deterministic in the generator
    assert degrade_prior(ramp, 0.0) is ramp


def test_each_sample_is_degraded_with_probability_p():
    x = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    before = x.clone()
    out = degrade_prior(x, 0.5, torch.Generator().manual_seed(1))
    same = sum(torch.equal(out[i], x[i]) for i in range(64))
    assert 16 <= same <= 48  # 32 expected; the others changed
    assert torch.equal(x, before)  # the input is not modified in place


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pipe = tiny_pipeline(tmp_path_factory.mktemp("degrade"))
    inputs = encode_inputs(pipe, training_batch(2, 32, 48, torch.device("cpu"), seed=3))
    return pipe, inputs


def test_stage2_encodes_the_degraded_prior_map(setup):
    pipe, inputs = setup
    stage = Stage2(Stage2Config(prior_degrade=1.0), pipe.vae, torch.Generator().manual_seed(0), pipe=pipe)
    with torch.no_grad():
        out = stage.prepare_inputs(inputs)
        disp = degrade_prior(pipe.run_prior(inputs.rgb), 1.0, torch.Generator().manual_seed(0))
        expected = pipe.encode_condition(inputs.rgb, disp, inputs.rgb_latent)[:, :4]
    torch.testing.assert_close(out.prior_latent, expected)
    assert not torch.allclose(out.prior_latent, inputs.prior_latent, atol=1e-4)
    assert out.rgb_latent is inputs.rgb_latent and out.depth_latent is inputs.depth_latent
    # the paper's default leaves the batch alone
    assert Stage2(Stage2Config(), pipe.vae).prepare_inputs(inputs) is inputs


def test_prior_degrade_needs_a_prior_and_a_probability(setup):
    pipe, _ = setup
    with pytest.raises(ValueError, match="needs a pipeline with a prior"):
        Stage2(Stage2Config(prior_degrade=0.5), pipe.vae)
    with pytest.raises(ConfigError, match="prior_degrade is a probability"):
        build_config(None, ["stage=2", "stage2.prior_degrade=1.5"])
    with pytest.raises(ConfigError, match="model.prior is 'none'"):
        build_config(None, ["stage=2", "stage2.prior_degrade=0.5", "model.prior=none"])
