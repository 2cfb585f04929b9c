"""Export an ApDepth pipeline to ONNX: its four networks as four ``.onnx`` files plus ``apdepth_onnx.json``.

The example inputs of every network are recorded by running the pipeline itself once on an image of the
requested processing size (see :mod:`apdepth.export.components`), so the exported shapes are whatever
the pipeline's pre-processing makes of that size, now and after any change to it.

Folder layout::

    apdepth_onnx.json   manifest: dtype, sizes, the pipeline config, the empty-prompt embedding, checks
    prior.onnx          Depth Anything V2 on its own input size (absent for use_prior=False models)
    vae_encoder.onnx    RGB / prior image -> latent mean
    unet.onnx           conditioning latent -> depth latent (one step)
    vae_decoder.onnx    depth latent -> image (the pipeline averages its 3 channels)
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .components import (
    COMPONENTS,
    INPUT_NAMES,
    OUTPUT_NAMES,
    TorchRunner,
    networks,
    pipeline_manifest,
    stub_pipeline,
)

logger = logging.getLogger(__name__)

MANIFEST = "apdepth_onnx.json"
FORMAT_VERSION = 1
DEFAULT_OPSET = 17
EXPORTERS = ("torchscript", "dynamo")


def example_image(height: int, width: int) -> np.ndarray:
    """A deterministic uint8 RGB image ``[H, W, 3]`` with structure at several scales (for recording shapes
    and for the export check)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 0.5 + 0.5 * np.sin(x / max(width, 1) * 6.0 + y / max(height, 1) * 2.0)
    g = (y / max(height - 1, 1)) ** 1.5
    b = 0.5 + 0.5 * np.cos((x - width / 2) * (y - height / 2) / (0.05 * height * width + 1.0))
    return (np.stack([r, g, b], axis=-1) * 255.0).round().astype(np.uint8)


def record_examples(pipe, height: int, width: int, batch_size: int) -> dict[str, tuple[torch.Tensor, ...]]:
    """Run the pipeline once at processing size ``height x width`` and return each network's first inputs."""
    runner = TorchRunner(networks(pipe), record=True)
    dtype = pipe.unet.dtype
    stub = stub_pipeline(runner, pipeline_manifest(pipe, dtype))
    images = [example_image(height, width)] * batch_size
    stub(images, processing_resolution=0, batch_size=batch_size)
    missing = [n for n in runner.nets if n not in runner.examples]
    if missing:
        raise RuntimeError(f"The pipeline never called {missing} at {height}x{width}; cannot export them.")
    return runner.examples


def _dynamic_axes(name: str, examples: tuple[torch.Tensor, ...]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for input_name, x in zip(INPUT_NAMES[name], examples):
        axes[input_name] = {0: "batch"} if x.ndim < 4 else {0: "batch", 2: "height", 3: "width"}
        if input_name == "encoder_hidden_states":
            axes[input_name] = {0: "batch"}
    out = OUTPUT_NAMES[name][0]
    axes[out] = {0: "batch", 1: "height", 2: "width"} if name == "prior" else {0: "batch", 2: "height", 3: "width"}
    return axes


def export_network(net: torch.nn.Module, name: str, examples: tuple[torch.Tensor, ...], path: Path,
                   dynamic: bool, exporter: str = "torchscript", opset: int = DEFAULT_OPSET) -> None:
    """Write one network to ``path`` (atomically: a temporary file is renamed into place)."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    tmp = path.with_name(f".{path.name}.tmp")
    names = {"input_names": INPUT_NAMES[name], "output_names": OUTPUT_NAMES[name], "opset_version": opset}
    try:
        with warnings.catch_warnings():
            # shape-dependent Python branches in diffusers/transformers: expected; export_onnx and the checks
            # deal with the ones that matter
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            if exporter == "torchscript":
                torch.onnx.export(net, examples, str(tmp), dynamo=False, **names,
                                  dynamic_axes=_dynamic_axes(name, examples) if dynamic else None)
            else:
                from torch.export import Dim

                shapes = None
                if dynamic:  # every axis the torchscript path names, as free dimensions
                    shapes = tuple({ax: Dim.DYNAMIC for ax in _dynamic_axes(name, examples)[n]}
                                   for n in INPUT_NAMES[name])
                torch.onnx.export(net, examples, dynamo=True, dynamic_shapes=shapes, **names).save(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _follows_other_sizes(net: torch.nn.Module, path: Path, example: torch.Tensor) -> bool:
    """Whether the ONNX file at ``path`` gives the torch network's output at a size other than ``example``'s."""
    import onnxruntime as ort

    _, _, height, width = example.shape
    x = torch.linspace(-1.0, 1.0, 3 * (height + 14) * (width + 28)).reshape(1, 3, height + 14, width + 28)
    x = x.to(example.dtype)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    try:
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    except Exception as e:  # noqa: BLE001 - a graph with frozen sizes may fail instead of answering wrong
        logger.debug("%s at another size: %s", path, e)
        return False
    with torch.no_grad():
        want = net(x).float().numpy()
    if got.shape != want.shape:
        return False
    return bool(np.abs(got.astype(np.float32) - want).max() <= 1e-2 * max(float(np.abs(want).max()), 1e-6))


def export_onnx(pipe, output_dir: str | os.PathLike, height: int, width: int, *, dynamic: bool = False,
                batch_size: int = 1, exporter: str = "torchscript", opset: int = DEFAULT_OPSET) -> dict:
    """Export ``pipe``'s networks for processing size ``height x width`` (the size after the pipeline's
    resize, i.e. what ``processing_resolution=0`` feeds it). With ``dynamic=True`` batch, height and width
    are free and that size only serves as the example. The pipeline's dtype is the exported dtype (load it
    in float16 for an fp16 export). Returns the manifest, also written to ``output_dir/apdepth_onnx.json``.
    """
    from ..io import save_json

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if height < 1 or width < 1 or batch_size < 1:
        raise ValueError(f"height, width and batch_size must be >= 1; got {height}, {width}, {batch_size}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe = pipe.to("cpu", silence_dtype_warnings=True)
    dtype = pipe.unet.dtype
    # Dynamic exports record a batch of 2, so the tracer cannot fold the batch size in as a constant.
    batch = max(batch_size, 2) if dynamic else batch_size
    examples = record_examples(pipe, height, width, batch)
    up_factor = 2 ** getattr(pipe.unet, "num_upsamplers", 0)
    if dynamic and all(s % up_factor == 0 for s in examples["unet"][0].shape[-2:]):
        # The UNet forwards explicit upsampling sizes only for latents that are not multiples of its up factor,
        # a Python branch the tracer freezes: trace the general branch, or every other latent size fails.
        logger.info("Tracing at %dx%d instead of %dx%d so that the UNet keeps its general upsampling branch.",
                    height, width + 8, height, width)
        examples = record_examples(pipe, height, width + 8, batch)
    manifest = {"format": "apdepth-onnx", "version": FORMAT_VERSION, **pipeline_manifest(pipe, dtype),
                "dynamic": dynamic, "processing_size": [height, width], "batch_size": None if dynamic else batch_size,
                "exporter": exporter, "opset": opset, "files": {}, "input_shapes": {}, "torch_networks": []}
    for name, net in networks(pipe).items():
        start = time.perf_counter()
        path = out / f"{name}.onnx"
        export_network(net, name, examples[name], path, dynamic=dynamic, exporter=exporter, opset=opset)
        if dynamic and name == "prior" and not _follows_other_sizes(net, path, examples[name][0]):
            # Depth Anything V2's head turns sizes into Python ints (transformers' DPT head), which both
            # exporters freeze as constants: the ONNX prior would only be right at the example size. The
            # prior then stays a torch module, saved beside the ONNX files.
            path.unlink()
            pipe.prior.save_pretrained(out / "prior")
            manifest["torch_networks"].append("prior")
            logger.warning("The prior's ONNX graph keeps the example size %s; in a dynamic export the prior runs "
                           "in torch (saved in %s). Export at a fixed size to have it in ONNX too.",
                           list(examples[name][0].shape[-2:]), out / "prior")
            continue
        manifest["files"][name] = path.name
        manifest["input_shapes"][name] = [list(x.shape) for x in examples[name]]
        logger.info("%s -> %s (%.1f MB, %.0f s)", name, path, path.stat().st_size / 2**20,
                    time.perf_counter() - start)
    save_json(out / MANIFEST, manifest)
    return manifest


def compare_backends(eager, exported, height: int, width: int, images: list | None = None) -> dict:
    """Depth from the eager pipeline and from an exported one on the same images: max and mean absolute
    difference of the [0, 1] depth, and the per-image correlation."""
    images = images if images is not None else [example_image(height, width)]
    max_diff, mean_diffs, corr = 0.0, [], []
    for image in images:
        a = eager(image, processing_resolution=0).depth[0]
        b = exported(image, processing_resolution=0).depth[0]
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        max_diff = max(max_diff, float(diff.max()))
        mean_diffs.append(float(diff.mean()))
        corr.append(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]))
    return {"max_abs_diff": max_diff, "mean_abs_diff": float(np.mean(mean_diffs)), "min_correlation": min(corr),
            "size": [height, width], "images": len(images)}


__all__ = ["COMPONENTS", "MANIFEST", "compare_backends", "example_image", "export_onnx", "record_examples"]
