"""Depth Anything V2 prior: loading paths (transformers folder, saved prior, original .pth),
preprocessing modes, and the architecture table."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from accelerate import init_empty_weights
from transformers import DepthAnythingForDepthEstimation

from apdepth.priors import DepthAnythingPrior, get_variant, load_prior
from apdepth.priors.variants import VARIANTS
from apdepth.testing import tiny_depth_anything_config, tiny_prior

# transformers -> original Depth Anything V2 names, written out by hand from the original code
# (depth_anything_v2/dpt.py, dinov2.py, util/blocks.py). Fusion layer k of transformers is
# refinenet(4 - k) of the original; layerN_rn is neck.convs.(N-1).
_TO_ORIGINAL = [
    (r"backbone\.embeddings\.cls_token", "pretrained.cls_token"),
    (r"backbone\.embeddings\.mask_token", "pretrained.mask_token"),
    (r"backbone\.embeddings\.position_embeddings", "pretrained.pos_embed"),
    (r"backbone\.embeddings\.patch_embeddings\.projection\.", "pretrained.patch_embed.proj."),
    (r"backbone\.layernorm\.", "pretrained.norm."),
    (r"backbone\.encoder\.layer\.(\d+)\.norm(\d)\.", r"pretrained.blocks.\1.norm\2."),
    (r"backbone\.encoder\.layer\.(\d+)\.attention\.(o_proj|output\.dense)\.", r"pretrained.blocks.\1.attn.proj."),
    (r"backbone\.encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1", r"pretrained.blocks.\1.ls\2.gamma"),
    (r"backbone\.encoder\.layer\.(\d+)\.mlp\.fc(\d)\.", r"pretrained.blocks.\1.mlp.fc\2."),
    (r"backbone\.encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"pretrained.blocks.\1.mlp.w12."),
    (r"backbone\.encoder\.layer\.(\d+)\.mlp\.(weights_out|down_proj)\.", r"pretrained.blocks.\1.mlp.w3."),
    (r"neck\.reassemble_stage\.layers\.(\d)\.projection\.", r"depth_head.projects.\1."),
    (r"neck\.reassemble_stage\.layers\.(\d)\.resize\.", r"depth_head.resize_layers.\1."),
    (r"head\.conv1\.", "depth_head.scratch.output_conv1."),
    (r"head\.conv2\.", "depth_head.scratch.output_conv2.0."),
    (r"head\.conv3\.", "depth_head.scratch.output_conv2.2."),
]
_FUSION_PART = {"projection": "out_conv", "residual_layer1.convolution1": "resConfUnit1.conv1",
                "residual_layer1.convolution2": "resConfUnit1.conv2",
                "residual_layer2.convolution1": "resConfUnit2.conv1",
                "residual_layer2.convolution2": "resConfUnit2.conv2"}


def to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write a transformers DA2 state dict the way the original release stores it."""
    out, qkv, w12 = {}, {}, {}
    for key, value in state_dict.items():
        m = re.match(r"backbone\.encoder\.layer\.(\d+)\.mlp\.(gate|up)_proj\.(weight|bias)", key)
        if m:  # newer transformers split the fused SwiGLU input projection: w12 = [gate; up]
            w12.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
            continue
        m = re.match(r"backbone\.encoder\.layer\.(\d+)\.attention\.(?:attention\.)?(q|k|v|query|key|value)(?:_proj)?\.(weight|bias)", key)
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)[0]] = value
            continue
        m = re.match(r"neck\.convs\.(\d)\.(.*)", key)
        if m:
            out[f"depth_head.scratch.layer{int(m.group(1)) + 1}_rn.{m.group(2)}"] = value
            continue
        m = re.match(r"neck\.fusion_stage\.layers\.(\d)\.(.+)\.(weight|bias)", key)
        if m:
            out[f"depth_head.scratch.refinenet{4 - int(m.group(1))}.{_FUSION_PART[m.group(2)]}.{m.group(3)}"] = value
            continue
        for pattern, repl in _TO_ORIGINAL:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            raise AssertionError(f"unmapped test key {key}")
    for (layer, kind), parts in qkv.items():
        out[f"pretrained.blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    for (layer, kind), parts in w12.items():
        out[f"pretrained.blocks.{layer}.mlp.w12.{kind}"] = torch.cat([parts["gate"], parts["up"]])
    return out


@pytest.mark.parametrize("swiglu", [False, True])  # ViT-S/B/L use an MLP, ViT-G a fused SwiGLU
def test_original_pth_equals_transformers_checkpoint(tmp_path, swiglu):
    config = tiny_depth_anything_config(swiglu=swiglu)
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(config).eval()
    for p in model.parameters():  # non-trivial weights everywhere
        torch.nn.init.normal_(p, std=0.2)
    model.save_pretrained(tmp_path / "hf")
    pth = tmp_path / "depth_anything_v2_custom.pth"
    original = to_original(model.state_dict())
    n_layers = config.backbone_config.num_hidden_layers
    n_split_mlp = 2 if any("gate_proj" in k for k in model.state_dict()) else 0  # gate+up -> w12
    assert len(original) == len(model.state_dict()) - (4 + n_split_mlp) * n_layers  # q, k, v -> qkv
    torch.save(original, pth)

    from_hf = load_prior(str(tmp_path / "hf"))
    from_pth = load_prior(str(pth), config=config)
    x = torch.rand(2, 3, 30, 44) * 2 - 1
    out_hf, out_pth = from_hf(x), from_pth(x)
    assert out_hf.shape == (2, 1, 30, 44)
    assert out_hf.std() > 0
    torch.testing.assert_close(out_pth, out_hf, rtol=0, atol=0)


def test_original_pth_with_foreign_keys_names_the_file(tmp_path):
    config = tiny_depth_anything_config()
    sd = to_original(DepthAnythingForDepthEstimation(config).state_dict())
    sd["decoder.extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError) as err:
        load_prior(str(path), config=config)
    assert str(path) in str(err.value) and "decoder.extra.weight" in str(err.value)


def test_original_pth_with_missing_weights_is_refused(tmp_path):
    config = tiny_depth_anything_config()
    sd = to_original(DepthAnythingForDepthEstimation(config).state_dict())
    del sd["depth_head.scratch.output_conv1.weight"]
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match="do not fit"):
        load_prior(str(path), config=config)


class Payload:  # an arbitrary class: loading it needs full (unsafe) unpickling
    pass


def test_pickled_objects_are_not_executed(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, path)
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_prior(str(path), config=tiny_depth_anything_config())


def test_saved_prior_round_trip(tmp_path):
    prior = tiny_prior(seed=1)
    prior.save_pretrained(tmp_path)
    again = load_prior(str(tmp_path))
    assert isinstance(again, DepthAnythingPrior) and again.preprocessing == "compat"
    x = torch.rand(1, 3, 28, 28) * 2 - 1
    torch.testing.assert_close(again(x), prior(x))
    switched = load_prior(str(tmp_path), preprocessing="normalized")
    assert switched.preprocessing == "normalized"


def _captured_input(prior, x):
    seen = []
    handle = prior.model.register_forward_pre_hook(lambda m, args, kw: seen.append(kw["pixel_values"]),
                                                   with_kwargs=True)
    out = prior(x)
    handle.remove()
    return seen[0], out


def test_compat_preprocessing_is_the_release_recipe():
    prior = tiny_prior()
    x = torch.rand(1, 3, 40, 52) * 2 - 1
    seen, out = _captured_input(prior, x)
    assert seen.shape == (1, 3, 42, 56)  # next multiples of 14
    expected = F.interpolate(x, size=(42, 56), mode="bilinear", align_corners=True)  # no normalisation
    torch.testing.assert_close(seen, expected)
    raw = prior.model(pixel_values=expected).predicted_depth[:, None]
    torch.testing.assert_close(out, F.interpolate(raw, size=(40, 52), mode="bilinear", align_corners=True))
    assert out.min() >= 0 and out.max() > 1.0  # ReLU output, not normalised


def test_normalized_preprocessing():
    prior = tiny_prior(preprocessing="normalized")
    x = torch.rand(2, 3, 40, 60) * 2 - 1
    seen, out = _captured_input(prior, x)
    h, w = seen.shape[-2:]
    assert h % 14 == 0 and w % 14 == 0 and min(h, w) >= 518 and abs(w / h - 1.5) < 0.05
    assert seen.mean() < 0.5 and seen.min() < -1.0  # ImageNet normalisation applied
    flat = out.flatten(1)
    torch.testing.assert_close(flat.min(1).values, torch.full((2,), -1.0))
    torch.testing.assert_close(flat.max(1).values, torch.full((2,), 1.0))


def test_prior_is_frozen_and_stays_in_eval():
    prior = tiny_prior()
    prior.train()
    assert not prior.training and not prior.model.training
    assert not any(p.requires_grad for p in prior.parameters())
    x = torch.rand(1, 3, 28, 28, requires_grad=True) * 2 - 1
    assert not prior(x).requires_grad


def test_size_names_and_unreleased_giant():
    assert get_variant("vitl") is get_variant("Large") is VARIANTS["large"]
    with pytest.raises(ValueError, match="Unknown Depth Anything V2 size"):
        get_variant("huge")
    with pytest.raises(ValueError, match="depth_anything_v2_vitg.pth"):
        load_prior("giant")


# Published sizes: DA2-S/B/L 24.8M / 97.5M / 335.3M in total; ViT-G's backbone is DINOv2 ViT-g/14.
@pytest.mark.parametrize(("name", "part", "millions"), [
    ("small", "all", 24.8), ("base", "all", 97.5), ("large", "all", 335.3), ("giant", "backbone", 1136.48),
])
def test_variant_architectures_have_the_published_sizes(name, part, millions):
    with init_empty_weights():
        model = DepthAnythingForDepthEstimation(get_variant(name).to_config())
    module = model.backbone if part == "backbone" else model
    n = sum(p.numel() for p in module.parameters()) / 1e6
    assert math.isclose(n, millions, rel_tol=0.005), n


def test_unknown_prior_spec_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="Cannot load a prior"):
        load_prior(str(tmp_path / "nothing-here"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_prior(str(tmp_path / "empty"))
