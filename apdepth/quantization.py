"""Opt-in int8 / fp8 quantisation of the pipeline's Linear layers, through ``torchao`` (the ``quant`` extra).

``quantize_pipeline(pipe)`` replaces the weight of every ``nn.Linear`` in the UNet and the VAE (and, on
request, the prior) by an int8 tensor with one float scale per output row (symmetric). Three modes:

- ``int8-weight`` (alias ``int8``, the default; torchao's ``Int8WeightOnlyConfig``): activations stay in the
  pipeline's dtype and the matmul runs on the weight converted back to it at each call. Saves weight memory,
  not time.
- ``int8-dynamic`` (torchao's ``Int8DynamicActivationInt8WeightConfig``): the activations are quantised too,
  per token at each call, and the matmul runs in int8 (``torch._int_mm``; VNNI on x86 CPUs). Faster Linear
  layers on CPUs, a larger change in the depth. On CPUs without VNNI torchao's reduced range is used.
- ``fp8-dynamic`` (alias ``fp8``; torchao's ``Float8DynamicActivationFloat8WeightConfig``): weights and
  activations in float8 e4m3 with dynamic scales, one per row for bf16 models (torchao's ``PerRow``, the
  fast ``torch._scaled_mm`` path) and one per tensor otherwise, the matmul on the GPU's fp8 tensor cores.
  CUDA GPUs of compute capability 8.9 or later only (Ada Lovelace, Hopper and newer: L4, L40, H100, H200);
  elsewhere :func:`quantize_pipeline` raises ``ValueError`` naming the requirement. Layers whose sizes are
  not multiples of 16 stay in float (torchao's rule), which the returned counts show. Not measured here
  (no such GPU); pair it with bf16 and torch.compile, as torchao advises.

Convolutions stay in floating point: torchao 0.18 has no int8 convolution (its ``Int8Tensor`` implements
``linear`` only: ``aten.convolution`` raises NotImplementedError) and its float8 convolutions need a CUDA GPU
of compute capability 8.9 or later. The VAE, almost all convolutions, keeps most of its weights in float.

Measured on the embedded model and on the full-size architecture (``docs/benchmarks/README.md``, "int8
quantisation"). Never on by default. Devices: CPU (measured) and CUDA (torchao's own kernels; not measured
here). Not with model CPU offload (accelerate's hooks move weights each call); quantise a pipeline once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the command line checks options with this module
    import torch
    from torch import nn

__all__ = ["ALIASES", "COMPONENTS", "DEVICES", "EXTRA", "MODES", "FP8_CAPABILITY", "QuantizationUnavailable", "check_fp8_device", "check_request",
           "is_quantized", "quantize_module", "quantize_pipeline", "quantized_linear_names", "require_torchao",
           "torchao_available"]

MODES = ("int8-weight", "int8-dynamic", "fp8-dynamic")
ALIASES = {"int8": "int8-weight", "fp8": "fp8-dynamic"}  # the command line's --quantize names
FP8_CAPABILITY = (8, 9)  # torchao float8: CUDA compute capability 8.9 (Ada Lovelace) or later
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
            f"int8 / fp8 quantisation needs the optional library torchao, which cannot be imported here ({e}); "
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
    """Whether ``tensor`` is a torchao int8 or float8 weight (its storage ``qdata`` is ``torch.int8`` or a
    float8 dtype)."""
    import torch

    qdata = getattr(tensor, "qdata", None)
    return isinstance(qdata, torch.Tensor) and qdata.dtype in (torch.int8, torch.float8_e4m3fn, torch.float8_e5m2)


def quantized_linear_names(module: nn.Module) -> list[str]:
    """The qualified names of the ``nn.Linear`` layers of ``module`` whose weight is int8 or float8."""
    from torch import nn

    return [name for name, m in module.named_modules() if isinstance(m, nn.Linear) and is_quantized(m.weight)]


def check_fp8_device(device: torch.device | str) -> None:
    """Raise ``ValueError`` unless ``device`` is a CUDA GPU of compute capability >= 8.9 (torchao float8)."""
    import torch

    device = torch.device(device)
    need = f"fp8 quantisation (torchao float8) needs a CUDA GPU of compute capability {FP8_CAPABILITY[0]}." \
           f"{FP8_CAPABILITY[1]} or later (Ada Lovelace, Hopper: L4, L40, H100, H200)"
    if device.type != "cuda":
        raise ValueError(f"{need}; the model is on {device.type}")
    capability = torch.cuda.get_device_capability(device)
    if tuple(capability) < FP8_CAPABILITY:
        raise ValueError(f"{need}; {torch.cuda.get_device_name(device)} has compute capability "
                         f"{capability[0]}.{capability[1]}")


def _check_module(module: nn.Module, what: str, mode: str = "int8-weight") -> None:
    params = list(module.parameters())
    devices = {p.device for p in params}
    if "meta" in {d.type for d in devices}:
        raise ValueError(f"{what}: its weights are not loaded (meta device); quantise a loaded model")
    kind = mode.split("-")[0]
    if kind == "fp8":
        for device in devices:
            check_fp8_device(device)
    unsupported = sorted({d.type for d in devices} - set(DEVICES))
    if unsupported:
        raise ValueError(f"{what}: {kind} quantisation runs on {' and '.join(DEVICES)} here; the model is on "
                         f"{', '.join(unsupported)}")
    if any(hasattr(m, "_hf_hook") for m in module.modules()):
        raise ValueError(f"{what}: model CPU offload is enabled (accelerate hooks that move the weights at each "
                         f"call); {kind} quantisation is not supported with it: use one or the other")
    if any(is_quantized(p) for p in params):
        raise ValueError(f"{what}: already quantised (quantise a pipeline once)")


def _config(taq, mode: str, device: torch.device, dtype: torch.dtype | None = None):
    """torchao's config for ``mode``. set_inductor_config=False: torch.compile's global settings stay the
    user's."""
    import torch

    if mode == "int8-weight":
        return taq.Int8WeightOnlyConfig(set_inductor_config=False)
    if mode == "fp8-dynamic":  # per-row scales need bf16 weights (torchao); per-tensor scales take any float
        granularity = taq.PerRow() if dtype == torch.bfloat16 else taq.PerTensor()
        return taq.Float8DynamicActivationFloat8WeightConfig(granularity=granularity, set_inductor_config=False)
    from torchao.utils import should_reduce_range  # CPUs without VNNI: int8 products must not overflow

    return taq.Int8DynamicActivationInt8WeightConfig(set_inductor_config=False,
                                                     reduce_range=should_reduce_range(device))


def quantize_module(module: nn.Module, mode: str = "int8-weight", what: str = "module") -> int:
    """Quantise the ``nn.Linear`` weights of ``module`` in place; returns how many layers were quantised."""
    from torch import nn

    mode, _ = check_request(mode, ("unet",))
    _check_module(module, what, mode)
    taq = require_torchao()
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return 0
    config = _config(taq, mode, linears[0].weight.device, linears[0].weight.dtype)
    taq.quantize_(module, config, filter_fn=lambda m, _fqn: isinstance(m, nn.Linear))
    return len(quantized_linear_names(module))


def quantize_pipeline(pipe, components: Iterable[str] = ("unet", "vae"), mode: str = "int8-weight") -> dict[str, int]:
    """Quantise the Linear layers of ``pipe``'s networks in place (see the module docstring).

    ``mode``: ``int8-weight`` (alias ``int8``), ``int8-dynamic`` or ``fp8-dynamic`` (alias ``fp8``; CUDA
    compute capability >= 8.9). ``components``: among ``unet``, ``vae``
    and ``prior``. Returns ``{component: layers quantised}``.
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
        _check_module(module, name, mode)
        modules[name] = module
    require_torchao()
    return {name: quantize_module(module, mode, what=name) for name, module in modules.items()}
