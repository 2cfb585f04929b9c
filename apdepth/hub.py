"""Which checkpoint and which device, decided before anything loads.

``resolve_model(None)`` picks the released checkpoint (:data:`DEFAULT_MODEL`) when it is complete in the local
Hugging Face cache, else the small demo model inside the package (:data:`EMBEDDED`); completeness is read from
the cache's files alone (no network). ``resolve_device(None)`` picks CUDA, else MPS, else the CPU.

Used by the command line (``apdepth.apps``) and by :func:`apdepth.depth_pipeline`. Nothing here imports torch,
diffusers or transformers at module level (the command line's ``--help`` must stay instant).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "developy/ApDepth"
EMBEDDED = "embedded"  # the demo model inside the package (apdepth/embedded/weights)
# files that hold a tokenizer's vocabulary (tokenizer.json: fast tokenizers; vocab.json + merges.txt: BPE)
TOKENIZER_VOCABS = ("tokenizer.json", "vocab.txt", "spiece.model", "tokenizer.model")


# ---------------------------------------------------------------------------- what the hub cache holds


def _tokenizer_missing(folder: Path) -> list[str]:
    """A tokenizer needs its config and a vocabulary (a BPE vocab.json needs its merges.txt)."""
    name = folder.name
    missing = [] if (folder / "tokenizer_config.json").is_file() else [f"{name}/tokenizer_config.json"]
    if any((folder / f).is_file() for f in TOKENIZER_VOCABS):
        return missing
    if (folder / "vocab.json").is_file():
        return missing + ([] if (folder / "merges.txt").is_file() else [f"{name}/merges.txt"])
    return missing + [f"{name}/ vocabulary (tokenizer.json or vocab.json)"]


def _model_missing(folder: Path) -> list[str]:
    """A model needs its config and all of its weights (every shard an index lists)."""
    name = folder.name
    missing = [] if (folder / "config.json").is_file() else [f"{name}/config.json"]
    indexes = sorted(folder.glob("*.index.json"))
    if indexes:
        try:
            shards = set(json.loads(indexes[0].read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError):
            return [*missing, f"{name}/{indexes[0].name} (unreadable)"]
        return missing + [f"{name}/{s}" for s in sorted(shards) if not (folder / s).is_file()]
    # weights may sit one level down (an apdepth prior keeps its network in prior/depth_anything/)
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")) and not any(
            (sub / "config.json").is_file() and any(sub.glob("*.safetensors")) for sub in folder.iterdir()
            if sub.is_dir()):
        missing.append(f"{name}/ weights (*.safetensors)")
    return missing


def _component_missing(folder: Path, class_name: str) -> list[str]:
    """Files of one pipeline component that a complete download has and ``folder`` lacks."""
    if not folder.is_dir():
        return [f"{folder.name}/"]
    if class_name.endswith("Scheduler"):
        need = "scheduler_config.json"
    elif "Tokenizer" in class_name:
        return _tokenizer_missing(folder)
    elif class_name.endswith(("FeatureExtractor", "ImageProcessor", "Processor")):
        need = "preprocessor_config.json"
    else:
        return _model_missing(folder)
    return [] if (folder / need).is_file() else [f"{folder.name}/{need}"]


def cached_snapshot_missing(repo_id: str, cache_dir: str | os.PathLike | None = None,
                            files: tuple[str, ...] | None = None) -> list[str] | None:
    """What the locally cached snapshot of hub repository ``repo_id`` lacks (no network).

    ``None``: nothing of it is cached. ``[]``: complete. For a pipeline (``model_index.json``) every
    component's files are checked (config, all weight shards, scheduler and tokenizer files); for a single
    model (``files`` given, e.g. a prior's ``config.json``) the named files and its weights. The hub
    cache links a file into its snapshot only once downloaded in full, so a present file is complete.
    """
    from huggingface_hub import try_to_load_from_cache

    first = "model_index.json" if files is None else files[0]
    found = try_to_load_from_cache(repo_id, first, cache_dir=cache_dir)
    if not isinstance(found, str):
        return None
    snapshot = Path(found).parent
    if files is not None:
        missing = [f for f in files if not (snapshot / f).is_file()]
        if not any(snapshot.glob("*.safetensors")) and not any(snapshot.glob("*.bin")):
            missing.append("weights (*.safetensors)")
        return missing
    try:
        index = json.loads(Path(found).read_text())
    except (OSError, ValueError):
        return ["model_index.json (unreadable)"]
    missing = []
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or None in value:
            continue
        missing += _component_missing(snapshot / name, value[1])
    if index.get("prior") in (None, [None, None]) and index.get("use_prior", True):
        # the release records no prior: the pipeline fetches Depth Anything V2 from its own repository
        prior = _prior_hub_id(index.get("prior_name") or "large")
        if prior is not None:
            lacking = cached_snapshot_missing(prior, cache_dir, files=("config.json",))
            missing += [f"{prior}: not cached"] if lacking is None else [f"{prior}/{f}" for f in lacking]
    return missing


def _prior_hub_id(name: str) -> str | None:
    """The hub repository of a Depth Anything V2 size name (``large``, ``vitl``, ...) or hub id, else ``None``."""
    from .priors.variants import ALIASES, VARIANTS

    if name.lower() in ALIASES:
        return VARIANTS[ALIASES[name.lower()]].hub_id
    return name if name.count("/") == 1 else None


def released_checkpoint_cached(repo_id: str = DEFAULT_MODEL) -> bool:
    """Whether the hub checkpoint ``repo_id`` is complete in the local Hugging Face cache (no network)."""
    return cached_snapshot_missing(repo_id) == []


# ---------------------------------------------------------------------------- which model, which device


def default_model() -> str:
    """The model used when none is named: :data:`DEFAULT_MODEL` when it is complete in the local cache, else
    :data:`EMBEDDED` (said in one line, with how to finish a partial download)."""
    missing = [] if released_checkpoint_cached() else cached_snapshot_missing(DEFAULT_MODEL)
    if missing == []:
        return DEFAULT_MODEL
    if missing is None:
        logger.info("No --model given and %s is not cached: using the embedded demo model (small, trained "
                    "only on synthetic scenes; for real images pass --model %s).", DEFAULT_MODEL, DEFAULT_MODEL)
    else:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        logger.warning("No --model given and %s is only partly in the Hugging Face cache (missing %s; an "
                       "interrupted download?): using the embedded demo model. To finish the download: "
                       "`hf download %s` (or run with --model %s, which downloads what is missing).",
                       DEFAULT_MODEL, shown, DEFAULT_MODEL, DEFAULT_MODEL)
    return EMBEDDED


def resolve_model(model: str | os.PathLike | None) -> tuple[str, str]:
    """``(name, source)`` for a model spec: ``name`` is the choice (``model`` itself, or :func:`default_model`
    when ``None``), ``source`` what ``from_pretrained`` loads (the packaged folder for :data:`EMBEDDED`)."""
    from .embedded import embedded_model_path

    name = default_model() if model is None else os.fspath(model)
    return name, str(embedded_model_path()) if name == EMBEDDED else name


def resolve_device(name: str | None):
    """``torch.device(name)``, or the best available (CUDA, else MPS, else CPU) when ``None``. A name torch
    does not know raises ``ValueError`` (its ``__cause__`` holds torch's reason)."""
    import torch

    if name:
        try:
            return torch.device(name)
        except RuntimeError as e:
            raise ValueError(f"unknown device {name!r}: {e}") from e
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
