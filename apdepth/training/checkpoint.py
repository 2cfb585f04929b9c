"""Training checkpoints: atomic, safetensors for every tensor, JSON for the rest.

A checkpoint is a folder ``<output_dir>/checkpoints/step_XXXXXXX/``::

    model.safetensors        trainable weights, one prefix per module ("unet.", "adapter.")
    ema.safetensors          EMA shadow weights (optional), ema.json its counters
    optimizer.safetensors    optimizer tensors, optimizer.json the rest (param groups, scalars)
    scheduler.json           learning-rate scheduler state
    rng_<rank>.safetensors   torch (CPU and CUDA) RNG states of each process, rng_<rank>.json python/numpy
    trainer_state.json       step, data position, world size, ...
    config.yaml              the resolved run config

It is written under a temporary name and renamed into place once complete, so a crash never leaves
a half-written checkpoint behind; :func:`find_latest` only sees complete ones.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from ..io import atomic_open, save_json

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_STEP_RE = re.compile(r"^step_(\d{7,})$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_RE.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_RE.match(p.name).group(1)))


def find_latest(output_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run folder (its latest checkpoint). Raises naming what is missing."""
    path = Path(path)
    if (path / "trainer_state.json").is_file():
        return path
    if path.is_dir():
        latest = find_latest(path)
        if latest is not None:
            return latest
        raise FileNotFoundError(f"{path}: no checkpoint in {path / CHECKPOINT_DIR} (nothing to resume)")
    raise FileNotFoundError(f"checkpoint {path} does not exist")


# ---------------------------------------------------------------------------------------------- tensors


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_open(path) as f:
        f.write(save(clean))


def module_state(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}


def load_module_state(path: Path, modules: dict[str, torch.nn.Module]) -> None:
    tensors = load_file(path)
    for name, module in modules.items():
        prefix = f"{name}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"{path}: holds no weights for {name!r} (found prefixes "
                             f"{sorted({k.split('.', 1)[0] for k in tensors})}); incompatible checkpoint")
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: {name} weights do not fit this model (missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]}); incompatible checkpoint")
        shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        bad = [k for k, v in state.items() if tuple(v.shape) != shapes.get(k)]
        if bad:
            raise ValueError(f"{path}: {name} weights have other shapes than this model ({bad[:5]}); "
                             "incompatible checkpoint")


def _split_state(state, prefix: str, tensors: dict[str, torch.Tensor]):
    """Replace every tensor in a nested dict/list by a reference, collecting the tensors."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state
        return {"__tensor__": prefix}
    if isinstance(state, dict):
        return {str(k): _split_state(v, f"{prefix}.{k}", tensors) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [_split_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(state)]
    return state


def _join_state(state, tensors: dict[str, torch.Tensor]):
    if isinstance(state, dict):
        if set(state) == {"__tensor__"}:
            return tensors[state["__tensor__"]]
        return {k: _join_state(v, tensors) for k, v in state.items()}
    if isinstance(state, list):
        return [_join_state(v, tensors) for v in state]
    return state


def save_state(folder: Path, name: str, state: dict) -> None:
    """A nested state dict as ``name.safetensors`` (tensors) + ``name.json`` (everything else)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split_state(state, "s", tensors)
    _save_tensors(folder / f"{name}.safetensors", tensors)
    save_json(folder / f"{name}.json", skeleton)


def load_state(folder: Path, name: str) -> dict:
    with open(folder / f"{name}.json") as f:
        skeleton = json.load(f)
    return _join_state(skeleton, load_file(folder / f"{name}.safetensors"))


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    return optimizer.state_dict()


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    # JSON keys are strings; torch's optimizer state is keyed by parameter index.
    state["state"] = {int(k): v for k, v in state["state"].items()}
    optimizer.load_state_dict(state)


# ---------------------------------------------------------------------------------------------- RNG


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s
    np_state = np.random.get_state()
    other = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, other


def set_rng_state(tensors: dict[str, torch.Tensor], other: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda_")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    version, state, gauss = other["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = other["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# ---------------------------------------------------------------------------------------------- save / load


def save_checkpoint(output_dir: str | os.PathLike, step: int, *, accelerator, modules: dict[str, torch.nn.Module],
                    optimizer: torch.optim.Optimizer, scheduler, trainer_state: dict, config_yaml: str,
                    ema=None, keep: int = 0) -> Path:
    """Write checkpoint ``step`` atomically (every process calls this; rank 0 writes the shared parts)."""
    root = Path(output_dir) / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}"
    main = accelerator.is_main_process
    if main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    tensors, other = rng_state()
    rank = accelerator.process_index
    _save_tensors(tmp / f"rng_{rank}.safetensors", tensors)
    save_json(tmp / f"rng_{rank}.json", other)
    if main:
        _save_tensors(tmp / "model.safetensors", module_state(modules))
        save_state(tmp, "optimizer", optimizer_state(optimizer))
        save_json(tmp / "scheduler.json", scheduler.state_dict())
        if ema is not None:
            ema_state = ema.state_dict()
            shadow = ema_state.pop("shadow_params")
            names = [k for k, _ in _named_trainable(modules)]
            _save_tensors(tmp / "ema.safetensors", dict(zip(names, shadow)))
            save_json(tmp / "ema.json", ema_state)
        save_json(tmp / "trainer_state.json", trainer_state)
        with atomic_open(tmp / "config.yaml", "w") as f:
            f.write(config_yaml)
    accelerator.wait_for_everyone()
    if main:
        if final.exists():  # the same step saved again (e.g. a resumed run's last step)
            shutil.rmtree(final)
        os.replace(tmp, final)
        logger.info("Saved checkpoint %s", final)
        if keep > 0:
            for old in list_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _named_trainable(modules: dict[str, torch.nn.Module]):
    for name, module in modules.items():
        for k, p in module.named_parameters():
            if p.requires_grad:
                yield f"{name}.{k}", p


def read_trainer_state(folder: str | os.PathLike) -> dict:
    path = Path(folder) / "trainer_state.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no trainer_state.json; not a training checkpoint")
    with open(path) as f:
        return json.load(f)


def load_checkpoint(folder: str | os.PathLike, *, rank: int, modules: dict[str, torch.nn.Module],
                    optimizer: torch.optim.Optimizer, scheduler, ema=None) -> dict:
    """Restore everything :func:`save_checkpoint` wrote; returns the trainer state."""
    folder = Path(folder)
    state = read_trainer_state(folder)
    load_module_state(folder / "model.safetensors", modules)
    load_optimizer_state(optimizer, load_state(folder, "optimizer"))
    with open(folder / "scheduler.json") as f:
        scheduler.load_state_dict(json.load(f))
    if ema is not None:
        if not (folder / "ema.safetensors").is_file():
            raise ValueError(f"{folder}: optim.ema is on but the checkpoint holds no EMA weights")
        with open(folder / "ema.json") as f:
            ema_state = json.load(f)
        shadow = load_file(folder / "ema.safetensors")
        names = [k for k, _ in _named_trainable(modules)]
        if set(names) != set(shadow):
            raise ValueError(f"{folder}: EMA weights do not match the trainable parameters; incompatible checkpoint")
        ema_state["shadow_params"] = [shadow[k] for k in names]
        ema.load_state_dict(ema_state)
    rng_file = folder / f"rng_{rank}.safetensors"
    if rng_file.is_file():
        with open(folder / f"rng_{rank}.json") as f:
            set_rng_state(load_file(rng_file), json.load(f))
    else:
        logger.warning("%s: no RNG state for process %d (the run had fewer processes)", folder, rank)
    return state
