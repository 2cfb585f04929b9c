"""The generic RGB-D folder reader (apdepth.data.folder) and its place in training configs: every depth
format read back against the values written, pairing rule, split lists, masks, disparity, resize, and
the ``data.folder`` / ``model.init_from`` / ``lora`` config keys."""

from __future__ import annotations

import importlib.util
import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from apdepth.data import FolderDataset, get_dataset
from apdepth.data.folder import write_sample, write_split
from apdepth.data.training import TrainingView, normalize_depth
from apdepth.training.build import check_paths
from apdepth.training.config import ConfigError, build_config

# EXR needs the optional OpenEXR package (the finetune extra); without it the EXR sample is written as npy
FORMATS = ("npy", "exr" if importlib.util.find_spec("OpenEXR") else "npy", "tiff", "png16")

H, W = 12, 16


def _frame(seed: int, height: int = H, width: int = W):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 20.0, (height, width)).astype(np.float32)
    depth[0, :3] = 0.0  # no measurement
    depth[1, 0] = np.nan
    depth[1, 1] = np.inf
    return rgb, depth


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four samples, one per depth format, in sub-folders; sample 1 has a mask."""
    root = tmp_path_factory.mktemp("rgbd") / "my_rgbd"
    frames = [_frame(i) for i in range(4)]
    mask = np.ones((H, W), dtype=bool)
    mask[5:, 10:] = False
    for i, (fmt, (rgb, depth)) in enumerate(zip(FORMATS, frames)):
        write_sample(root, f"room{i % 2}/{i:04d}", rgb, depth, fmt, mask=mask if i == 1 else None)
    return root, frames, mask


def _expected_valid(depth, lo=0.0, hi=np.inf):
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth) & (depth > lo) & (depth < hi)


def test_every_format_reads_back(folder):
    root, frames, mask = folder
    ds = FolderDataset(root, depth_scale=0.001)  # the PNG's millimetres
    assert len(ds) == 4
    # discovery is sorted by path: room0/0000, room0/0002, room1/0001, room1/0003
    order = [0, 2, 1, 3]
    assert [e[0] for e in ds.entries] == [f"rgb/room{i % 2}/{i:04d}.png" for i in order]
    for k, i in enumerate(order):
        s = ds[k]
        rgb, depth = frames[i]
        assert torch.equal(s["rgb"], torch.from_numpy(rgb).permute(2, 0, 1))
        valid = _expected_valid(depth) & (mask if i == 1 else True)
        assert torch.equal(s["valid_mask"][0], torch.from_numpy(valid)), i
        got = s["depth"][0].numpy()
        tol = 0.0005 + 1e-6 if i == 3 else 1e-6  # png16: rounded to whole millimetres
        np.testing.assert_allclose(got[valid], depth[valid], atol=tol, rtol=1e-6)
        assert (got[~_expected_valid(depth)] == 0).all()  # 0 / nan / inf are stored as "no depth"
    assert ds.entries[2][2] == "mask/room1/0001.png"


def test_integer_depth_needs_scale_and_8bit_is_refused(folder, tmp_path):
    root, _, _ = folder
    ds = FolderDataset(root)
    png = next(i for i, e in enumerate(ds.entries) if e[1].endswith(".png"))
    with pytest.raises(ValueError, match="stores integers; give its scale"):
        ds[png]
    np.testing.assert_allclose(ds[0]["depth"].numpy(), FolderDataset(root, depth_scale=0.001)[0]["depth"].numpy())
    # 16-bit PNG in centimetres
    rgb, depth = _frame(7)
    write_sample(tmp_path, "a", rgb, depth, "png16", png_scale=0.01)
    cm = FolderDataset(tmp_path, depth_scale=0.01)[0]["depth"][0].numpy()
    ok = _expected_valid(depth)
    np.testing.assert_allclose(cm[ok], depth[ok], atol=0.005 + 1e-6)
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(tmp_path / "depth" / "a.png")
    with pytest.raises(ValueError, match="8-bit depth is too coarse"):
        FolderDataset(tmp_path, depth_scale=0.01)[0]


def test_disparity_is_converted_to_depth(tmp_path):
    rgb, depth = _frame(3)
    with np.errstate(divide="ignore", invalid="ignore"):
        disparity = np.where(_expected_valid(depth), 50.0 / depth, 0.0).astype(np.float32)  # f*B = 50
    write_sample(tmp_path / "d", "x", rgb, depth, "npy")
    write_sample(tmp_path / "p", "x", rgb, disparity, "npy")
    as_disp = FolderDataset(tmp_path / "p", depth_kind="disparity", max_depth=0.2)[0]  # depth / 50 < 0.2
    ok = _expected_valid(depth, hi=10.0)
    assert torch.equal(as_disp["valid_mask"][0], torch.from_numpy(ok))  # 0 disparity and > 10 m invalid
    np.testing.assert_allclose(as_disp["depth"][0].numpy()[ok], depth[ok] / 50.0, rtol=1e-5)
    # training is affine-invariant: the disparity folder trains on the same normalised depth
    norm_depth = TrainingView([FolderDataset(tmp_path / "d", max_depth=10.0)])[(0, 0, False)]["depth_norm"]
    norm_disp = TrainingView([FolderDataset(tmp_path / "p", depth_kind="disparity", max_depth=0.2)])[(0, 0, False)]
    torch.testing.assert_close(norm_disp["depth_norm"], norm_depth, atol=1e-5, rtol=0)


def test_split_lists_explicit_paths_missing_and_tar(folder, tmp_path):
    root, frames, _ = folder
    split = write_split(tmp_path / "val.txt", ["rgb/room1/0003.png", "rgb/room0/0000.png depth/room0/0000.npy "
                                               "mask/room1/0001.png"])
    ds = FolderDataset(root, split, depth_scale=0.001)
    assert [e[0] for e in ds.entries] == ["rgb/room1/0003.png", "rgb/room0/0000.png"]
    assert not ds[1]["valid_mask"][0, 6:, 11:].any()  # the listed mask applies
    missing = write_split(tmp_path / "bad.txt", ["rgb/room0/0000.png", "rgb/room9/0000.png"])
    with pytest.raises(FileNotFoundError, match="room9"):
        FolderDataset(root, missing)
    assert len(FolderDataset(root, missing, missing="skip")) == 1
    with pytest.raises(ValueError, match="not under rgb/"):
        FolderDataset(root, write_split(tmp_path / "odd.txt", ["room0/0000.png"]))
    tar = tmp_path / "my_rgbd.tar"
    with tarfile.open(tar, "w") as t:
        t.add(root, arcname=".")
    from_tar = FolderDataset(tar, depth_scale=0.001)
    assert [e[:2] for e in from_tar.entries] == [e[:2] for e in FolderDataset(root, depth_scale=0.001).entries]
    assert torch.equal(from_tar[1]["depth"], FolderDataset(root)[1]["depth"])  # EXR through the archive


def test_resize_and_mixed_sizes(tmp_path):
    for i, size in enumerate(((H, W), (2 * H, 2 * W))):
        write_sample(tmp_path, f"{i}", *_frame(i, *size), "npy")
    native = FolderDataset(tmp_path)
    view = TrainingView([native])
    assert view[(0, 0, False)]["rgb"].shape == (3, H, W)
    with pytest.raises(ValueError, match="resize=HxW"):
        view[(0, 1, False)]
    resized = FolderDataset(tmp_path, resize=f"{H}x{W}")
    big = resized.native_item(1)
    sample = resized[1]
    assert sample["rgb"].shape == (3, H, W) and sample["rgb"].dtype == torch.uint8
    assert torch.equal(sample["depth"], big["depth"][:, 1::2, 1::2])  # nearest-exact halving
    trained = TrainingView([resized])[(0, 1, False)]
    assert trained["depth_norm"].shape == (1, H, W)
    # normalised at the stored size (quantiles of every pixel), then resized
    full = normalize_depth(big["depth"], big["valid_mask"])
    assert torch.equal(trained["depth_norm"], full[:, 1::2, 1::2])
    with pytest.raises(ValueError, match="'native' or 'HxW'"):
        FolderDataset(tmp_path, resize="marigold")


def test_exr_channels_and_errors(tmp_path):
    OpenEXR = pytest.importorskip("OpenEXR")

    rgb, depth = _frame(5)
    write_sample(tmp_path, "z", rgb, depth, "npy")
    (tmp_path / "depth" / "z.npy").unlink()
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    buf = io.BytesIO()
    with OpenEXR.File(header, {"Z": depth, "A": np.ones_like(depth)}) as f:
        f.write(buf)
    (tmp_path / "depth" / "z.exr").write_bytes(buf.getvalue())
    got = FolderDataset(tmp_path)[0]["depth"][0].numpy()
    ok = _expected_valid(depth)
    np.testing.assert_array_equal(got[ok], depth[ok])
    np.save(tmp_path / "depth" / "z.npy", np.zeros((2, H, W), np.float32))  # npy is found first
    with pytest.raises(ValueError, match=r"shape \(2, 12, 16\)"):
        FolderDataset(tmp_path)[0]


def test_get_dataset_and_config_keys(folder, tmp_path):
    root, _, _ = folder
    assert isinstance(get_dataset("folder", root, "", depth_scale=0.001), FolderDataset)
    cfg = build_config(None, ["data.mix={folder: 0.5, hypersim: 0.5}", f"data.folder.root={root}",
                              "data.folder.depth_scale=0.001", "data.folder.depth_kind=disparity",
                              "data.folder.max_depth=80", "model.init_from=embedded", "lora.rank=4"])
    assert cfg.active_sources() == {"hypersim": 0.5, "folder": 0.5}
    assert cfg.data.folder.depth_scale == 0.001 and cfg.data.folder.max_depth == 80.0
    assert cfg.to_dict()["lora"]["rank"] == 4
    for bad, match in (("data.folder.depth_kind=inverse", "depth_kind"), ("data.folder.resize=marigold", "HxW"),
                       ("data.folder.depth_scale=-1", "depth_scale"), ("data.vkitti.resize=10x10", "only Hypersim"),
                       ("lora.rank=-2", "lora.rank")):
        with pytest.raises(ConfigError, match=match):
            build_config(None, [bad])
    with pytest.raises(ConfigError, match="stage-2 fine-tuning"):
        build_config(None, ["stage=1", "lora.rank=4"])
    # the folder needs no split list; init_from replaces model.base (not checked), a bad folder is named
    check_paths(build_config(None, ["data.mix={folder: 1.0}", f"data.folder.root={root}",
                                    "model.init_from=embedded"]))
    with pytest.raises(ConfigError, match="model.init_from: .* is not an ApDepth pipeline folder"):
        check_paths(build_config(None, ["data.mix={folder: 1.0}", f"data.folder.root={root}",
                                        f"model.init_from={tmp_path}"]))
    with pytest.raises(ConfigError, match="latent cache .* needs a split list"):
        check_paths(build_config(None, ["data.mix={folder: 1.0}", f"data.folder.root={root}",
                                        "model.init_from=embedded", f"data.cache_dir={tmp_path / 'c'}"]))


def test_old_checkpoint_configs_resume(tmp_path):
    """A resolved config written before data.folder / model.init_from / lora existed still resumes."""
    from apdepth.training.build import check_resume

    cfg = build_config(None, [f"run.output_dir={tmp_path}"])
    saved = cfg.to_dict()
    del saved["lora"], saved["data"]["folder"], saved["model"]["init_from"]
    check_resume(cfg, saved, {"stage": 2, "step": 1}, tmp_path)
    with pytest.raises(ConfigError, match="lora"):
        check_resume(build_config(None, [f"run.output_dir={tmp_path}", "lora.rank=8"]), saved,
                     {"stage": 2, "step": 1}, tmp_path)


def test_init_from_keeps_the_checkpoint_prior_and_fills_in_a_missing_one(tmp_path):
    """model.init_from: the embedded model with its own prior; a release-like folder (no prior recorded)
    takes model.prior; model.base is never read."""
    import json
    import shutil

    from apdepth.embedded import embedded_model_path
    from apdepth.training.build import build_pipeline

    base = ["model.base=/nonexistent/sd2", "model.prior=/nonexistent/prior"]
    pipe = build_pipeline(build_config(None, [*base, "model.init_from=embedded"]))
    from apdepth import ApDepthPipeline

    embedded = ApDepthPipeline.from_pretrained(embedded_model_path(), dtype=torch.float32)
    for name in ("unet", "prior", "vae"):
        a, b = getattr(pipe, name).state_dict(), getattr(embedded, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in b), name
        assert all(v.dtype == torch.float32 for v in a.values())
    assert not any(p.requires_grad for p in pipe.prior.parameters())
    assert all(p.requires_grad for p in pipe.unet.parameters())
    release = tmp_path / "release"
    shutil.copytree(embedded_model_path(), release, ignore=shutil.ignore_patterns("prior"))
    index = json.loads((release / "model_index.json").read_text())
    index.update(prior=[None, None], prior_name=None)
    (release / "model_index.json").write_text(json.dumps(index))
    prior_dir = embedded_model_path() / "prior"
    rebuilt = build_pipeline(build_config(None, [f"model.init_from={release}", f"model.prior={prior_dir}"]))
    assert all(torch.equal(rebuilt.prior.state_dict()[k].float(), v) for k, v in embedded.prior.state_dict().items())


def test_lora_adapters_train_alone_and_merge_exactly(tmp_path):
    pytest.importorskip("peft")
    from apdepth.training.build import build_pipeline
    from apdepth.training.lora import has_lora, merge_lora

    pipe = build_pipeline(build_config(None, ["model.init_from=embedded", "lora.rank=4",
                                              "lora.target_modules=[to_q, conv2]"]))
    unet = pipe.unet
    assert has_lora(unet)
    trainable = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {"to_q", "conv2"}
    with torch.no_grad():  # B starts at zero (no effect); give the adapters one
        for n, p in unet.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    x = torch.randn(1, 8, 6, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.zeros(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        before = unet(x, 1, emb).sample
        merge_lora(unet)
        after = unet(x, 1, emb).sample
    assert not has_lora(unet) and not any("lora" in k or "base_layer" in k for k in unet.state_dict())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="lora.target_modules"):
        build_pipeline(build_config(None, ["model.init_from=embedded", "lora.rank=4",
                                           "lora.target_modules=[no_such_layer]"]))


class Killed(Exception):
    pass


@pytest.mark.slow  # three short training runs: about a minute on 2 busy cores
def test_lora_run_resumes_exactly_and_exports_merged(tmp_path):
    """A LoRA fine-tune (with EMA) killed after step 3 and resumed from its step-2 checkpoint ends with the
    same merged UNet as the uninterrupted run; the exported UNet has no peft keys."""
    pytest.importorskip("peft")
    from accelerate.state import AcceleratorState
    from safetensors.torch import load_file

    from apdepth.training.checkpoint import list_checkpoints
    from apdepth.training.loop import train

    for i in range(4):
        write_sample(tmp_path / "data", f"{i}", *_frame(i, 32, 48), "npy")

    def config(out):
        return build_config(None, [
            f"run.output_dir={out}", "model.init_from=embedded", f"data.folder.root={tmp_path / 'data'}",
            "data.mix={folder: 1.0}", "data.num_workers=0", "data.batch_size=2", "optim.effective_batch=2",
            "optim.max_steps=4", "optim.warmup_steps=0", "optim.lr=1e-3", "optim.ema=true", "run.checkpoint_every=2",
            "stage2.phase1_steps=4", "stage2.pixel_l1_weight=0", "lora.rank=2", "lora.target_modules=[to_q, to_v]"])

    full = train(config(tmp_path / "full"))
    AcceleratorState._reset_state(True)

    def kill(step, logged):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(config(tmp_path / "killed"), on_step=kill)
    AcceleratorState._reset_state(True)
    assert [p.name for p in list_checkpoints(tmp_path / "killed")] == ["step_0000002"]
    resumed = train(config(tmp_path / "killed"), resume=True)
    AcceleratorState._reset_state(True)
    a = load_file(full / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and not any("lora" in k or "base_layer" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(tmp_path / "full" / "checkpoints" / "step_0000004" / "model.safetensors")
    assert any(".lora_A." in k for k in start)  # checkpoints keep the adapters apart from the UNet
    assert (full.parent / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_png_with_a_recorded_scale_needs_none(tmp_path):
    from PIL import PngImagePlugin

    rgb, depth = _frame(9)
    write_sample(tmp_path, "s", rgb, depth, "png16", png_scale=0.001)
    png = tmp_path / "depth" / "s.png"
    units = np.asarray(Image.open(png))
    info = PngImagePlugin.PngInfo()
    info.add_text("depth_scale", "0.001")
    Image.fromarray(units).save(png, pnginfo=info)
    got = FolderDataset(tmp_path)[0]["depth"][0].numpy()
    np.testing.assert_allclose(got, units.astype(np.float64) * 0.001, rtol=1e-6)
    # a configured scale wins over the file's
    np.testing.assert_allclose(FolderDataset(tmp_path, depth_scale=0.01)[0]["depth"][0].numpy(),
                               units.astype(np.float64) * 0.01, rtol=1e-6)
