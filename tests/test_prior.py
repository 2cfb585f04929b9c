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


# ---------------------------------------------------------------------------------------------- original DA2 forward


def _linear(x, sd, name):
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def _conv(x, sd, name, **kw):
    return F.conv2d(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"), **kw)


def original_pos_embed(pos_embed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """DINOv2's ``interpolate_pos_encoding`` (interpolate_offset 0.1, no antialias), for H x W pixels."""
    n = pos_embed.shape[1] - 1
    patches = (height // 14) * (width // 14)
    if patches == n and height == width:
        return pos_embed
    dim = pos_embed.shape[-1]
    sqrt_n = math.sqrt(n)
    h0, w0 = height // 14 + 0.1, width // 14 + 0.1  # the original calls these w0, h0 (its "w" is the height)
    grid = pos_embed[:, 1:].float().reshape(1, int(sqrt_n), int(sqrt_n), dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=(h0 / sqrt_n, w0 / sqrt_n), mode="bicubic", antialias=False)
    assert grid.shape[-2:] == (int(h0), int(w0))
    return torch.cat([pos_embed[:, :1].float(), grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


def original_da2(sd: dict[str, torch.Tensor], x: torch.Tensor, layers: list[int], heads: int, swiglu: bool):
    """Depth Anything V2's ``forward`` (DINOv2 ``get_intermediate_layers`` + DPT head) on the original
    checkpoint's state dict ``sd``; ``x`` ``[B, 3, H, W]`` with H, W multiples of 14. Returns ``[B, H, W]``."""
    b, _, height, width = x.shape
    ph, pw = height // 14, width // 14
    tokens = _conv(x, sd, "pretrained.patch_embed.proj", stride=14).flatten(2).transpose(1, 2)  # [B, N, C]
    dim = tokens.shape[-1]
    tokens = torch.cat([sd["pretrained.cls_token"].expand(b, -1, -1), tokens], dim=1)
    tokens = tokens + original_pos_embed(sd["pretrained.pos_embed"], height, width).to(tokens.dtype)

    def norm(t, name):
        return F.layer_norm(t, (dim,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)

    features = []
    for i in range(max(layers) + 1):
        p = f"pretrained.blocks.{i}"
        qkv = _linear(norm(tokens, f"{p}.norm1"), sd, f"{p}.attn.qkv")
        qkv = qkv.reshape(b, -1, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (dim // heads) ** -0.5, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        out = _linear((attn @ v).transpose(1, 2).reshape(b, -1, dim), sd, f"{p}.attn.proj")
        tokens = tokens + out * sd[f"{p}.ls1.gamma"]
        h = norm(tokens, f"{p}.norm2")
        if swiglu:
            x1, x2 = _linear(h, sd, f"{p}.mlp.w12").chunk(2, dim=-1)
            h = _linear(F.silu(x1) * x2, sd, f"{p}.mlp.w3")
        else:
            h = _linear(F.gelu(_linear(h, sd, f"{p}.mlp.fc1")), sd, f"{p}.mlp.fc2")
        tokens = tokens + h * sd[f"{p}.ls2.gamma"]
        if i in layers:
            features.append(norm(tokens, "pretrained.norm")[:, 1:])  # patch tokens, class token not read

    maps = []
    for i, f in enumerate(features):
        m = _conv(f.permute(0, 2, 1).reshape(b, dim, ph, pw), sd, f"depth_head.projects.{i}")
        name = f"depth_head.resize_layers.{i}"
        if i in (0, 1):
            m = F.conv_transpose2d(m, sd[f"{name}.weight"], sd[f"{name}.bias"], stride=4 if i == 0 else 2)
        elif i == 3:
            m = _conv(m, sd, name, stride=2, padding=1)
        maps.append(_conv(m, sd, f"depth_head.scratch.layer{i + 1}_rn", padding=1))

    def rcu(t, name):
        out = _conv(F.relu(t), sd, f"{name}.conv1", padding=1)
        return _conv(F.relu(out), sd, f"{name}.conv2", padding=1) + t

    def fuse(n, path, skip, size):
        name = f"depth_head.scratch.refinenet{n}"
        if skip is not None:
            path = path + rcu(skip, f"{name}.resConfUnit1")
        path = rcu(path, f"{name}.resConfUnit2")
        resize = {"scale_factor": 2} if size is None else {"size": size}
        path = F.interpolate(path, **resize, mode="bilinear", align_corners=True)
        return _conv(path, sd, f"{name}.out_conv")

    path = fuse(4, maps[3], None, maps[2].shape[2:])
    path = fuse(3, path, maps[2], maps[1].shape[2:])
    path = fuse(2, path, maps[1], maps[0].shape[2:])
    path = fuse(1, path, maps[0], None)
    out = _conv(path, sd, "depth_head.scratch.output_conv1", padding=1)
    out = F.interpolate(out, (ph * 14, pw * 14), mode="bilinear", align_corners=True)
    out = F.relu(_conv(out, sd, "depth_head.scratch.output_conv2.0", padding=1))
    return F.relu(_conv(out, sd, "depth_head.scratch.output_conv2.2")).squeeze(1)


def original_compat_prior(sd, rgb, layers, heads, swiglu):
    """The release's ``infer_batch`` around :func:`original_da2` (one channel)."""
    _, _, h, w = rgb.shape
    nh, nw = (h + 13) // 14 * 14, (w + 13) // 14 * 14
    x = rgb if (nh, nw) == (h, w) else F.interpolate(rgb, (nh, nw), mode="bilinear", align_corners=True)
    depth = original_da2(sd, x, layers, heads, swiglu)[:, None]
    return F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=True)


@pytest.mark.parametrize("swiglu", [False, True])
def test_prior_equals_the_original_depth_anything_v2(tmp_path, swiglu):
    """At sizes other than the trained one, the prior (transformers-loaded and original-.pth alike) equals the
    original DINOv2 / DPT forward with the original position-embedding interpolation; transformers' own
    interpolation does not."""
    config = tiny_depth_anything_config(swiglu=swiglu)
    config.backbone_config.image_size = 70  # a 5 x 5 trained grid, so bicubic resizing has something to do
    torch.manual_seed(1)
    model = DepthAnythingForDepthEstimation(config).eval()
    for module in model.modules():  # PyTorch's default init (transformers' leaves a toy DPT constant)
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            module.reset_parameters()
    with torch.no_grad():
        model.backbone.embeddings.position_embeddings.normal_(std=1.0)  # embeddings that matter
        model.backbone.embeddings.cls_token.normal_(std=1.0)
        model.head.conv3.weight.mul_(30.0)
        model.head.conv3.bias.fill_(3.0)  # keep the final ReLU mostly open
    model.save_pretrained(tmp_path / "hf")
    sd = to_original(model.state_dict())
    torch.save(sd, tmp_path / "depth_anything_v2_custom.pth")
    layers = [i - 1 for i in config.backbone_config.out_indices]
    heads = config.backbone_config.num_attention_heads

    from_hf = load_prior(str(tmp_path / "hf"))
    from_pth = load_prior(str(tmp_path / "depth_anything_v2_custom.pth"), config=config)
    legacy = load_prior(str(tmp_path / "hf"), position_embedding="transformers")
    assert from_hf.position_embedding == "original" and legacy.position_embedding == "transformers"
    g = torch.Generator().manual_seed(0)
    for size in [(40, 52), (98, 56), (70, 70), (61, 143), (13, 20)]:
        rgb = torch.rand(2, 3, *size, generator=g) * 2 - 1
        with torch.no_grad():
            expected = original_compat_prior(sd, rgb, layers, heads, swiglu)
        assert expected.std() > 0.05
        scale = float(expected.abs().max())  # about 3.5: the tolerance is 1e-6 of the output's range
        for prior in (from_hf, from_pth):  # measured: at most 1.2e-6 (SDPA against written-out attention)
            assert float((prior(rgb) - expected).abs().max()) <= 1e-6 * scale, size
        if size != (70, 70):  # transformers' interpolation differs wherever the grid is resized
            assert float((legacy(rgb) - expected).abs().max()) > 1e-4 * scale, size
    # the setting travels with a saved prior
    legacy.save_pretrained(tmp_path / "legacy")
    assert load_prior(str(tmp_path / "legacy")).position_embedding == "transformers"


# ---------------------------------------------------------------------------------------------- portable checkpoints


def _old_names(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """The DINOv2 attention weight names transformers used before 5.18 (``attention.attention.query`` ...)."""
    old = {}
    for key, value in state.items():
        key = re.sub(r"attention\.(q|k|v)_proj\.",
                     lambda m: "attention.attention." + {"q": "query", "k": "key", "v": "value"}[m.group(1)] + ".", key)
        old[prefix + key.replace("attention.o_proj.", "attention.output.dense.")] = value.clone()
    return old


def test_saved_prior_uses_transformers_layout(tmp_path):
    prior = tiny_prior()
    prior.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "depth_anything" / "model.safetensors").is_file()
    again = DepthAnythingPrior.from_pretrained(tmp_path)
    x = torch.rand(1, 3, 30, 44) * 2 - 1
    torch.testing.assert_close(again(x), prior(x), rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["diffusers", "transformers"])
def test_prior_saved_with_pre_5_18_names_loads(tmp_path, layout):
    """Weights saved under transformers' older DINOv2 names load under the installed version, in both the layout
    earlier apdepth versions wrote (diffusers weights ``model.<name>``) and transformers' own."""
    from safetensors.torch import save_file

    prior = tiny_prior()
    prior.save_pretrained(tmp_path)
    state = prior.model.state_dict()
    assert any("attention.q_proj" in k for k in state)  # the names this test renames exist here
    if layout == "diffusers":
        import shutil

        shutil.rmtree(tmp_path / "depth_anything")
        save_file(_old_names(state, "model."), str(tmp_path / "diffusion_pytorch_model.safetensors"))
    else:
        save_file(_old_names(state), str(tmp_path / "depth_anything" / "model.safetensors"), metadata={"format": "pt"})
    again = load_prior(str(tmp_path))
    x = torch.rand(1, 3, 30, 44) * 2 - 1
    torch.testing.assert_close(again(x), prior(x), rtol=0, atol=0)


def test_prior_with_missing_weights_is_an_error_naming_them(tmp_path):
    from safetensors.torch import load_file, save_file

    tiny_prior().save_pretrained(tmp_path)
    path = tmp_path / "depth_anything" / "model.safetensors"
    state = load_file(str(path))
    del state["head.conv3.weight"]
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"head\.conv3\.weight.*uninitialised"):
        load_prior(str(tmp_path))


def test_pipeline_with_a_missing_unet_weight_is_an_error_naming_it(tiny_pipeline_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from apdepth import ApDepthPipeline

    folder = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline_dir, folder)
    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    del state["conv_in.weight"]
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises((ValueError, RuntimeError), match=r"conv_in\.weight"):
        ApDepthPipeline.from_pretrained(folder)
