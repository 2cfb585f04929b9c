"""Deployable exports: the pipeline's networks as ONNX files, run by onnxruntime or OpenVINO
(``apdepth export``, ``apdepth predict --backend``). See ``docs/features.md``."""

from .onnx import MANIFEST, compare_backends, example_image, export_onnx
from .runtime import BACKENDS, load_exported_pipeline, read_manifest

__all__ = ["BACKENDS", "MANIFEST", "compare_backends", "example_image", "export_onnx", "load_exported_pipeline",
           "read_manifest"]
