"""Run an exported ApDepth (``apdepth export``) with onnxruntime or OpenVINO.

:func:`load_exported_pipeline` returns an ordinary :class:`~apdepth.pipeline.ApDepthPipeline` whose
networks run in the chosen runtime; everything around them (resizing, padding, the prior's input
size, clipping) is the pipeline's own Python code, so the call, the options and the output are those of
the torch pipeline::

    pipe = load_exported_pipeline("exported/", backend="onnxruntime")
    depth = pipe(image).depth[0]  # [H, W] in [0, 1]
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from .components import COMPONENTS, INPUT_NAMES, stub_pipeline
from .onnx import MANIFEST

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino")
_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}


def read_manifest(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {MANIFEST}; export a model there first with `apdepth export`.")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != "apdepth-onnx":
        raise ValueError(f"{path}: not an apdepth ONNX export (format {manifest.get('format')!r}).")
    missing = [f for f in manifest["files"].values() if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: the export lists {missing} but they are missing.")
    return manifest


class _Runner:
    """``runner(name, *tensors) -> tensor``: torch in, numpy through the runtime, torch out (CPU)."""

    def __init__(self, folder: Path, manifest: dict):
        self.folder = folder
        self.manifest = manifest
        self.np_dtype = _NUMPY_DTYPES[manifest["dtype"]]

    def _check(self, name: str, arrays: list[np.ndarray]) -> None:
        if self.manifest["dynamic"]:
            return
        expected = self.manifest["input_shapes"][name]
        got = [list(a.shape) for a in arrays]
        if got != expected:
            h, w = self.manifest["processing_size"]
            raise ValueError(
                f"{self.folder} was exported for a fixed processing size {h}x{w} (batch "
                f"{self.manifest['batch_size']}): {name} expects inputs {expected}, got {got}. Resize the inputs "
                "to that size (and pass processing_resolution=0), or export again with --dynamic.")

    def _arrays(self, name: str, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
        arrays = []
        for input_name, x in zip(INPUT_NAMES[name], inputs):
            x = x.detach().cpu()
            arrays.append(x.numpy().astype(np.int64) if input_name == "timestep"
                          else x.float().numpy().astype(self.np_dtype))
        self._check(name, arrays)
        return arrays

    def __call__(self, name: str, *inputs: torch.Tensor) -> torch.Tensor:
        arrays = self._arrays(name, inputs)
        return torch.from_numpy(np.ascontiguousarray(self._run(name, arrays)))

    def _run(self, name: str, arrays: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class OnnxRuntimeRunner(_Runner):
    """One onnxruntime ``InferenceSession`` per network (CPU by default; ``providers`` as onnxruntime takes
    them, e.g. ``["CUDAExecutionProvider", "CPUExecutionProvider"]``)."""

    def __init__(self, folder: Path, manifest: dict, providers: list | None = None, threads: int | None = None):
        super().__init__(folder, manifest)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("The onnxruntime backend needs onnxruntime: pip install 'apdepth[export]'") from e
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = providers or ["CPUExecutionProvider"]
        self.sessions = {name: ort.InferenceSession(str(folder / file), options, providers=providers)
                         for name, file in manifest["files"].items()}

    def _run(self, name, arrays):
        session = self.sessions[name]
        feeds = {i.name: a for i, a in zip(session.get_inputs(), arrays)}
        return session.run(None, feeds)[0]


class OpenVinoRunner(_Runner):
    """The ONNX files compiled by OpenVINO (which reads ONNX directly) for ``device`` (``CPU``, ``GPU``, ...)."""

    def __init__(self, folder: Path, manifest: dict, device: str = "CPU", threads: int | None = None):
        super().__init__(folder, manifest)
        try:
            import openvino as ov
        except ImportError as e:
            raise ImportError("The openvino backend needs OpenVINO: pip install 'apdepth[openvino]'") from e
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        if manifest["dtype"] == "float32":
            config["INFERENCE_PRECISION_HINT"] = "f32"  # no silent bf16 on CPUs that have it
        self.models = {name: core.compile_model(str(folder / file), device, config)
                       for name, file in manifest["files"].items()}

    def _run(self, name, arrays):
        compiled = self.models[name]
        return compiled(arrays)[compiled.output(0)]


def load_exported_pipeline(folder: str | os.PathLike, backend: str = "onnxruntime", **runtime_options):
    """An :class:`~apdepth.pipeline.ApDepthPipeline` on the exported networks in ``folder``.

    ``backend``: ``onnxruntime`` or ``openvino``. ``runtime_options`` go to the runner (``providers`` for
    onnxruntime, ``device`` for OpenVINO, ``threads`` for both).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if backend == "onnxruntime":
        runner = OnnxRuntimeRunner(folder, manifest, **runtime_options)
    elif backend == "openvino":
        runner = OpenVinoRunner(folder, manifest, **runtime_options)
    else:
        raise ValueError(f"backend must be 'onnxruntime' or 'openvino' for an exported model, got {backend!r}")
    unknown = set(manifest["files"]) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"{folder}: unknown networks {sorted(unknown)} in {MANIFEST}")
    prior = None
    if "prior" in manifest.get("torch_networks", []):
        from .._compat import diffusers_dtype
        from ..priors import DepthAnythingPrior

        prior = DepthAnythingPrior.from_pretrained(folder / "prior", **diffusers_dtype(getattr(torch, manifest["dtype"])))
    logger.info("Loaded %s export from %s (%s, %s sizes)", backend, folder, manifest["dtype"],
                "dynamic" if manifest["dynamic"] else "x".join(map(str, manifest["processing_size"])))
    return stub_pipeline(runner, manifest, prior=prior)
