"""ApDepth inference: one deterministic UNet step from ``cat([prior_latent, rgb_latent])`` to depth.

See docs/reference.md section 1 and docs/fidelity.md. The pipeline loads the authors' released checkpoint layout
(``model_index.json``, ``unet/``, ``vae/``, ``scheduler/``, ``text_encoder/``, ``tokenizer/``) as well
as pipelines saved by this package, which add a ``prior/`` folder and record the prior's
preprocessing in ``model_index.json``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.marigold.marigold_image_processing import MarigoldImageProcessor
from diffusers.utils import BaseOutput
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

from ._compat import diffusers_dtype, pop_dtype, transformers_dtype
from .diffusion import decode_depth, encode_latent, load_apdepth_unet
from .image_utils import (
    RESAMPLE_MODES,
    ImageInput,
    RGBImage,
    colorize_depth,
    processing_size,
    resize,
    resize_uint8,
    to_rgb_images,
)
from .priors import DepthAnythingPrior, PriorSpec, check_preprocessing, load_prior

logger = logging.getLogger(__name__)

# The released checkpoint does not say which prior it was trained with. The paper's Table 1 uses
# DA2 ViT-G, which was never published; ViT-L is the largest public one.
LEGACY_PRIOR = "large"
SD2_BASE = "stabilityai/stable-diffusion-2"
OUTPUT_TYPES = ("np", "pt")
# How sizes that are not multiples of 8 reach the VAE (see ApDepthPipeline.__call__):
#   "release": as they are; the encoder drops the remainder and the depth is stretched back (the authors' code)
#   "pad":     edge-padded to multiples of 8, the padding cropped from the depth (geometrically exact)
SIZE_MODES = ("release", "pad")
# How 8-bit images are resized to the processing resolution:
#   "uint8": torchvision's tensor resize of the uint8 image (float interpolation, rounded back to uint8), then
#            [0, 255] -> [-1, 1]; "nearest" means nearest-exact, as the release maps it (the authors' code)
#   "float": the [0, 1] image is interpolated and rounded to 8-bit levels
RESIZE_MODES = ("uint8", "float")
# Defaults by the prior preprocessing the checkpoint was trained with: the release's ("compat") runs the
# release's inference; "normalized" checkpoints are this package's own and keep the geometric behaviour.
MODE_DEFAULTS = {"compat": ("release", "uint8"), "normalized": ("pad", "float")}


@dataclass
class ApDepthOutput(BaseOutput):
    """Output of :class:`ApDepthPipeline`.

    Attributes:
        depth: affine-invariant depth in [0, 1] (near small, far large). ``np``: float32
            ``[N, H, W]``; ``pt``: ``[N, 1, H, W]``. A list of per-image arrays when the inputs differ
            in size.
        depth_colored: the depth maps coloured with ``colormap`` (PIL RGB), or ``None``.
        prior: the prior's disparity at the same resolution as ``depth`` (only with ``output_prior``).
        prediction: the same depth in ``MarigoldDepthOutput``'s layout: ``np`` ``[N, H, W, 1]``, ``pt``
            ``[N, 1, H, W]`` (a view of ``depth``, no copy). When the inputs differ in size, a list of
            ``[H, W]`` maps, the form diffusers' ``MarigoldImageProcessor`` helpers take in lists.
        uncertainty: per-pixel standard deviation over the test-time augmentation members (only with
            ``output_uncertainty``), in ``prediction``'s layout.
    """

    depth: np.ndarray | torch.Tensor | list
    depth_colored: list[Image.Image] | None = None
    prior: np.ndarray | torch.Tensor | list | None = None
    prediction: np.ndarray | torch.Tensor | list | None = None
    uncertainty: np.ndarray | torch.Tensor | list | None = None


class ApDepthPipeline(DiffusionPipeline):
    """Single-step monocular depth estimation with a Depth Anything V2 prior (ApDepth).

    Components: ``unet`` (8 input channels), ``vae``, ``text_encoder`` + ``tokenizer`` (only for the
    empty-prompt embedding, computed once and cached), ``scheduler`` (kept for layout compatibility;
    inference takes no scheduler step), ``prior`` (:class:`DepthAnythingPrior`).

    Config (stored in ``model_index.json``): ``default_processing_resolution``, ``prior_preprocessing``
    (``compat`` or ``normalized``: what the UNet was trained with), ``prior_name`` (how to rebuild the
    prior when ``prior/`` is absent), ``use_prior``, ``size_mode`` and ``resize_mode`` (``None``: the
    defaults for ``prior_preprocessing``, :data:`MODE_DEFAULTS`; see :meth:`__call__`).

    ``use_prior=False`` is the "no prior" variant (Table 2's "base" row): the UNet keeps its 8 input
    channels but the prior half of its input is all zeros, in training and inference alike; such a
    pipeline has no ``prior`` component.
    """

    model_cpu_offload_seq = "text_encoder->prior->vae->unet"
    _optional_components = ["prior", "text_encoder", "tokenizer", "scheduler"]
    timestep = 1
    pad_multiple = 8  # the VAE's downsampling factor; the UNet handles odd latent sizes itself
    # True: encode RGB and prior in one VAE call (faster; batched convolutions round differently, measured
    # up to ~1e-5 in depth). False (default): two calls, as the release does, for output-for-output equality.
    fuse_encode = False
    vae_tiling: str | None = None  # None, "decode" or "all": see enable_vae_tiling
    # CUDA, eager, two VAE calls: encode the RGB on a second CUDA stream while the prior runs (same kernels, same
    # results; the two are independent; the side stream's activations come from its own allocator pool). Off by
    # default (`--fast` turns it on; not yet measured on a GPU); no effect elsewhere.
    overlap_prior = False
    _compiled_forward = None  # compile_models(scope="pipeline"): the compiled _forward
    _compile_mode: str | None = None

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler: DDIMScheduler | None = None,
        text_encoder: CLIPTextModel | None = None,
        tokenizer: CLIPTokenizer | None = None,
        prior: DepthAnythingPrior | None = None,
        default_processing_resolution: int = 768,
        prior_preprocessing: str = "compat",
        prior_name: str | None = None,
        scale_invariant: bool = True,
        shift_invariant: bool = True,
        use_prior: bool = True,
        size_mode: str | None = None,
        resize_mode: str | None = None,
    ):
        super().__init__()
        check_preprocessing(prior_preprocessing)
        _check_choice("size_mode", size_mode, SIZE_MODES, allow_none=True)
        _check_choice("resize_mode", resize_mode, RESIZE_MODES, allow_none=True)
        if not use_prior and prior is not None:
            raise ValueError("use_prior=False describes a model trained without a prior; do not pass a prior.")
        if prior is not None and prior.preprocessing != prior_preprocessing:
            raise ValueError(
                f"The prior uses {prior.preprocessing!r} preprocessing but this checkpoint's UNet was trained "
                f"with {prior_preprocessing!r}; load the prior with preprocessing={prior_preprocessing!r}."
            )
        if unet.config.in_channels != 8:
            raise ValueError(
                f"ApDepth needs an 8-channel UNet (prior latent + RGB latent); got {unet.config.in_channels}. "
                "Use apdepth.diffusion.load_apdepth_unet to widen a Stable Diffusion UNet."
            )
        self.register_modules(
            unet=unet, vae=vae, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer, prior=prior
        )
        self.register_to_config(
            default_processing_resolution=default_processing_resolution,
            prior_preprocessing=prior_preprocessing,
            prior_name=prior_name,
            scale_invariant=scale_invariant,
            shift_invariant=shift_invariant,
            use_prior=use_prior,
            size_mode=size_mode,
            resize_mode=resize_mode,
        )
        self._empty_text_embedding: torch.Tensor | None = None
        # the helpers code written for MarigoldDepthPipeline calls (visualize_depth, export_depth_to_16bit_png, ...)
        self.image_processor = MarigoldImageProcessor(vae_scale_factor=self.pad_multiple)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, prior: PriorSpec | None = None, **kwargs):
        """Load a pipeline (hub id or folder). ``prior`` overrides or supplies the prior: a size name,
        hub id, folder, original ``.pth`` or module (see :func:`apdepth.priors.load_prior`). Without
        it, the saved ``prior/`` is used, else ``prior_name`` from the config, else (the authors'
        release, which records none) DA2-Large with a warning."""
        dtype = pop_dtype(kwargs)
        # float32 unless asked: transformers 5 would load the text encoder in its stored dtype (fp16 here)
        kwargs.update(diffusers_dtype(torch.float32 if dtype is None else dtype))
        if isinstance(prior, DepthAnythingPrior):
            kwargs["prior"] = prior
        elif prior is not None:
            kwargs["prior"] = None  # do not load a saved prior we are about to replace
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if kwargs.get("device_map") is None:  # offloading maps legitimately leave weights on the meta device
            _check_materialised(pipe, pretrained_model_name_or_path)
        if not pipe.config.get("use_prior", True):
            if prior is not None:
                raise ValueError(f"{pretrained_model_name_or_path} was trained without a prior (use_prior=False); "
                                 "it cannot take prior=.")
            return pipe
        if pipe.prior is None:
            spec = prior if prior is not None else pipe.config.prior_name
            if spec is None:
                spec = LEGACY_PRIOR
                logger.warning(
                    "%s does not record its prior; using Depth Anything V2 %s. The paper trained with ViT-G "
                    "(depth_anything_v2_vitg.pth, never released): pass prior=/path/to/that file to match it.",
                    pretrained_model_name_or_path, spec,
                )
            pipe.register_modules(prior=load_prior(
                spec,
                preprocessing=pipe.config.prior_preprocessing,
                dtype=dtype,
                cache_dir=kwargs.get("cache_dir"),
                local_files_only=kwargs.get("local_files_only", False),
            ))
            pipe.register_to_config(prior_name=spec if isinstance(spec, str) else None)
        return pipe

    @classmethod
    def from_stable_diffusion(
        cls,
        base: str | os.PathLike = SD2_BASE,
        prior: PriorSpec | None = LEGACY_PRIOR,
        prior_preprocessing: str = "compat",
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> ApDepthPipeline:
        """Assemble an untrained ApDepth from a Stable Diffusion 2 checkpoint (the training start):
        SD2's VAE, text encoder, tokenizer and scheduler, its UNet with ``conv_in`` widened to 8.
        ``base`` may also be an ApDepth folder (e.g. a stage-1 output): its 8-channel UNet is kept.
        ``prior=None`` (or ``"none"``) builds the no-prior variant (``use_prior=False``)."""
        base = os.fspath(base)
        unet = load_apdepth_unet(base, subfolder="unet", dtype=dtype, **kwargs)
        vae = AutoencoderKL.from_pretrained(base, subfolder="vae", **diffusers_dtype(dtype), **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(
            base, subfolder="text_encoder", **transformers_dtype(dtype), **kwargs
        )
        tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", **kwargs)
        scheduler = DDIMScheduler.from_pretrained(base, subfolder="scheduler", **kwargs)
        scheduler.register_to_config(prediction_type="sample")  # one step, the UNet outputs the latent
        use_prior = not (prior is None or (isinstance(prior, str) and prior.lower() == "none"))
        prior_module = load_prior(prior, preprocessing=prior_preprocessing, dtype=dtype) if use_prior else None
        return cls(
            unet=unet, vae=vae, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer,
            prior=prior_module, prior_preprocessing=prior_preprocessing,
            prior_name=prior if use_prior and isinstance(prior, str) else None, use_prior=use_prior,
        )

    # ------------------------------------------------------------------ memory

    def enable_vae_tiling(self, encode: bool = False) -> None:
        """Large inputs in less memory.

        The depth latent is decoded in overlapping tiles (diffusers' ``AutoencoderKL`` tiling: tiles of
        ``vae.config.sample_size`` pixels blended over a quarter of a tile), and the RGB and the prior are
        encoded one image per VAE call instead of all in one (exact). Tiled decoding is close to whole
        decoding but not equal (each tile has its own normalisation statistics).

        ``encode=True`` tiles the encoder too. Measured on the embedded demo VAE, tiled encoding changes
        the depth far more than tiled decoding (correlation 0.83 against 0.99), because the UNet sees the
        seams of both latents; use it only when encoding alone does not fit.
        """
        self.vae_tiling = "all" if encode else "decode"

    def disable_vae_tiling(self) -> None:
        """Whole-image VAE calls again (the default)."""
        self.vae_tiling = None

    @contextlib.contextmanager
    def _vae_mode(self, step: str):
        """Within: the VAE set up for ``step`` ("encode" / "decode") under :meth:`enable_vae_tiling`; the
        VAE's own settings are restored after. Without pipeline tiling the VAE is left as the user set it."""
        if self.vae_tiling is None:
            yield
            return
        saved = self.vae.use_tiling, self.vae.use_slicing
        self.vae.use_tiling = step == "decode" or self.vae_tiling == "all"
        self.vae.use_slicing = step == "encode"  # one image per encoder call
        try:
            yield
        finally:
            self.vae.use_tiling, self.vae.use_slicing = saved

    # ------------------------------------------------------------------ speed

    def set_channels_last(self, enabled: bool = True) -> None:
        """Keep the UNet's and the VAE's weights in channels_last (NHWC) memory layout, or contiguous (NCHW)
        again. Same results; faster on CPUs, slower on CUDA GPUs (:func:`apdepth.devices.prefers_channels_last`,
        which the command line follows)."""
        fmt = torch.channels_last if enabled else torch.contiguous_format
        for module in (self.unet, self.vae):
            module.to(memory_format=fmt)

    def compile_models(self, mode: str | None = "default", scope: str = "modules", cache: bool = True,
                       backend="inductor", freezing: bool = False) -> None:
        """``torch.compile`` the pipeline (opt-in; the first call at each new input size compiles, which takes
        minutes for the full-size models). Results equal eager mode within float tolerance.

        ``scope="modules"``: the UNet and the VAE's encoder and decoder, each a compiled region (the prior
        and the glue between them stay eager). ``scope="pipeline"``: the prior, the padding, both VAE
        encodes, the UNet step, the decode and the clamp as one region, traced with static shapes
        (``dynamic=False``), so that ``mode="reduce-overhead"`` captures one CUDA graph per input size and
        no kernel launch reaches the host. Image decoding, the preprocessing resize (on the CPU, as the
        release does it) and the resize back to the input size stay outside. Under ``scope="pipeline"``
        the region is used by the pipeline call and by :meth:`predict_depth` without a given prior.

        ``mode="reduce-overhead"`` adds CUDA graphs, which pays at batch 1 where the GPU otherwise waits on
        kernel launches: measured on an H100, bf16, 640x480, DA2-large, end-to-end 83 -> 52 ms with
        ``scope="modules"`` (``docs/benchmarks``). ``mode=None`` returns to eager mode.

        ``cache``: keep the compiled artefacts in a per-user folder across processes
        (:func:`apdepth.compilation.enable_compile_cache`; a ``TORCHINDUCTOR_CACHE_DIR`` set by the user
        wins). ``backend``: torch.compile's (``mode`` applies to ``inductor`` only; ``"eager"`` traces without
        generating code).

        ``freezing`` (inductor only, inference only): the weights become constants of the compiled graph, so
        inductor folds them and, on CPUs, stores each convolution's and matrix product's weight once in
        oneDNN's blocked layout (weight prepacking) instead of reordering it at every call, as eager bf16
        convolutions do. The compiled code then holds the weights as they were at the first call: changing
        the weights or the dtype afterwards needs another :meth:`compile_models`. Inductor does not keep frozen
        graphs in its compile cache: every process compiles them again.
        """
        from .compilation import MODES, SCOPES, enable_compile_cache, with_inductor_freezing

        _check_choice("scope", scope, SCOPES)
        _check_choice("mode", mode, MODES, allow_none=True)
        for module in (self.unet, self.vae.encoder, self.vae.decoder):
            module._compiled_call_impl = None  # what nn.Module.compile sets; None: eager
        self._compiled_forward = self._compile_mode = None
        if mode is None:
            return
        if cache and backend == "inductor":
            enable_compile_cache()
        options = {"mode": mode} if backend == "inductor" else {}
        # Freezing is read from inductor's global config when the graph is compiled (at the first call of each
        # new size); torch.compile(options={"freezing": True}) does not reach that point, so the compiled calls
        # run with the config patched instead.
        frozen = with_inductor_freezing if freezing and backend == "inductor" else (lambda fn: fn)
        if scope == "modules":
            for module in (self.unet, self.vae.encoder, self.vae.decoder):
                # what nn.Module.compile does, with the freezing wrapper around it
                module._compiled_call_impl = frozen(torch.compile(module._call_impl, backend=backend, **options))
            return
        self._compiled_forward = frozen(torch.compile(self._forward, dynamic=False, backend=backend, **options))
        self._compile_mode = mode

    @property
    def compiled_scope(self) -> str | None:
        """``"pipeline"``, ``"modules"`` or ``None`` (eager): what :meth:`compile_models` set."""
        if self._compiled_forward is not None:
            return "pipeline"
        return "modules" if self.unet._compiled_call_impl is not None else None

    # ------------------------------------------------------------------ model steps

    def set_empty_text_embedding(self, embedding: torch.Tensor | None) -> None:
        """Provide the empty-prompt embedding ``[1, 2, C]`` (after which ``text_encoder`` and ``tokenizer``
        may be dropped to save memory), or ``None`` to clear the cache so it is computed again."""
        if embedding is not None and (embedding.ndim != 3 or embedding.shape[0] != 1):
            raise ValueError(f"The empty-prompt embedding must be [1, tokens, C]; got {tuple(embedding.shape)}")
        self._empty_text_embedding = None if embedding is None else embedding.detach()

    def empty_text_embedding(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """CLIP embedding of the empty prompt, tokenised without padding: ``[1, 2, C]``. Computed once."""
        if self._empty_text_embedding is None:
            if self.text_encoder is None or self.tokenizer is None:
                raise ValueError("This pipeline has no text_encoder/tokenizer to compute the empty-prompt embedding.")
            max_length = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
            ids = self.tokenizer(
                "", padding="do_not_pad", max_length=max_length, truncation=True, return_tensors="pt"
            ).input_ids  # [1, 2]: start and end tokens only
            with torch.no_grad():
                emb = self.text_encoder(ids.to(self.text_encoder.device))[0]
            self._empty_text_embedding = emb.detach()
        return self._empty_text_embedding.to(device=device, dtype=dtype)

    def encode_condition(self, rgb: torch.Tensor, prior_disp: torch.Tensor | None = None,
                         rgb_latent: torch.Tensor | None = None) -> torch.Tensor:
        """UNet conditioning ``cat([prior_latent, rgb_latent])``: ``[B, 8, H/8, W/8]``.

        Args:
            rgb: ``[B, 3, H, W]`` in [-1, 1], H and W multiples of 8.
            prior_disp: the prior's output ``[B, 1, H, W]``; computed from ``rgb`` when omitted.
                Without a prior (``use_prior=False``) the prior latent is all zeros.
            rgb_latent: the RGB's latent ``[B, 4, H/8, W/8]`` when already encoded (then only the prior is).
        """
        if not self.config.use_prior:
            if rgb_latent is None:
                with self._vae_mode("encode"):
                    rgb_latent = encode_latent(self.vae, rgb)
            return torch.cat([torch.zeros_like(rgb_latent), rgb_latent], dim=1)
        if prior_disp is None:
            prior_disp = self.run_prior(rgb)
        prior_rgb = prior_disp.to(rgb.dtype).expand(-1, 3, -1, -1)  # [B, 3, H, W]
        with self._vae_mode("encode"):
            if rgb_latent is not None:
                prior_latent = encode_latent(self.vae, prior_rgb)
            elif self.fuse_encode:
                latents = encode_latent(self.vae, torch.cat([prior_rgb, rgb], dim=0))  # one VAE call: [2B, 4, h, w]
                prior_latent, rgb_latent = latents.chunk(2, dim=0)
            else:
                prior_latent, rgb_latent = encode_latent(self.vae, prior_rgb), encode_latent(self.vae, rgb)
        return torch.cat([prior_latent, rgb_latent], dim=1)  # order matters: prior first

    def _overlaps_prior(self, rgb: torch.Tensor) -> bool:
        """Whether :meth:`_forward` encodes the RGB on a second CUDA stream while the prior runs: CUDA, eager
        (not inside a compiled region), a prior to run, two VAE calls, no offloading hooks."""
        return (self.overlap_prior and rgb.is_cuda and self.config.use_prior and self.prior is not None
                and not self.fuse_encode and not torch.compiler.is_compiling()
                and getattr(self.vae, "_hf_hook", None) is None)

    def _encode_rgb_aside(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Stream]:
        """Start the RGB's VAE encode on this device's side stream; returns its latent (valid on the current
        stream only after :meth:`_join_aside`) and the side stream."""
        main = torch.cuda.current_stream(rgb.device)
        streams = self.__dict__.setdefault("_side_streams", {})
        side = streams.get(rgb.device)
        if side is None:
            side = streams[rgb.device] = torch.cuda.Stream(rgb.device)
        side.wait_stream(main)  # rgb (and the weights) are ready
        with torch.cuda.stream(side), self._vae_mode("encode"):
            latent = encode_latent(self.vae, rgb)
        rgb.record_stream(side)  # rgb's memory is not reused while the side stream reads it
        return latent, side

    @staticmethod
    def _join_aside(latent: torch.Tensor, side: torch.cuda.Stream) -> torch.Tensor:
        """The side stream's latent, usable on the current stream."""
        main = torch.cuda.current_stream(latent.device)
        main.wait_stream(side)
        latent.record_stream(main)  # allocated on the side stream, used and freed on this one
        return latent

    def run_prior(self, rgb: torch.Tensor) -> torch.Tensor:
        """The prior's disparity ``[B, 1, H, W]`` for ``rgb`` ``[B, 3, H, W]`` in [-1, 1]."""
        if not self.config.use_prior:
            raise ValueError("This pipeline was trained without a prior (use_prior=False); it has none to run.")
        if self.prior is None:
            raise ValueError("This pipeline has no prior; pass prior= to from_pretrained or register one.")
        if self.prior.preprocessing != self.config.prior_preprocessing:
            raise ValueError(
                f"Prior preprocessing {self.prior.preprocessing!r} does not match the checkpoint's "
                f"{self.config.prior_preprocessing!r}."
            )
        return self.prior(rgb)

    def predict_latent(self, condition: torch.Tensor) -> torch.Tensor:
        """One UNet step at t=1: conditioning ``[B, 8, h, w]`` -> depth latent ``[B, 4, h, w]``."""
        batch = condition.shape[0]
        emb = self.empty_text_embedding(condition.device, self.unet.dtype).expand(batch, -1, -1)
        t = torch.full((batch,), self.timestep, device=condition.device, dtype=torch.long)
        return self.unet(condition.to(self.unet.dtype), t, encoder_hidden_states=emb).sample

    def inference_modes(self, size_mode: str | None = None, resize_mode: str | None = None) -> tuple[str, str]:
        """``(size_mode, resize_mode)`` in effect: the arguments, else the config's, else the defaults for
        the checkpoint's ``prior_preprocessing`` (:data:`MODE_DEFAULTS`)."""
        default_size, default_resize = MODE_DEFAULTS[self.config.prior_preprocessing]
        size_mode = size_mode or self.config.get("size_mode") or default_size
        resize_mode = resize_mode or self.config.get("resize_mode") or default_resize
        _check_choice("size_mode", size_mode, SIZE_MODES)
        _check_choice("resize_mode", resize_mode, RESIZE_MODES)
        return size_mode, resize_mode

    def predict_depth(self, rgb: torch.Tensor, prior_disp: torch.Tensor | None = None,
                      size_mode: str | None = None) -> torch.Tensor:
        """Depth for preprocessed RGB: ``[B, 3, H, W]`` in [-1, 1] -> ``[B, 1, H, W]`` in [0, 1].

        Any H, W: the prior sees the image as is. ``size_mode="pad"``: RGB and prior are edge-padded to
        multiples of 8 for the VAE and the padding is cropped from the result. ``"release"``: they go to the
        VAE as they are, the depth comes out at ``8 * floor(H / 8)`` x ``8 * floor(W / 8)`` and is stretched
        back to H x W (bilinear, antialiased). ``None``: :meth:`inference_modes`.
        """
        _, _, height, width = rgb.shape
        depth = self._predict_raw(rgb, prior_disp, size_mode)
        return resize(depth, (height, width), "bilinear")

    def _predict_raw(self, rgb: torch.Tensor, prior_disp: torch.Tensor | None, size_mode: str | None) -> torch.Tensor:
        """:meth:`predict_depth` before the release's stretch: ``[B, 1, H', W']`` where H' x W' is H x W
        (``"pad"``) or the VAE's output size (``"release"``)."""
        return self._run_forward(rgb, prior_disp, self.inference_modes(size_mode)[0])[0]

    def _run_forward(self, rgb: torch.Tensor, prior_disp: torch.Tensor | None,
                     size_mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`_forward`, compiled when :meth:`compile_models` compiled the pipeline as one region (and the
        prior is to be run, not given)."""
        if self._compiled_forward is None or prior_disp is not None:
            return self._forward(rgb, prior_disp, size_mode)
        from .compilation import CUDA_GRAPH_MODES

        self.empty_text_embedding(rgb.device, self.unet.dtype)  # cached eagerly: the tokenizer does not trace

        graphs = rgb.is_cuda and self._compile_mode in CUDA_GRAPH_MODES
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()  # a new call: the previous outputs may be overwritten
        depth, prior_disp = self._compiled_forward(rgb, None, size_mode)
        if graphs:  # the graph's output buffers are reused by its next replay: hand out copies
            depth = depth.clone()
            prior_disp = None if prior_disp is None else prior_disp.clone()
        return depth, prior_disp

    def _forward(self, rgb: torch.Tensor, prior_disp: torch.Tensor | None,
                 size_mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prior (unless given), padding, encodes, the UNet step, decode and clamp: ``(depth [B, 1, H', W'] in
        [0, 1] float32, prior disparity [B, 1, H, W] or None)``. The region :meth:`compile_models` compiles
        under ``scope="pipeline"``."""
        _, _, height, width = rgb.shape
        if size_mode == "pad":
            pad_h, pad_w = (-height) % self.pad_multiple, (-width) % self.pad_multiple
        else:  # the release's VAE gets any size >= 8 as is; below 8 its latent would be empty: pad to 8
            pad_h, pad_w = max(0, self.pad_multiple - height), max(0, self.pad_multiple - width)
        padded = F.pad(rgb, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else rgb
        aside = self._encode_rgb_aside(padded) if prior_disp is None and self._overlaps_prior(rgb) else None
        if prior_disp is None and self.config.use_prior:
            prior_disp = self.run_prior(rgb)  # [B, 1, H, W], concurrently with the side stream's encode
        prior_padded = prior_disp
        if prior_disp is not None and (pad_h or pad_w):
            prior_padded = F.pad(prior_disp, (0, pad_w, 0, pad_h), mode="replicate")
        rgb_latent = None if aside is None else self._join_aside(*aside)
        latent = self.predict_latent(self.encode_condition(padded, prior_padded, rgb_latent))  # [B, 4, h, w]
        with self._vae_mode("decode"):
            depth = decode_depth(self.vae, latent).float()  # [B, 1, 8h, 8w]
        depth = (depth.clamp(-1.0, 1.0) + 1.0) / 2.0
        return depth[:, :, : height if pad_h else None, : width if pad_w else None], prior_disp

    # ------------------------------------------------------------------ call

    def _check_call(self, processing_resolution, resample, batch_size, output_type, generator,
                    size_mode, resize_mode, output_prior, output_uncertainty, tta_kwargs):
        if not isinstance(processing_resolution, int) or processing_resolution < 0:
            raise ValueError(f"processing_resolution must be an int >= 0 (0 = native), got {processing_resolution!r}")
        if resample not in RESAMPLE_MODES:
            raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if generator is not None and not isinstance(generator, (torch.Generator, list)):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        _check_choice("size_mode", size_mode, SIZE_MODES, allow_none=True)
        _check_choice("resize_mode", resize_mode, RESIZE_MODES, allow_none=True)
        if output_prior and not self.config.use_prior:
            raise ValueError("output_prior=True, but this pipeline was trained without a prior (use_prior=False).")
        if tta_kwargs is not None and not output_uncertainty:
            raise ValueError("tta_kwargs only applies with output_uncertainty=True.")

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput | list[ImageInput],
        processing_resolution: int | None = None,
        match_input_resolution: bool = True,
        resample: str = "bilinear",
        batch_size: int = 1,
        colormap: str | None = None,
        output_type: str = "np",
        output_prior: bool = False,
        generator: torch.Generator | None = None,
        show_progress_bar: bool | None = None,
        size_mode: str | None = None,
        resize_mode: str | None = None,
        output_uncertainty: bool = False,
        tta_kwargs: dict | None = None,
        return_dict: bool = True,
    ) -> ApDepthOutput | tuple:
        """Predict affine-invariant depth.

        Args:
            image: PIL image, numpy array, tensor, or a list of them (see
                :func:`apdepth.image_utils.to_rgb_images`); images may differ in size.
            processing_resolution: long edge the image is resized to before inference; ``0`` keeps the
                native size; ``None`` uses the checkpoint's ``default_processing_resolution``.
            match_input_resolution: resize the prediction back to the input size.
            resample: interpolation for both resizes (``bilinear``, ``bicubic``, ``nearest``, ...).
            batch_size: images per forward pass (only equal-sized images share a batch).
            colormap: matplotlib colour map for ``depth_colored`` (e.g. ``"Spectral"``); ``None``: none.
            output_type: ``"np"`` or ``"pt"``.
            output_prior: also return the prior's disparity.
            generator: accepted for API compatibility. ApDepth draws no random numbers, so the output is
                a deterministic function of the input, device and dtype.
            show_progress_bar: show a bar over batches. ``None`` (default): as ``MarigoldDepthPipeline``, shown
                unless turned off with ``set_progress_bar_config(disable=True)``.
            size_mode: how sizes that are not multiples of 8 reach the VAE. ``"release"``: as they are, as the
                authors' code does (the VAE drops the remainder; the depth is stretched back to the output
                size); ``"pad"``: edge-padded to multiples of 8 and cropped after (geometrically exact).
            resize_mode: how 8-bit images are resized. ``"uint8"``: the uint8 image is resized as torchvision
                resizes tensors (float interpolation rounded back to uint8) and then normalised, as the
                authors' code does; ``"float"``: the [0, 1] image is interpolated, then rounded to 8-bit levels.
            output_uncertainty: also return ``uncertainty``, the per-pixel standard deviation over test-time
                augmentations (:func:`apdepth.postprocessing.tta.predict_tta`; by default the image and its mirror image at
                ``processing_resolution``). ``depth`` / ``prediction`` are then the members' aligned mean,
                as Marigold returns the ensemble's mean with its uncertainty.
            tta_kwargs: arguments for :func:`apdepth.postprocessing.tta.predict_tta` under ``output_uncertainty``
                (``flip``, ``processing_resolutions``, ``align``), e.g. ``{"processing_resolutions": (None, 512)}``.
            return_dict: ``False``: the tuple ``(prediction, uncertainty, latent)`` in the order
                ``MarigoldDepthPipeline`` returns it; ``latent`` is always ``None`` (one deterministic step
                leaves no latent to resume from).

        ``size_mode`` / ``resize_mode`` ``None`` take the config's values, else the release's behaviour for
        ``prior_preprocessing="compat"`` checkpoints (the authors' release and everything trained like it)
        and ``"pad"`` / ``"float"`` for ``"normalized"`` ones. With ``match_input_resolution=False`` and
        ``size_mode="release"`` the depth has the VAE's output size (multiples of 8), as the release returns.
        """
        # 1. Check inputs.
        if processing_resolution is None:
            processing_resolution = self.config.default_processing_resolution
        self._check_call(processing_resolution, resample, batch_size, output_type, generator, size_mode, resize_mode,
                         output_prior, output_uncertainty, tta_kwargs)
        size_mode, resize_mode = self.inference_modes(size_mode, resize_mode)
        if resize_mode == "uint8" and resample == "nearest":
            resample = "nearest-exact"  # torchvision's meaning of the release's "nearest"
        if output_uncertainty:  # steps 2-6 per augmentation member (apdepth.postprocessing.tta)
            out = self._call_tta(image, processing_resolution, match_input_resolution, resample, batch_size,
                                 colormap, output_type, output_prior, show_progress_bar, size_mode, resize_mode,
                                 tta_kwargs)
            return out if return_dict else (out.prediction, out.uncertainty, None)
        images = to_rgb_images(image)

        # 2. Preprocess: resize to the processing resolution, [0, 1] -> [-1, 1]. [3, h, w] each.
        prepared = [self._preprocess(img, processing_resolution, resample, resize_mode) for img in images]

        # 3-5. Prior, encode, one UNet step, decode; equal-sized images are batched together.
        depths, priors = self._predict_prepared(prepared, batch_size, size_mode, show_progress_bar)

        # 6. Postprocess: back to the input size (one resize, also for the release's stretch), clip to [0, 1].
        sizes = [tuple(img.pixels.shape[-2:]) if match_input_resolution else tuple(d.shape[-2:])
                 for img, d in zip(images, depths)]
        out = self._postprocess(depths, priors if output_prior else None, sizes, resample, colormap, output_type)
        self.maybe_free_model_hooks()
        return out if return_dict else (out.prediction, None, None)

    def _predict_prepared(self, prepared: list[torch.Tensor], batch_size: int, size_mode: str,
                          show_progress_bar: bool | None) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Steps 3-5 of :meth:`__call__` on preprocessed images (``[3, h, w]`` each, in [-1, 1]), in batches of
        equal-sized images: the depth ``[1, h', w']`` (``h' = 8 * (h // 8)`` under ``size_mode="release"``) and
        the prior's disparity ``[1, h, w]`` (``None`` without a prior) of each, on the CPU."""
        device = self._execution_device
        depths: list[torch.Tensor] = [None] * len(prepared)  # each [1, h', w']
        priors: list[torch.Tensor | None] = [None] * len(prepared)  # each [1, h, w]
        batches = self._batches([x.shape for x in prepared], batch_size)
        show = show_progress_bar if show_progress_bar is not None else not self._progress_bar_disabled()
        for idx in self.progress_bar(batches) if show else batches:
            rgb = torch.stack([prepared[i] for i in idx]).to(device)  # [B, 3, h, w]
            depth, prior_disp = self._run_forward(rgb, None, size_mode)  # [B, 1, h', w'], [B, 1, h, w] or None
            for j, i in enumerate(idx):
                depths[i] = depth[j].cpu()
                if prior_disp is not None:
                    priors[i] = prior_disp[j].float().cpu()
        return depths, priors

    def _postprocess(self, depths: list[torch.Tensor], priors: list[torch.Tensor] | None,
                     sizes: list[tuple[int, int]], resample: str, colormap: str | None,
                     output_type: str) -> ApDepthOutput:
        """Step 6 of :meth:`__call__`: each depth ``[1, h', w']`` (and prior, when given) resized to its output
        size, the depth clipped to [0, 1], coloured and formatted as :class:`ApDepthOutput`."""
        out_depth = [resize(d[None], size, resample)[0].clamp(0.0, 1.0) for d, size in zip(depths, sizes)]  # [1, H, W]
        colored = None if colormap is None else [colorize_depth(d[0].numpy(), colormap) for d in out_depth]
        prior = None
        if priors is not None:
            prior = self._format([resize(p[None], size, resample)[0] for p, size in zip(priors, sizes)], output_type)
        depth = self._format(out_depth, output_type)
        return ApDepthOutput(depth=depth, depth_colored=colored, prior=prior, prediction=_marigold_layout(depth))

    def _progress_bar_disabled(self) -> bool:
        return bool(getattr(self, "_progress_bar_config", {}).get("disable", False))

    def _call_tta(self, image, processing_resolution, match_input_resolution, resample, batch_size, colormap,
                  output_type, output_prior, show_progress_bar, size_mode, resize_mode, tta_kwargs) -> ApDepthOutput:
        """``output_uncertainty=True``: the mean and spread over test-time augmentations, as :class:`ApDepthOutput`."""
        from .postprocessing.tta import predict_tta, uncertainty_options

        options = uncertainty_options(processing_resolution, tta_kwargs, output_prior, match_input_resolution)
        tta = predict_tta(self, image, batch_size=batch_size, colormap=colormap, resample=resample,
                          show_progress_bar=show_progress_bar, size_mode=size_mode, resize_mode=resize_mode,
                          **options)
        maps, spreads = tta.as_tensors()
        depth = self._format(maps, output_type)
        uncertainty = self._format(spreads, output_type)
        return ApDepthOutput(depth=depth, depth_colored=tta.depth_colored, prediction=_marigold_layout(depth),
                             uncertainty=_marigold_layout(uncertainty))

    @staticmethod
    def _preprocess(img: RGBImage, resolution: int, resample: str, resize_mode: str = "uint8") -> torch.Tensor:
        _, height, width = img.pixels.shape
        size = processing_size(height, width, resolution)
        if img.bits == 8 and resize_mode == "uint8":  # the release: resize the uint8 image, then normalise
            levels = torch.round(img.pixels * 255.0)  # [3, H, W] the 8-bit levels, exactly
            levels = resize_uint8(levels[None], size, resample)[0]  # [3, h, w]
            return (levels / 255.0 * 2.0 - 1.0).contiguous()  # [3, h, w] in [-1, 1]
        x = resize(img.pixels[None], size, resample)[0]
        if img.bits == 8:  # keep 8-bit levels
            x = torch.round(x * 255.0) / 255.0
        return (x.clamp(0.0, 1.0) * 2.0 - 1.0).contiguous()  # [3, h, w] in [-1, 1]

    @staticmethod
    def _batches(shapes: list[torch.Size], batch_size: int) -> list[list[int]]:
        """Indices grouped into runs of equal shape, at most ``batch_size`` long, order kept."""
        batches: list[list[int]] = []
        for i, shape in enumerate(shapes):
            if batches and len(batches[-1]) < batch_size and shapes[batches[-1][0]] == shape:
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    @staticmethod
    def _format(maps: list[torch.Tensor], output_type: str):
        """Each map ``[1, H, W]`` -> stacked ``[N, H, W]`` numpy / ``[N, 1, H, W]`` tensor, or a list."""
        same = all(m.shape == maps[0].shape for m in maps)
        if output_type == "pt":
            return torch.stack(maps) if same else [m[None] for m in maps]
        arrays = [m[0].float().numpy().astype(np.float32) for m in maps]
        return np.stack(arrays) if same else arrays


def _marigold_layout(maps):
    """:meth:`ApDepthPipeline._format`'s output in ``MarigoldDepthOutput``'s layout, without copying: numpy
    ``[N, H, W]`` -> ``[N, H, W, 1]``, tensors ``[N, 1, H, W]`` as they are; lists (inputs of different sizes)
    -> ``[H, W]`` maps."""
    if isinstance(maps, list):
        return [m if isinstance(m, np.ndarray) else m[0, 0] for m in maps]
    return maps[..., None] if isinstance(maps, np.ndarray) else maps


def _check_choice(name: str, value, allowed: tuple[str, ...], allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}{' or None' if allow_none else ''}, got {value!r}")


def _check_materialised(pipe: ApDepthPipeline, source) -> None:
    """diffusers leaves weights a checkpoint lacks on the meta device with only a warning (and the first call
    crashes); name them instead."""
    for name in ("unet", "vae", "text_encoder", "prior"):
        module = getattr(pipe, name, None)
        if not isinstance(module, torch.nn.Module):
            continue
        empty = [k for k, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
        if empty:
            raise ValueError(f"{source}: {name} weights {empty[:20]}{' ...' if len(empty) > 20 else ''} are not in the "
                             "checkpoint (left uninitialised). Refusing to run with uninitialised weights.")
