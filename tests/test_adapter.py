"""Stage-1 modules: the feature adapters (Eq. 7-9, Table 3) and the frozen external encoders (Table 5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from apdepth.modules import (
    CLIPEncoder,
    ConvFeatureAdapter,
    DINOv2Encoder,
    MLPFeatureAdapter,
    SAMEncoder,
    build_adapter,
    load_adapter,
    load_external_encoder,
)
from apdepth.testing import tiny_clip_vision, tiny_dinov2, tiny_prior, tiny_sam_vision


def test_conv_adapter_layers_follow_eq_7_to_9():
    adapter = ConvFeatureAdapter(in_channels=64, out_channels=48, num_groups=8)
    kinds = [type(m) for m in adapter.net]
    assert kinds == [nn.Conv2d, nn.GroupNorm, nn.SiLU, nn.Conv2d, nn.GroupNorm, nn.SiLU, nn.Conv2d]
    assert [adapter.net[i].kernel_size for i in (0, 3, 6)] == [(1, 1), (3, 3), (1, 1)]
    assert adapter.net[0].in_channels == 64 and adapter.net[6].out_channels == 48
    assert adapter.net[1].num_groups == 8 and adapter.net[3].out_channels == 48  # hidden = out by default
    assert adapter(torch.randn(2, 64, 5, 7)).shape == (2, 48, 5, 7)


def test_conv_adapter_sees_neighbours_and_mlp_does_not():
    """Perturbing one position changes the conv adapter's output in its 3x3 neighbourhood only, and the
    MLP adapter's output at that position only."""
    torch.manual_seed(0)
    x = torch.randn(1, 16, 7, 7)
    bumped = x.clone()
    bumped[0, :, 3, 3] += 5.0
    for adapter, reach in ((ConvFeatureAdapter(16, 8, num_groups=4), 1), (MLPFeatureAdapter(16, 8), 0)):
        # GroupNorm mixes statistics over the whole map, so compare with the norms frozen: eval on a
        # model whose GroupNorms are replaced by identities isolates the spatial reach.
        for i, m in enumerate(adapter.net):
            if isinstance(m, nn.GroupNorm):
                adapter.net[i] = nn.Identity()
        with torch.no_grad():
            changed = (adapter(bumped) - adapter(x)).abs().sum(1)[0] > 1e-6  # [7, 7]
        expected = torch.zeros(7, 7, dtype=torch.bool)
        expected[3 - reach : 4 + reach, 3 - reach : 4 + reach] = True
        assert torch.equal(changed, expected), type(adapter).__name__


def test_adapters_save_and_load(tmp_path):
    for kind in ("conv", "mlp"):
        adapter = build_adapter(kind, 32, 16, hidden_channels=24, num_groups=8)
        adapter.save_pretrained(tmp_path / kind)
        again = load_adapter(tmp_path / kind)
        assert type(again) is type(adapter)
        x = torch.randn(1, 32, 3, 3)
        torch.testing.assert_close(again(x), adapter(x))
    with pytest.raises(ValueError, match="4 groups do not divide 30 channels"):
        build_adapter("conv", 32, 30, num_groups=4)
    with pytest.raises(ValueError, match="Unknown adapter 'linear'"):
        build_adapter("linear", 32, 16)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_adapter(tmp_path / "nothing")


def test_dinov2_encoder_grid_and_normalisation():
    model = tiny_dinov2()
    encoder = DINOv2Encoder(model)
    rgb = torch.rand(2, 3, 48, 64) * 2 - 1
    features = encoder(rgb)
    assert features.shape == (2, 32, 3, 5)  # 48/14 -> 3 patches, 64/14 -> 5 (nearest multiple: 42 x 70)
    x = ((rgb + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = torch.nn.functional.interpolate(x, size=(42, 70), mode="bicubic", align_corners=False, antialias=True)
    with torch.no_grad():
        tokens = model(pixel_values=x).last_hidden_state[:, 1:]  # after the final LayerNorm, CLS dropped
    torch.testing.assert_close(features, tokens.transpose(1, 2).reshape(2, 32, 3, 5))
    assert DINOv2Encoder(model, resolution=28)(rgb).shape[-2:] == (2, 2)


def test_encoders_are_frozen():
    encoder = DINOv2Encoder(tiny_dinov2())
    wrapper = nn.Sequential(encoder)
    wrapper.train()
    assert not encoder.training and not encoder.model.training
    assert not any(p.requires_grad for p in encoder.parameters())
    out = encoder(torch.zeros(1, 3, 28, 28, requires_grad=True))
    assert not out.requires_grad


def test_prior_backbone_encoder_shares_weights_and_matches_the_backbone():
    prior = tiny_prior()
    backbone = prior.model.backbone
    encoder = DINOv2Encoder.from_backbone(backbone)
    assert encoder.model.embeddings is backbone.embeddings  # no copy of the DINOv2 weights
    rgb = torch.rand(1, 3, 42, 56) * 2 - 1
    x = encoder.resize(encoder.normalize(rgb), (42, 56))
    with torch.no_grad():
        last = backbone(pixel_values=x).feature_maps[-1]  # the last layer, layer-normed, with CLS
    torch.testing.assert_close(encoder(rgb), last[:, 1:].transpose(1, 2).reshape(1, 32, 3, 4))
    with pytest.raises(TypeError, match="not a DINOv2 backbone"):
        DINOv2Encoder.from_backbone(nn.Linear(2, 2))


def test_clip_and_sam_encoders():
    rgb = torch.rand(2, 3, 48, 64) * 2 - 1
    clip = CLIPEncoder(tiny_clip_vision(), resolution=56)  # 42 x 56 -> 3 x 4 patches
    assert clip(rgb).shape == (2, 32, 3, 4)
    sam = SAMEncoder(tiny_sam_vision(output_channels=24))
    # long side 64 (the model's input size), 48 x 64 padded to 64 x 64: the padded bottom row is cropped
    assert sam(rgb).shape == (2, 24, 3, 4)


def test_load_external_encoders_from_saved_folders(tmp_path):
    tiny_dinov2().save_pretrained(tmp_path / "dino")
    tiny_clip_vision().save_pretrained(tmp_path / "clip")
    tiny_sam_vision().save_pretrained(tmp_path / "sam")
    rgb = torch.rand(1, 3, 32, 48) * 2 - 1
    for kind, folder, cls in (("dinov2", "dino", DINOv2Encoder), ("openclip", "clip", CLIPEncoder),
                              ("sam", "sam", SAMEncoder)):
        encoder = load_external_encoder(kind, tmp_path / folder)
        assert isinstance(encoder, cls) and encoder.out_channels == 32
        assert encoder(rgb).shape[:2] == (1, 32)
    with pytest.raises(ValueError, match="not DINOv2"):
        load_external_encoder("dinov2", tmp_path / "clip")
    with pytest.raises(ValueError, match="unknown encoder 'vit'"):
        load_external_encoder("vit")
    with pytest.raises(OSError, match="Cannot load the sam external encoder"):
        load_external_encoder("sam", tmp_path / "missing", local_files_only=True)
