"""Training-side assembly: widening an SD2 UNet's conv_in to 8 channels, and building ApDepth from SD2."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from apdepth import ApDepthPipeline
from apdepth.diffusion import load_apdepth_unet, widen_conv_in
from apdepth.testing import tiny_prior, tiny_text_encoder, tiny_tokenizer, tiny_unet, tiny_vae


def test_widened_conv_in_equals_original_on_duplicated_input():
    unet4 = tiny_unet(in_channels=4, seed=1)
    w, b = unet4.conv_in.weight.clone(), unet4.conv_in.bias.clone()
    z = torch.randn(2, 4, 8, 10)
    emb = torch.randn(2, 2, 32)
    with torch.no_grad():
        ref = unet4(z, 1, encoder_hidden_states=emb).sample
        unet8 = widen_conv_in(unet4)
        out = unet8(torch.cat([z, z], 1), 1, encoder_hidden_states=emb).sample
    assert unet8.config.in_channels == 8 and unet8.conv_in.in_channels == 8
    torch.testing.assert_close(unet8.conv_in.weight, torch.cat([w, w], 1) * 0.5)
    torch.testing.assert_close(unet8.conv_in.bias, b)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_load_widens_sd_and_keeps_apdepth_unets(tmp_path):
    tiny_unet(in_channels=4, seed=2).save_pretrained(tmp_path / "sd" / "unet")
    unet = load_apdepth_unet(tmp_path / "sd")
    assert unet.config.in_channels == 8

    unet.save_pretrained(tmp_path / "apdepth")  # a folder that is the UNet itself
    again = load_apdepth_unet(tmp_path / "apdepth")
    for (k, a), (_, b) in zip(unet.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)

    tiny_unet(in_channels=5).save_pretrained(tmp_path / "odd")
    with pytest.raises(ValueError, match="5 input channels"):
        load_apdepth_unet(tmp_path / "odd")


def test_from_stable_diffusion_assembles_a_working_pipeline(tmp_path):
    sd = tmp_path / "sd2"
    tiny_unet(in_channels=4).save_pretrained(sd / "unet")
    tiny_vae().save_pretrained(sd / "vae")
    tiny_text_encoder().save_pretrained(sd / "text_encoder")
    tiny_tokenizer(tmp_path / "tok").save_pretrained(sd / "tokenizer")
    DDIMScheduler(prediction_type="v_prediction").save_pretrained(sd / "scheduler")
    prior_dir = tmp_path / "prior"
    tiny_prior().save_pretrained(prior_dir)

    pipe = ApDepthPipeline.from_stable_diffusion(sd, prior=str(prior_dir))
    assert pipe.unet.config.in_channels == 8
    assert pipe.scheduler.config.prediction_type == "sample"
    assert pipe.config.prior_name == str(prior_dir)
    out = pipe(torch.rand(3, 20, 28), processing_resolution=0)
    assert out.depth.shape == (1, 20, 28)
