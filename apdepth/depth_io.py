"""Depth map files beyond npy and 8/16-bit PNG: float32 EXR and TIFF (lossless), and metric 16-bit PNG in
millimetres with its scale recorded in the file. Writers are atomic (see :func:`apdepth.io.atomic_open`);
:func:`read_depth` reads all of them back (and npy / plain 16-bit PNG with a given scale).

=============  =======================  =====================================================================
format         file                     content
=============  =======================  =====================================================================
``exr``        ``*.exr``                one float32 channel ``Y`` (ZIP compression, lossless); readers that
                                        show EXR as an image display it as grey
``tiff32``     ``*.tif``                float32 grayscale (Pillow mode ``F``, Deflate compression, lossless)
``png16mm``    ``*.png``                uint16 ``round(depth / 0.001)``: millimetres when the depth is in metres
                                        (0 = invalid; clipped to 65.535); text chunks ``depth_scale`` (0.001:
                                        value x scale = depth) and ``depth_unit``
=============  =======================  =====================================================================
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import atomic_open

MM_SCALE = 0.001  # metres per png16mm unit
PNG16_MAX = 65535


def _check_2d(depth: np.ndarray, what: str) -> np.ndarray:
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"{what}: depth must be 2-D [H, W], got shape {depth.shape}")
    return depth.astype(np.float32, copy=False)


def _tmp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")


def save_exr(path: str | os.PathLike, depth: np.ndarray, attributes: dict[str, str] | None = None) -> None:
    """Write ``depth`` ``[H, W]`` as a single-channel (``Y``) float32 OpenEXR file (needs ``OpenEXR``)."""
    try:
        import OpenEXR
    except ImportError as e:
        raise ImportError("--formats exr needs the OpenEXR package: pip install 'apdepth[exr]'") from e
    path = Path(path)
    depth = np.ascontiguousarray(_check_2d(depth, str(path)))
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage, **(attributes or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(path)  # OpenEXR writes by file name: write beside, then move into place
    try:
        with OpenEXR.File(header, {"Y": depth}) as f:
            f.write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_tiff32(path: str | os.PathLike, depth: np.ndarray, description: str | None = None) -> None:
    """Write ``depth`` ``[H, W]`` as a float32 grayscale TIFF (lossless Deflate)."""
    from PIL import Image

    depth = _check_2d(depth, str(path))
    image = Image.fromarray(np.ascontiguousarray(depth), mode="F")
    extra = {"description": description} if description else {}
    with atomic_open(path) as f:
        image.save(f, format="TIFF", compression="tiff_adobe_deflate", **extra)


def save_png16_mm(path: str | os.PathLike, depth_metric: np.ndarray, unit: str = "metres") -> dict:
    """Write metric depth as uint16 PNG in units of ``MM_SCALE`` (millimetres for depth in metres).

    Non-finite and non-positive depths become 0 (invalid); depths beyond 65.535 are clipped to 65535.
    The scale and unit go into PNG text chunks. Returns ``{"depth_scale", "clipped", "invalid"}``.
    """
    from PIL import Image, PngImagePlugin

    depth = _check_2d(depth_metric, str(path)).astype(np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    units = np.where(valid, np.round(np.where(valid, depth, 0.0) / MM_SCALE), 0.0)
    clipped = int((units > PNG16_MAX).sum())
    units = np.clip(units, 0, PNG16_MAX).astype(np.uint16)
    units[valid & (units == 0)] = 1  # a valid depth below 0.5 mm stays valid
    info = PngImagePlugin.PngInfo()
    info.add_text("depth_scale", repr(MM_SCALE))
    info.add_text("depth_unit", f"value * depth_scale = depth in {unit}; 0 = invalid")
    with atomic_open(path) as f:
        Image.fromarray(units).save(f, format="PNG", pnginfo=info)
    return {"depth_scale": MM_SCALE, "clipped": clipped, "invalid": int((~valid).sum())}


def save_float_depth(fmt: str, path: str | os.PathLike, depth: np.ndarray, description: str) -> None:
    """``fmt`` ``exr`` or ``tiff32``: :func:`save_exr` / :func:`save_tiff32` with ``description`` recorded."""
    if fmt == "exr":
        save_exr(path, depth, {"apdepth_depth": description})
    elif fmt == "tiff32":
        save_tiff32(path, depth, description)
    else:
        raise ValueError(f"float depth format must be 'exr' or 'tiff32', got {fmt!r}")


def read_depth(path: str | os.PathLike, scale: float | None = None) -> np.ndarray:
    """Read a depth map ``[H, W]`` float32 from npy, EXR (first of ``Y``, ``Z``, ``R``, ``depth``), float TIFF,
    or 16-bit PNG (times ``scale``, else the file's ``depth_scale`` text chunk, else an error)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        depth = np.load(path, allow_pickle=False)
    elif suffix == ".exr":
        import OpenEXR

        with OpenEXR.File(str(path)) as f:
            channels = f.channels()
            name = next((c for c in ("Y", "Z", "R", "depth", "Depth") if c in channels), None)
            if name is None:
                raise ValueError(f"{path}: no depth channel among {sorted(channels)} (expected Y, Z, R or depth)")
            depth = np.array(channels[name].pixels)
    else:
        from PIL import Image

        with Image.open(path) as img:
            if img.mode == "F":
                depth = np.array(img)
            elif img.mode in ("I;16", "I;16B", "I") and suffix == ".png":
                factor = scale if scale is not None else img.info.get("depth_scale")
                if factor is None:
                    raise ValueError(f"{path}: a 16-bit PNG without a depth_scale text chunk; give its scale")
                depth = np.array(img).astype(np.float64) * float(factor)
            else:
                raise ValueError(f"{path}: mode {img.mode} is not a depth map (float32 TIFF or 16-bit PNG expected)")
    if scale is not None and suffix != ".png":
        depth = depth * scale
    return _check_2d(np.asarray(depth), str(path))
