"""Training-side data: quantile normalisation, flips, the valid-pixel floor, the mixed sampler, and the
Hypersim frame size (Marigold's 480x640 resize)."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from apdepth.data import HypersimDataset, VirtualKITTIDataset
from apdepth.data.training import MixedBatchSampler, TrainingView, normalize_depth
from apdepth.testing.fixtures import write_fixture


def test_normalize_depth_hand_values():
    depth = torch.arange(1.0, 101.0).view(1, 10, 10)  # 1 .. 100
    valid = torch.ones_like(depth, dtype=torch.bool)
    depth_with_invalid = depth.clone()
    depth_with_invalid[0, 0, 0] = 1e6
    valid_without_first = valid.clone()
    valid_without_first[0, 0, 0] = False
    norm = normalize_depth(depth, valid)
    lo, hi = 1 + 0.02 * 99, 1 + 0.98 * 99  # numpy's linear quantiles of 1..100
    assert norm[0, 5, 0].item() == pytest.approx((51 - lo) / (hi - lo) * 2 - 1, abs=1e-6)
    assert norm.min().item() == -1.0 and norm.max().item() == 1.0  # clipped beyond the quantiles
    assert (norm == -1).sum() == 2 and (norm == 1).sum() == 2  # 1, 2 and 99, 100 lie outside
    # an invalid pixel neither shifts the quantiles nor survives unclipped
    other = normalize_depth(depth_with_invalid, valid_without_first)
    lo2, hi2 = 2 + 0.02 * 98, 2 + 0.98 * 98
    assert other[0, 5, 0].item() == pytest.approx((51 - lo2) / (hi2 - lo2) * 2 - 1, abs=1e-6)
    assert other[0, 0, 0].item() == 1.0
    assert torch.equal(normalize_depth(depth, torch.zeros_like(valid)), torch.zeros_like(depth))
    with pytest.raises(ValueError, match="quantiles"):
        normalize_depth(depth, valid, (0.5, 0.2))


@pytest.fixture(scope="module")
def hypersim(tmp_path_factory):
    fx = write_fixture("hypersim", tmp_path_factory.mktemp("hs") / "hypersim", num_samples=4, size=(16, 24))
    return HypersimDataset(fx.root, fx.split)


def test_training_view_sample(hypersim):
    view = TrainingView([hypersim])
    sample = view[(0, 1, False)]
    assert sample["rgb"].dtype == torch.float32 and sample["rgb"].shape == (3, 16, 24)
    assert -1.0 <= sample["rgb"].min() and sample["rgb"].max() <= 1.0
    raw = hypersim[1]
    torch.testing.assert_close(sample["rgb"], raw["rgb"].float() / 255 * 2 - 1)
    assert torch.equal(sample["valid_mask"], raw["valid_mask"])
    torch.testing.assert_close(sample["depth_norm"], normalize_depth(raw["depth"], raw["valid_mask"]))
    assert (sample["source"], sample["index"], sample["flip"]) == (0, 1, False)
    flipped = view[(0, 1, True)]
    for key in ("rgb", "depth_norm", "valid_mask"):
        assert torch.equal(flipped[key], sample[key].flip(-1)), key
    assert not sample["valid_mask"].all()  # the fixture's first row holds no depth


def test_samples_with_too_few_valid_pixels_are_left_out(hypersim):
    n_valid = int(hypersim[0]["valid_mask"].sum())
    keep = TrainingView([hypersim], min_valid_pixels=n_valid)[(0, 0, False)]
    drop = TrainingView([hypersim], min_valid_pixels=n_valid + 1)[(0, 0, False)]
    assert keep["valid_mask"].sum() == n_valid
    assert drop["valid_mask"].sum() == 0
    torch.testing.assert_close(drop["depth_norm"], keep["depth_norm"])


def test_mixed_sampler_draws_each_batch_from_one_set_with_the_given_shares():
    sampler = MixedBatchSampler([90, 30], [0.9, 0.1], batch_size=4, seed=2024)
    batches = list(itertools.islice(iter(sampler), 3000))
    sources = [{s for s, _, _ in b} for b in batches]
    assert all(len(s) == 1 for s in sources)
    share = sum(1 for s in sources if s == {0}) / len(batches)
    assert abs(share - 0.9) < 0.02  # 4 standard deviations of a binomial(3000, 0.9)
    flips = [f for b in batches for _, _, f in b]
    assert abs(sum(flips) / len(flips) - 0.5) < 0.02
    # one data set's batches walk through permutations: no index repeats before all have been seen
    first = [i for b in batches if b[0][0] == 0 for _, i, _ in b][:88]  # 22 batches of 4 out of 90
    assert len(set(first)) == len(first)
    assert all(0 <= i < 30 for b in batches if b[0][0] == 1 for _, i, _ in b)


def test_mixed_sampler_is_deterministic_resumable_and_shared_by_ranks():
    def take(n, **kw):
        return list(itertools.islice(iter(MixedBatchSampler([20, 8], [0.7, 0.3], 2, seed=7, **kw)), n))

    stream = take(40)
    assert stream == take(40)
    assert stream != list(itertools.islice(iter(MixedBatchSampler([20, 8], [0.7, 0.3], 2, seed=8)), 40))
    assert take(30, start=10) == stream[10:]  # resuming from a count continues the same stream
    r0, r1 = take(10, start=4, rank=0, world_size=2), take(10, start=4, rank=1, world_size=2)
    assert [b for pair in zip(r0, r1) for b in pair] == stream[4:24]  # ranks interleave the global stream
    only_first = take(20, flip_prob=0.0)
    assert not any(f for b in only_first for _, _, f in b)


def test_mixed_sampler_errors():
    with pytest.raises(ValueError, match="2 data sets but 1 probabilities"):
        MixedBatchSampler([4, 4], [1.0], 2, seed=0)
    with pytest.raises(ValueError, match="of 3 samples cannot fill a micro-batch of 4"):
        MixedBatchSampler([3, 10], [0.5, 0.5], 4, seed=0)
    MixedBatchSampler([3, 10], [0.0, 1.0], 4, seed=0)  # an unused small set is fine
    with pytest.raises(ValueError, match="positive sum"):
        MixedBatchSampler([4], [0.0], 2, seed=0)


def test_mixed_hypersim_and_vkitti_through_a_data_loader(tmp_path, hypersim):
    fx = write_fixture("vkitti", tmp_path / "vkitti", num_samples=2)
    vkitti = VirtualKITTIDataset(fx.root, fx.split)
    view = TrainingView([hypersim, vkitti])
    sampler = MixedBatchSampler(view.sizes(), [0.5, 0.5], batch_size=2, seed=1)
    loader = torch.utils.data.DataLoader(view, batch_sampler=sampler)
    shapes = set()
    for batch in itertools.islice(loader, 6):
        assert batch["rgb"].shape[0] == 2 and len(set(batch["source"].tolist())) == 1
        shapes.add((int(batch["source"][0]), tuple(batch["rgb"].shape[-2:])))
    assert shapes == {(0, (16, 24)), (1, (352, 1216))}  # VKITTI comes cropped to the KITTI benchmark size


# ------------------------------------------------------------------ Hypersim at Marigold's size


@pytest.fixture(scope="module")
def hypersim_768(tmp_path_factory):
    """Hypersim frames at the size Marigold's preprocessing stores them (768x1024), real layout."""
    return write_fixture("hypersim", tmp_path_factory.mktemp("hs768") / "hypersim", num_samples=2, size=(768, 1024))


def _nearest_exact(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torchvision NEAREST_EXACT, written out: output pixel i takes input pixel floor((i + 0.5) * in / out)."""
    rows = np.floor((np.arange(size[0]) + 0.5) * array.shape[-2] / size[0]).astype(int)
    cols = np.floor((np.arange(size[1]) + 0.5) * array.shape[-1] / size[1]).astype(int)
    return array[..., rows[:, None], cols[None, :]]


def test_hypersim_reader_resizes_marigold_frames_to_480x640(hypersim_768, caplog):
    with caplog.at_level(logging.INFO, logger="apdepth.data.hypersim"):
        reader = HypersimDataset(hypersim_768.root, hypersim_768.split)
    assert "stored at 768x1024 are resized to 480x640" in caplog.text
    sample = reader[1]
    rel = hypersim_768.lines[1].split()[0]
    depth = hypersim_768.depth[rel]  # [768, 1024] metres
    rgb = np.asarray(Image.open(hypersim_768.root / rel).convert("RGB")).transpose(2, 0, 1)
    assert sample["rgb"].shape == (3, 480, 640) and sample["depth"].shape == (1, 480, 640)
    np.testing.assert_array_equal(sample["rgb"].numpy(), _nearest_exact(rgb, (480, 640)))
    np.testing.assert_array_equal(sample["depth"][0].numpy(), _nearest_exact(depth, (480, 640)))
    valid = (depth > 1e-5) & (depth < 65.0)
    np.testing.assert_array_equal(sample["valid_mask"][0].numpy(), _nearest_exact(valid, (480, 640)))
    assert not sample["valid_mask"][0, 0].any()  # the fixture's empty first row stays empty

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="apdepth.data.hypersim"):
        native = HypersimDataset(hypersim_768.root, hypersim_768.split, resize="native")
    assert "read at their stored size (768x1024" in caplog.text
    assert native[1]["depth"].shape == (1, 768, 1024)
    np.testing.assert_array_equal(native[1]["depth"][0].numpy(), depth)


def test_hypersim_resize_rules(hypersim):
    assert hypersim.resize == "marigold" and hypersim[0]["rgb"].shape == (3, 16, 24)  # other sizes as stored
    forced = HypersimDataset(hypersim.root, hypersim.split, resize="10x15")
    assert forced[0]["rgb"].shape == (3, 10, 15)
    np.testing.assert_array_equal(forced[0]["depth"].numpy(), _nearest_exact(hypersim[0]["depth"].numpy(), (10, 15)))
    with pytest.raises(ValueError, match="'marigold', 'native' or 'HxW'"):
        HypersimDataset(hypersim.root, hypersim.split, resize="480")


def test_training_view_normalises_at_full_size_then_flips_then_resizes(hypersim_768):
    """Marigold's order: quantiles of the 768x1024 frame, flip, nearest-exact to 480x640."""
    reader = HypersimDataset(hypersim_768.root, hypersim_768.split)
    sample = TrainingView([reader])[(0, 0, True)]
    rel = hypersim_768.lines[0].split()[0]
    depth = hypersim_768.depth[rel].astype(np.float64)
    valid = (depth > 1e-5) & (depth < 65.0)
    lo, hi = np.quantile(depth[valid], [0.02, 0.98])
    norm = np.clip((depth - lo) / (hi - lo) * 2 - 1, -1, 1)
    expected = _nearest_exact(norm[:, ::-1], (480, 640))
    np.testing.assert_allclose(sample["depth_norm"][0].numpy(), expected, atol=2e-6)
    np.testing.assert_array_equal(sample["valid_mask"][0].numpy(), _nearest_exact(valid[:, ::-1], (480, 640)))
    rgb = np.asarray(Image.open(hypersim_768.root / rel).convert("RGB")).transpose(2, 0, 1)[:, :, ::-1]
    np.testing.assert_allclose(sample["rgb"].numpy(), _nearest_exact(rgb, (480, 640)) / 255 * 2 - 1, atol=1e-6)
    # the order matters: resizing before the flip picks other columns
    assert not np.array_equal(_nearest_exact(norm, (480, 640))[:, ::-1], expected)
    # quantiles of the resized frame would differ from the full-size ones
    small = _nearest_exact(depth, (480, 640))[_nearest_exact(valid, (480, 640))]
    assert not np.allclose(np.quantile(small, [0.02, 0.98]), [lo, hi], rtol=0, atol=1e-7)


def test_training_config_selects_the_hypersim_size(hypersim_768, tmp_path):
    from apdepth.training import build_config
    from apdepth.training.build import build_datasets
    from apdepth.training.config import ConfigError

    base = [f"data.hypersim.root={hypersim_768.root}", f"data.hypersim.split={hypersim_768.split}",
            "data.mix={hypersim: 1.0}"]
    _, _, view = build_datasets(build_config(None, base))
    assert view[(0, 0, False)]["rgb"].shape == (3, 480, 640)
    _, _, view = build_datasets(build_config(None, [*base, "data.hypersim.resize=native"]))
    assert view[(0, 0, False)]["rgb"].shape == (3, 768, 1024)
    with pytest.raises(ConfigError, match="data.vkitti.resize must be 'native'"):
        build_config(None, ["data.vkitti.resize=480x640"])
    with pytest.raises(ConfigError, match="data.hypersim.resize"):
        build_config(None, ["data.hypersim.resize=big"])
