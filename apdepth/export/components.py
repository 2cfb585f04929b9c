"""The four networks of an ApDepth pipeline as plain tensor -> tensor modules, and the stand-ins that let
:class:`~apdepth.pipeline.ApDepthPipeline` run them through any backend.

The exported graph is the networks only: the pipeline's own pre- and post-processing (resizes, 8-bit
rounding, padding to the VAE's factor, the prior's resize to multiples of 14, clipping, resizing back)
stays in Python, in the pipeline's code, so an exported model follows the pipeline's semantics exactly.
This works by swapping the pipeline's ``unet``, ``vae`` and the prior's inner network for stand-ins that
pass each call to a *component runner* (a callable ``runner(name, *tensors) -> tensor``):

============  ==========================================================  =============================
name          inputs                                                      output
============  ==========================================================  =============================
``prior``     ``pixel_values [B, 3, h14, w14]`` (the prior's input)        ``[B, h14, w14]`` disparity
``vae_encoder`` ``image [B, 3, H, W]`` in [-1, 1]                          ``[B, 4, H/8, W/8]`` (mean)
``unet``      ``sample [B, 8, h, w]``, ``timestep [B]`` int64,            ``[B, 4, h, w]``
              ``encoder_hidden_states [B, T, C]``
``vae_decoder`` ``latent [B, 4, h, w]`` (already divided by the scale)     ``[B, 3, 8h, 8w]``
============  ==========================================================  =============================

:class:`TorchRunner` runs the eager torch modules (and records the inputs each one saw: the export's
example inputs); :mod:`apdepth.export.runtime` runs ONNX files with onnxruntime or OpenVINO.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch
from torch import nn

COMPONENTS = ("prior", "vae_encoder", "unet", "vae_decoder")
INPUT_NAMES = {
    "prior": ["pixel_values"],
    "vae_encoder": ["image"],
    "unet": ["sample", "timestep", "encoder_hidden_states"],
    "vae_decoder": ["latent"],
}
OUTPUT_NAMES = {"prior": ["disparity"], "vae_encoder": ["latent_mean"], "unet": ["latent_out"],
                "vae_decoder": ["decoded"]}

Runner = Callable[..., torch.Tensor]


# ---------------------------------------------------------------------------------- exportable networks


class PriorNet(nn.Module):
    """Depth Anything V2's network alone: ``pixel_values [B, 3, h14, w14]`` -> ``[B, h14, w14]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).predicted_depth


class VaeEncoderNet(nn.Module):
    """The VAE's posterior mean (unscaled): ``[B, 3, H, W]`` -> ``[B, 4, H/8, W/8]``."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(image).latent_dist.mean


class UNetNet(nn.Module):
    """The UNet's sample prediction: ``([B, 8, h, w], [B], [B, T, C])`` -> ``[B, 4, h, w]``."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample


class VaeDecoderNet(nn.Module):
    """The VAE's decoder: ``[B, 4, h, w]`` -> ``[B, 3, 8h, 8w]``."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent).sample


def networks(pipe) -> dict[str, nn.Module]:
    """The exportable networks of an eager pipeline (no prior for ``use_prior=False``)."""
    nets = {"vae_encoder": VaeEncoderNet(pipe.vae), "unet": UNetNet(pipe.unet), "vae_decoder": VaeDecoderNet(pipe.vae)}
    if pipe.config.use_prior:
        nets = {"prior": PriorNet(pipe.prior.model), **nets}
    return {name: net.eval() for name, net in nets.items()}


class TorchRunner:
    """Runs the eager networks; ``record=True`` keeps the first inputs each one received."""

    def __init__(self, nets: dict[str, nn.Module], record: bool = False):
        self.nets = nets
        self.record = record
        self.examples: dict[str, tuple[torch.Tensor, ...]] = {}

    def __call__(self, name: str, *inputs: torch.Tensor) -> torch.Tensor:
        if self.record and name not in self.examples:
            self.examples[name] = tuple(x.detach().clone() for x in inputs)
        with torch.no_grad():
            return self.nets[name](*inputs)


# ---------------------------------------------------------------------------------- pipeline stand-ins


class _Stub(nn.Module):
    """Holds a zero-size parameter so that ``.device``/``.dtype`` (and ``next(parameters())``) report where the
    pipeline should put the tensors it hands to the runner: CPU, in the exported dtype."""

    def __init__(self, runner: Runner, dtype: torch.dtype, config: dict | None = None):
        super().__init__()
        self.runner = runner
        self.anchor = nn.Parameter(torch.zeros(0, dtype=dtype), requires_grad=False)
        self.config = SimpleNamespace(**(config or {}))

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype


class PriorNetStub(_Stub):
    """Stands in for ``DepthAnythingForDepthEstimation`` inside :class:`~apdepth.priors.DepthAnythingPrior`."""

    def forward(self, pixel_values: torch.Tensor):
        return SimpleNamespace(predicted_depth=self.runner("prior", pixel_values))


class UNetStub(_Stub):
    """Stands in for the UNet: ``unet(sample, t, encoder_hidden_states=...).sample``."""

    def forward(self, sample, timestep, encoder_hidden_states=None):
        if encoder_hidden_states is None:
            raise ValueError("The exported UNet needs encoder_hidden_states (the empty-prompt embedding).")
        timestep = torch.as_tensor(timestep, dtype=torch.long).reshape(-1).expand(sample.shape[0])
        return SimpleNamespace(sample=self.runner("unet", sample, timestep, encoder_hidden_states))


class VaeStub(_Stub):
    """Stands in for ``AutoencoderKL``: ``encode(x).latent_dist.mean`` and ``decode(z).sample``.

    Tiled or sliced VAE calls are not part of the exported graph: with ``use_tiling`` set, calls fail."""

    use_tiling = False
    use_slicing = False

    def _check(self):
        if self.use_tiling:
            raise NotImplementedError("VAE tiling is not available with exported models; run without it.")

    def encode(self, x: torch.Tensor):
        self._check()
        if self.use_slicing and x.shape[0] > 1:  # one image per call, as AutoencoderKL's slicing
            mean = torch.cat([self.runner("vae_encoder", xi) for xi in x.split(1)])
        else:
            mean = self.runner("vae_encoder", x)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean))

    def decode(self, z: torch.Tensor):
        self._check()
        return SimpleNamespace(sample=self.runner("vae_decoder", z))


def stub_pipeline(runner: Runner, manifest: dict, prior: nn.Module | None = None):
    """An :class:`~apdepth.pipeline.ApDepthPipeline` whose networks are run by ``runner``.

    ``manifest`` holds what the pipeline needs besides weights (see :func:`pipeline_manifest`):
    its config, the UNet/VAE config values it reads, the prior's config and the empty-prompt embedding.
    ``prior``: a real (torch) prior to use instead of a runner-backed one.
    """
    from accelerate import init_empty_weights

    from ..pipeline import ApDepthPipeline
    from ..priors import DepthAnythingPrior

    dtype = getattr(torch, manifest["dtype"])
    unet = UNetStub(runner, dtype, manifest["unet_config"])
    vae = VaeStub(runner, dtype, manifest["vae_config"])
    if prior is None and manifest["pipeline_config"].get("use_prior", True):
        with init_empty_weights():  # the real network is never built: its calls go to the runner
            prior = DepthAnythingPrior(**manifest["prior_config"])
        prior.model = PriorNetStub(runner, dtype)
    pipe = ApDepthPipeline(unet=unet, vae=vae, prior=prior, **manifest["pipeline_config"])
    pipe.set_empty_text_embedding(torch.tensor(manifest["empty_text_embedding"], dtype=dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_manifest(pipe, dtype: torch.dtype) -> dict:
    """What :func:`stub_pipeline` needs from an eager pipeline (JSON-serialisable)."""
    keys = ("default_processing_resolution", "prior_preprocessing", "prior_name", "scale_invariant",
            "shift_invariant", "use_prior")
    manifest = {
        "dtype": str(dtype).removeprefix("torch."),
        "pipeline_config": {k: pipe.config[k] for k in keys if k in pipe.config},
        "unet_config": {"in_channels": pipe.unet.config.in_channels, "out_channels": pipe.unet.config.out_channels},
        "vae_config": {"scaling_factor": pipe.vae.config.scaling_factor,
                       "latent_channels": pipe.vae.config.latent_channels},
        "empty_text_embedding": pipe.empty_text_embedding(torch.device("cpu"), torch.float32).tolist(),
    }
    if pipe.config.use_prior:
        manifest["prior_config"] = {k: v for k, v in pipe.prior.config.items() if not k.startswith("_")}
    return manifest
