"""Opt-in int8 weight-only quantisation of the pipeline's networks, through ``torchao`` (the ``quant`` extra).

``quantize_pipeline(pipe)`` replaces the weight of every ``nn.Linear`` in the UNet and the VAE (and, on
request, the prior) by an int8 tensor with one float scale per output channel (torchao's
``Int8WeightOnlyConfig``, symmetric, per row). Activations stay in the pipeline's dtype; the matmul
runs on the weight converted back to that dtype. Convolutions stay in floating point: torchao 0.18 has no
int8 convolution (its ``Int8Tensor`` implements ``linear`` only; its float8 convolutions need a CUDA GPU), so
the VAE, which is almost all convolutions, keeps most of its weights.

What it buys, measured (``docs/benchmarks/README.md``, "int8 weight-only"): the UNet's Linear weights in a
quarter of their memory; the speed on CPUs in eager mode is no better (the weight is converted back at
every call); the depth moves by about 1e-3 of its [0, 1] range. Never on by default.

Supported: CPU and CUDA devices, fp32 / bf16 / fp16 weights, before ``compile_models`` or after it (the
compilation traces at the first call). Not with model CPU offload (accelerate's hooks move weights between
devices each call); quantise a pipeline once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the command line checks options with this module
    import torch
    from torch import nn

__all__ = ["ALIASES", "COMPONENTS", "DEVICES", "EXTRA", "MODES", "QuantizationUnavailable", "check_request",
           "is_quantized", "quantize_module", "quantize_pipeline", "quantized_linear_names", "require_torchao",
           "torchao_available"]

MODES = ("int8-weight",)
ALIASES = {"int8": "int8-weight"}  # the command line's --quantize names
COMPONENTS = ("unet", "vae", "prior")
DEVICES = ("cpu", "cuda")
EXTRA = 'pip install "apdepth[quant]"  (or: pip install torchao)'


class QuantizationUnavailable(ImportError):
    """The optional library (torchao) is missing or cannot be imported here."""


def torchao_available() -> bool:
    """Whether ``torchao`` is installed (without importing it: cheap, for option checks)."""
    import importlib.util

    return importlib.util.find_spec("torchao") is not None


def require_torchao():
    """Import ``torchao.quantization``; a missing or broken torchao raises :class:`QuantizationUnavailable`
    naming the ``quant`` extra. torchao's import-time notices about its optional CUDA kernels (not built
    for this machine) are silenced: they do not concern the CPU path."""
    noisy = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [log.level for log in noisy]
    try:
        for log in noisy:
            log.setLevel(logging.ERROR)
        import torchao.quantization as taq
    except ImportError as e:
        raise QuantizationUnavailable(
            f"int8 quantisation needs the optional library torchao, which cannot be imported here ({e}); "
            f"install it: {EXTRA}") from e
    finally:
        for log, level in zip(noisy, levels):
            log.setLevel(level)
    return taq


def check_request(mode: str, components: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """``(mode, components)`` checked and normalised (an alias such as ``int8`` -> ``int8-weight``), without
    importing torch or torchao; raises ``ValueError`` naming the choices."""
    components = tuple(components)
    mode = ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f"quantisation mode {mode!r} is not supported; choose among "
                         f"{', '.join(MODES + tuple(ALIASES))}")
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not components:
        raise ValueError(f"components {unknown or '()'}: choose one or more of {', '.join(COMPONENTS)}")
    return mode, components


def is_quantized(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a torchao int8 weight (its storage ``qdata`` is ``torch.int8``)."""
    import torch

    qdata = getattr(tensor, "qdata", None)
    return isinstance(qdata, torch.Tensor) and qdata.dtype == torch.int8


def quantized_linear_names(module: nn.Module) -> list[str]:
    """The qualified names of the ``nn.Linear`` layers of ``module`` whose weight is int8."""
    from torch import nn

    return [name for name, m in module.named_modules() if isinstance(m, nn.Linear) and is_quantized(m.weight)]


def _check_module(module: nn.Module, what: str) -> None:
    params = list(module.parameters())
    devices = {p.device.type for p in params}
    if "meta" in devices:
        raise ValueError(f"{what}: its weights are not loaded (meta device); quantise a loaded model")
    unsupported = sorted(devices - set(DEVICES))
    if unsupported:
        raise ValueError(f"{what}: int8 quantisation runs on {' and '.join(DEVICES)} here; the model is on "
                         f"{', '.join(unsupported)}")
    if any(hasattr(m, "_hf_hook") for m in module.modules()):
        raise ValueError(f"{what}: model CPU offload is enabled; quantise before offloading is not supported "
                         "(the offload hooks move weights each call): leave one of the two out")
    if any(is_quantized(p) for p in params):
        raise ValueError(f"{what}: already quantised (quantise a pipeline once)")


def quantize_module(module: nn.Module, mode: str = "int8-weight", what: str = "module") -> int:
    """Quantise the ``nn.Linear`` weights of ``module`` in place; returns how many layers were quantised."""
    from torch import nn

    mode, _ = check_request(mode, ("unet",))
    _check_module(module, what)
    taq = require_torchao()
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return 0
    # set_inductor_config=False: leave torch.compile's global settings as the user has them
    config = taq.Int8WeightOnlyConfig(set_inductor_config=False)
    taq.quantize_(module, config, filter_fn=lambda m, _fqn: isinstance(m, nn.Linear))
    return len(quantized_linear_names(module))


def quantize_pipeline(pipe, components: Iterable[str] = ("unet", "vae"), mode: str = "int8-weight") -> dict[str, int]:
    """Quantise ``pipe``'s networks in place (int8 weight-only Linear layers; see the module docstring).

    ``mode``: ``int8-weight`` (alias ``int8``). ``components``: among ``unet``, ``vae`` and ``prior``. Returns ``{component: layers quantised}``.
    Raises ``ValueError`` for an unknown mode or component, a missing prior, an unsupported device, model
    CPU offload or a second quantisation; :class:`QuantizationUnavailable` (an ``ImportError``) without
    torchao. Every check runs before any weight changes."""
    from torch import nn

    mode, components = check_request(mode, components)
    if not hasattr(pipe, "unet") or not isinstance(pipe.unet, nn.Module):
        raise TypeError(f"quantize_pipeline needs a torch ApDepthPipeline; got {type(pipe).__name__} "
                        "(an exported onnxruntime / OpenVINO model cannot be quantised here)")
    modules = {}
    for name in components:
        module = getattr(pipe, name, None)
        if module is None:
            raise ValueError(f"the pipeline has no {name} to quantise")
        _check_module(module, name)
        modules[name] = module
    require_torchao()
    return {name: quantize_module(module, mode, what=name) for name, module in modules.items()}
