"""The latent cache: RGB, prior and ground-truth latents of every training sample, both flips.

Built by its own entry point, :func:`cache_latents` (``apdepth cache -c CONFIG``), before training;
a run whose ``data.cache_dir`` is set reads it (:func:`open_cached_view`).

A training step's heaviest fixed cost is the frozen part: the prior on the RGB, and three VAE
encodes (RGB, prior, ground truth). These depend only on the sample and its flip, so a pre-pass can
store them once. Layout::

    <cache_dir>/meta.json                 fingerprint: VAE and prior weights, preprocessing, splits, dtype
    <cache_dir>/<dataset>/<index>.safetensors   rgb_latent_{0,1}, prior_latent_{0,1}, depth_latent_{0,1}

(0: as stored, 1: flipped). Every stage's latents are stored, so stage 1 and stage 2 share one cache. Steps that use the cache still read the sample itself: the pixel-space
losses need the normalised depth and the valid mask, and stage 1's external encoder needs the RGB.
The latents are computed by the same function as in a raw step (:func:`~.inputs.encode_inputs`), so
cached and raw steps give the same losses: with ``cache_dtype=fp32`` the latents are bit-identical
and the losses agree to float rounding (~1e-7 relative on CPU); fp16/bf16 caches halve the disk
space at the cost of rounding the latents.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch.utils.data import Dataset

from ..data.training import TrainingView
from ..devices import DTYPES
from ..io import atomic_open, save_json
from ..pipeline import ApDepthPipeline
from .build import build_accelerator, build_datasets, build_pipeline, check_paths, place_frozen
from .config import ConfigError, TrainConfig, build_config
from .inputs import CACHED_KEYS, encode_inputs

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


def _digest(module: torch.nn.Module | None, limit: int = 8) -> str:
    """A short hash of a module's first and last ``limit`` tensors (names, shapes and values)."""
    if module is None:
        return "none"
    items = list(module.state_dict().items())
    h = hashlib.sha1()
    for name, t in items[:limit] + items[-limit:]:
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _file_digest(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]


def cache_fingerprint(pipe: ApDepthPipeline, sources: dict[str, tuple], quantiles, dtype: str) -> dict:
    """What the cached latents depend on. ``sources``: name -> (split file, number of samples[, resize rule])."""
    datasets = {}
    for name, (split, n, *rest) in sources.items():
        datasets[name] = {"split": _file_digest(split), "samples": n}
        if rest and rest[0] != "native":  # frame size rule (Hypersim); absent for stored-size frames
            datasets[name]["resize"] = rest[0]
    return {
        "version": CACHE_VERSION,
        "vae": _digest(pipe.vae.encoder),
        "prior": _digest(pipe.prior) if pipe.config.use_prior else "none",
        "prior_preprocessing": pipe.config.prior_preprocessing if pipe.config.use_prior else None,
        "quantiles": [float(q) for q in quantiles],
        "dtype": dtype,
        "datasets": datasets,
    }


class LatentCache:
    """Read access to a built cache; checks its fingerprint against the current run's."""

    def __init__(self, root: str | Path, fingerprint: dict, names: list[str]):
        self.root = Path(root)
        meta = self.root / "meta.json"
        if not meta.is_file():
            raise FileNotFoundError(f"latent cache {self.root} is not built (no meta.json); run "
                                    "`apdepth cache --config ...` (the run's config) first")
        with open(meta) as f:
            stored = json.load(f)
        stored_sets = stored.get("datasets", {})
        wanted = {k: v for k, v in fingerprint.items() if k != "datasets"}
        wanted["datasets"] = {n: fingerprint["datasets"][n] for n in names}
        have = {k: v for k, v in stored.items() if k != "datasets"}
        have["datasets"] = {n: stored_sets.get(n) for n in names}
        if have != wanted:
            diff = sorted(k for k in wanted if have.get(k) != wanted[k])
            raise ValueError(f"latent cache {self.root} was built for another model or data ({', '.join(diff)} "
                             f"differ); rebuild it with `apdepth cache` or point data.cache_dir elsewhere")
        self.names = names

    def path(self, name: str, index: int) -> Path:
        return self.root / name / f"{index:07d}.safetensors"

    def load(self, name: str, index: int, flip: bool) -> dict[str, torch.Tensor]:
        path = self.path(name, index)
        if not path.is_file():
            raise FileNotFoundError(f"latent cache {self.root}: {path.name} of {name} is missing; "
                                    "finish the pre-pass with `apdepth cache`")
        tensors = load_file(path)
        return {k: tensors[f"{k}_{int(flip)}"] for k in CACHED_KEYS}


class CachedView(Dataset):
    """A :class:`TrainingView` whose samples also carry their cached latents ``[4, h, w]``."""

    def __init__(self, view: TrainingView, cache: LatentCache):
        self.view, self.cache = view, cache

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, key):
        sample = self.view[key]
        source, _, flip = key
        # the sample's own index: a redrawn sample (data.low_valid=redraw) carries the index it was read from
        sample.update(self.cache.load(self.cache.names[source], int(sample["index"]), flip))
        return sample


@torch.no_grad()
def build_latent_cache(pipe: ApDepthPipeline, view: TrainingView, names: list[str], root: str | Path,
                       fingerprint: dict, dtype: str = "fp32", rank: int = 0, world_size: int = 1,
                       wait=lambda: None) -> int:
    """Compute and store the latents of every sample of ``view`` (samples ``i`` with ``i % world_size ==
    rank`` on this process). Existing files are kept, so an interrupted pre-pass resumes. ``wait`` is a
    barrier between processes. Returns the number of files written by this process."""
    root = Path(root)
    meta = root / "meta.json"
    if rank == 0:
        if meta.is_file():
            with open(meta) as f:
                if json.load(f) != fingerprint:
                    raise ValueError(f"latent cache {root} holds latents of another model or data; use an empty "
                                     "data.cache_dir")
        root.mkdir(parents=True, exist_ok=True)
        save_json(meta, fingerprint)
    wait()
    store = DTYPES[dtype]
    written = 0
    for source, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        total = len(view.datasets[source])
        for index in range(rank, total, world_size):
            path = root / name / f"{index:07d}.safetensors"
            if path.is_file():
                continue
            tensors = {}
            for flip in (False, True):
                sample = view[(source, index, flip)]
                batch = {k: sample[k][None] for k in ("rgb", "depth_norm", "valid_mask")}
                inputs = encode_inputs(pipe, batch, need_depth_latent=True)
                for key in CACHED_KEYS:
                    tensors[f"{key}_{int(flip)}"] = getattr(inputs, key)[0].to("cpu", store).contiguous()
            with atomic_open(path) as f:
                f.write(save(tensors))
            written += 1
            if written % 500 == 0:
                logger.info("latent cache: %s %d/%d", name, index + 1, total)
    wait()
    return written


# ---------------------------------------------------------------------------------------------- a run's cache


def run_fingerprint(cfg: TrainConfig, pipe: ApDepthPipeline, names: list[str], view: TrainingView) -> dict:
    """:func:`cache_fingerprint` of the run ``cfg`` describes (its training sets, quantiles and cache dtype)."""
    sources = {n: (getattr(cfg.data, n).split, len(d), getattr(cfg.data, n).resize)
               for n, d in zip(names, view.datasets)}
    return cache_fingerprint(pipe, sources, cfg.data.quantiles, cfg.data.cache_dtype)


def open_cached_view(cfg: TrainConfig, pipe: ApDepthPipeline, names: list[str], view: TrainingView) -> CachedView:
    """``view`` with the latents of ``data.cache_dir``, which must have been built for this model and data."""
    try:
        return CachedView(view, LatentCache(cfg.data.cache_dir, run_fingerprint(cfg, pipe, names, view), names))
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"data.cache_dir: {e}") from None


def cache_latents(cfg: TrainConfig) -> Path:
    """Fill ``data.cache_dir`` with the latent cache of the run ``cfg`` describes and return the folder.

    The entry point of ``apdepth cache``: no training is set up (no ``run.output_dir``, validation set or
    TensorBoard needed). Under ``accelerate launch`` the processes split the samples; an interrupted
    pre-pass resumes where it stopped.
    """
    from accelerate.utils import set_seed

    if not cfg.data.cache_dir:
        raise ConfigError("the latent cache needs data.cache_dir (the folder to fill): give it in the config or "
                          "as data.cache_dir=...")
    check_paths(cfg, need_validation=False)
    accelerator = build_accelerator(cfg)
    set_seed(cfg.run.seed)
    names, _, view = build_datasets(cfg)
    pipe = build_pipeline(cfg)
    place_frozen(pipe, accelerator.device)
    rank, world = accelerator.process_index, accelerator.num_processes
    written = build_latent_cache(pipe, view, names, cfg.data.cache_dir, run_fingerprint(cfg, pipe, names, view),
                                 cfg.data.cache_dtype, rank, world, accelerator.wait_for_everyone)
    logger.info("Latent cache %s: %d files written by process %d", cfg.data.cache_dir, written, rank)
    return Path(cfg.data.cache_dir)


def cache_latents_from_files(config_files: list[str | os.PathLike], overrides: list[str]) -> Path:
    """``apdepth cache``'s entry: :func:`cache_latents` of the configs + ``KEY=VALUE`` overrides."""
    return cache_latents(build_config(config_files, overrides))
