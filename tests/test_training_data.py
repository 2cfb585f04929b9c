"""Training-side data: quantile normalisation, flips, the valid-pixel floor and the mixed sampler."""

from __future__ import annotations

import itertools

import pytest
import torch

from apdepth.data import HypersimDataset, VirtualKITTIDataset
from apdepth.data.fixtures import write_fixture
from apdepth.data.training import MixedBatchSampler, TrainingView, normalize_depth


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
