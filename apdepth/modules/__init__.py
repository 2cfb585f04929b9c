"""Trainable and frozen building blocks of stage 1: feature adapters and external encoders."""

from .adapter import ADAPTER_KINDS, ConvFeatureAdapter, MLPFeatureAdapter, build_adapter, load_adapter
from .encoders import (
    DEFAULT_SOURCES,
    ENCODER_KINDS,
    CLIPEncoder,
    DINOv2Encoder,
    ExternalEncoder,
    SAMEncoder,
    load_external_encoder,
)

__all__ = [
    "ADAPTER_KINDS", "CLIPEncoder", "ConvFeatureAdapter", "DEFAULT_SOURCES", "DINOv2Encoder", "ENCODER_KINDS",
    "ExternalEncoder", "MLPFeatureAdapter", "SAMEncoder", "build_adapter", "load_adapter", "load_external_encoder",
]
