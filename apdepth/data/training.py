"""Training-side data: depth normalisation, flips, the mixed sampler (SPEC section 4).

The raw readers (:mod:`apdepth.data.hypersim`, :mod:`apdepth.data.vkitti`) return metric depth; this
module turns their samples into training samples and decides which samples a micro-batch holds:

- :func:`normalize_depth`: per image, the 2% and 98% quantiles of the valid depths map to -1 and 1
  (linear, clipped), as Marigold does.
- :class:`TrainingView`: a dataset over several raw datasets, indexed by ``(source, index, flip)``;
  returns ``{"rgb": float [3,H,W] in [-1,1], "depth_norm": float [1,H,W] in [-1,1], "valid_mask": bool
  [1,H,W], "source": int, "index": int, "flip": bool}``. A sample with fewer than ``min_valid_pixels``
  valid pixels (counted at the stored size) is handled by ``low_valid``: ``"clear"`` (default) empties
  its mask, so it adds nothing to any depth loss (the batch keeps its size, which keeps distributed
  ranks in step); ``"redraw"`` replaces it by another sample of the same data set drawn uniformly, as
  the authors' release does (its dataset's ``__getitem__`` redraws with ``random.randint``). apdepth's
  redraw is a pure function of ``(seed, source, index, attempt)``, so a resumed run redraws the same.
  Readers with a ``resize_sample`` method (Hypersim) are read at their stored size and resized after
  normalisation and flip, Marigold's order: the quantiles come from the full-size frame.
- :class:`MixedBatchSampler`: an endless, seeded stream of micro-batches, each drawn from ONE data set
  (probabilities e.g. 0.9 / 0.1), with the flip of every sample decided by the sampler. The stream is a
  pure function of the seed, so a run resumes from a batch count and distributed ranks share it
  (rank ``r`` of ``W`` takes global batches ``start + r, start + r + W, ...``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

DEFAULT_QUANTILES = (0.02, 0.98)
MIN_VALID_PIXELS = 10
LOW_VALID_POLICIES = ("clear", "redraw")
MAX_REDRAWS = 100
SampleKey = tuple[int, int, bool]  # (source, index, flip)


def normalize_depth(depth: torch.Tensor, valid_mask: torch.Tensor,
                    quantiles: tuple[float, float] = DEFAULT_QUANTILES) -> torch.Tensor:
    """Affine-normalise metric depth to [-1, 1] by its quantiles over valid pixels.

    Args:
        depth: float ``[1, H, W]`` (or ``[H, W]``), metres.
        valid_mask: bool, same shape.
        quantiles: ``(low, high)`` in [0, 1]; ``low`` maps to -1 and ``high`` to 1, values beyond clip.

    Returns float32 of the same shape. Invalid pixels are normalised like any other (typically to -1:
    they hold 0); losses mask them. With no valid pixel the result is all zeros.
    """
    low, high = quantiles
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"normalize_depth: quantiles must satisfy 0 <= low < high <= 1, got {quantiles!r}")
    if depth.shape != valid_mask.shape:
        raise ValueError(f"normalize_depth: depth {tuple(depth.shape)} and mask {tuple(valid_mask.shape)} differ")
    depth = depth.float()
    values = depth[valid_mask]
    if values.numel() == 0:
        return torch.zeros_like(depth)
    lo, hi = _quantiles(values, low, high)
    scale = max(hi - lo, 1e-6)
    return ((depth - lo) / scale * 2.0 - 1.0).clamp(-1.0, 1.0)


def _quantiles(values: torch.Tensor, low: float, high: float) -> tuple[float, float]:
    """Linear-interpolated quantiles (numpy's default method) of a 1-D tensor of any size."""
    if values.numel() <= 2**24:  # torch.quantile's input limit
        q = torch.quantile(values, torch.tensor([low, high], dtype=values.dtype))
        return float(q[0]), float(q[1])
    ordered = values.sort().values
    out = []
    for q in (low, high):
        pos = q * (ordered.numel() - 1)
        i = int(pos)
        j = min(i + 1, ordered.numel() - 1)
        out.append(float(ordered[i] + (ordered[j] - ordered[i]) * (pos - i)))
    return out[0], out[1]


class TrainingView(Dataset):
    """Training samples from several raw depth datasets, addressed by ``(source, index, flip)``.

    Args:
        datasets: raw readers following the :class:`apdepth.data.base.DepthDataset` sample contract.
        quantiles: depth normalisation quantiles.
        min_valid_pixels: the fewest valid pixels a usable sample has.
        low_valid: ``"clear"``: a sample under ``min_valid_pixels`` gets an empty ``valid_mask``;
            ``"redraw"``: it is replaced by another sample of its data set (the release).
        seed: seed of the redraws.
    """

    def __init__(self, datasets: Sequence[Dataset], quantiles: tuple[float, float] = DEFAULT_QUANTILES,
                 min_valid_pixels: int = MIN_VALID_PIXELS, low_valid: str = "clear", seed: int = 0):
        if not datasets:
            raise ValueError("TrainingView needs at least one dataset")
        if low_valid not in LOW_VALID_POLICIES:
            raise ValueError(f"low_valid must be one of {LOW_VALID_POLICIES}, got {low_valid!r}")
        self.datasets = list(datasets)
        self.quantiles = tuple(quantiles)
        self.min_valid_pixels = int(min_valid_pixels)
        self.low_valid = low_valid
        self.seed = int(seed)

    def sizes(self) -> list[int]:
        return [len(d) for d in self.datasets]

    def __len__(self) -> int:
        return sum(self.sizes())

    def redraw_index(self, source: int, index: int, attempt: int) -> int:
        """The index that replaces sample ``index`` of data set ``source`` at redraw ``attempt`` (0, 1, ...)."""
        rng = np.random.default_rng([self.seed, source, index, attempt])
        return int(rng.integers(len(self.datasets[source])))

    def _read(self, source: int, index: int) -> dict:
        dataset = self.datasets[source]
        return dataset.native_item(index) if hasattr(dataset, "resize_sample") else dataset[index]

    def __getitem__(self, key: SampleKey) -> dict:
        source, index, flip = key
        raw = self._read(source, index)
        if self.low_valid == "redraw":
            attempt, first = 0, index
            while int(raw["valid_mask"].sum()) < self.min_valid_pixels:
                if attempt == MAX_REDRAWS:
                    raise ValueError(f"data set {source}: {MAX_REDRAWS} redraws from sample {first} all had fewer "
                                     f"than {self.min_valid_pixels} valid pixels; check the data or use "
                                     "data.low_valid=clear")
                index = self.redraw_index(source, first, attempt)
                attempt += 1
                raw = self._read(source, index)
            if index != first:
                logger.debug("sample %d of data set %d has fewer than %d valid pixels; redrawn as %d", first, source,
                             self.min_valid_pixels, index)
        rgb = raw["rgb"]
        if rgb.dtype != torch.uint8 or rgb.ndim != 3 or rgb.shape[0] != 3:
            raise ValueError(f"{raw.get('rgb_path', index)}: expected uint8 [3, H, W] RGB, got {rgb.dtype} "
                             f"{tuple(rgb.shape)}")
        valid = raw["valid_mask"].bool()
        depth_norm = normalize_depth(raw["depth"], valid, self.quantiles)
        if int(valid.sum()) < self.min_valid_pixels:
            logger.debug("%s: fewer than %d valid pixels; left out of the depth losses",
                         raw.get("rgb_path", index), self.min_valid_pixels)
            valid = torch.zeros_like(valid)
        rgb = rgb.float() / 255.0 * 2.0 - 1.0  # [3, H, W] in [-1, 1]
        if flip:
            rgb, depth_norm, valid = rgb.flip(-1), depth_norm.flip(-1), valid.flip(-1)
        dataset = self.datasets[source]
        if hasattr(dataset, "resize_sample"):  # after normalisation and flip, as Marigold's loader
            resized = dataset.resize_sample({"rgb": rgb, "depth": depth_norm, "valid_mask": valid})
            rgb, depth_norm, valid = resized["rgb"], resized["depth"], resized["valid_mask"]
        return {
            "rgb": rgb.contiguous(),
            "depth_norm": depth_norm.contiguous(),
            "valid_mask": valid.contiguous(),
            "source": source,
            "index": index,
            "flip": bool(flip),
        }


class MixedBatchSampler(Sampler[list[SampleKey]]):
    """Endless seeded micro-batches, each from one data set chosen with probabilities ``probs``.

    Within a data set, indices follow seeded permutations (a new one when fewer than ``batch_size``
    remain: the remainder is dropped, as ``drop_last`` does). Each sample is flipped with probability
    ``flip_prob``.

    Args:
        sizes: number of samples of each data set.
        probs: sampling probability of each data set (normalised; zeros allowed).
        batch_size: samples per micro-batch (per process).
        seed: seed of the whole stream.
        start: global micro-batches already consumed (all ranks together); the stream resumes there.
        rank, world_size: this process's share: global batches ``start + rank + k * world_size``.
    """

    def __init__(self, sizes: Sequence[int], probs: Sequence[float], batch_size: int, seed: int,
                 flip_prob: float = 0.5, start: int = 0, rank: int = 0, world_size: int = 1):
        if len(sizes) != len(probs) or not sizes:
            raise ValueError(f"MixedBatchSampler: {len(sizes)} data sets but {len(probs)} probabilities")
        if any(p < 0 for p in probs) or sum(probs) <= 0:
            raise ValueError(f"MixedBatchSampler: probabilities must be >= 0 with a positive sum, got {list(probs)}")
        for size, p in zip(sizes, probs):
            if p > 0 and size < batch_size:
                raise ValueError(f"MixedBatchSampler: a data set of {size} samples cannot fill a micro-batch of "
                                 f"{batch_size}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.sizes = [int(s) for s in sizes]
        total = float(sum(probs))
        self.probs = torch.tensor([p / total for p in probs], dtype=torch.float64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.flip_prob = float(flip_prob)
        self.start = int(start)
        self.rank, self.world_size = int(rank), int(world_size)

    def global_stream(self) -> Iterator[list[SampleKey]]:
        """Every micro-batch of every rank, from the beginning."""
        gen = torch.Generator().manual_seed(self.seed)
        perms: list[torch.Tensor | None] = [None] * len(self.sizes)
        cursors = [0] * len(self.sizes)
        while True:
            source = int(torch.multinomial(self.probs, 1, generator=gen))
            if perms[source] is None or cursors[source] + self.batch_size > self.sizes[source]:
                perms[source] = torch.randperm(self.sizes[source], generator=gen)
                cursors[source] = 0
            indices = perms[source][cursors[source] : cursors[source] + self.batch_size].tolist()
            cursors[source] += self.batch_size
            flips = (torch.rand(self.batch_size, generator=gen) < self.flip_prob).tolist()
            yield [(source, i, bool(f)) for i, f in zip(indices, flips)]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for g, batch in enumerate(self.global_stream()):
            if g >= self.start and (g - self.start) % self.world_size == self.rank:
                yield batch

    def __len__(self) -> int:  # endless; DataLoader only needs this for its own bookkeeping
        return 2**62
