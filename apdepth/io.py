"""File input and output: robust image reading and atomic writes (no half-written file survives a crash)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An input file that is missing, unreadable, corrupt or not an image."""


def read_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image, applying its EXIF orientation.

    Raises :class:`ImageReadError` naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated or corrupt file fails here, not later
            img = ImageOps.exif_transpose(img)
            return img.copy() if img is not None else img
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{path}: not a readable image ({e})") from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Write to a temporary file beside ``path`` and move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_open(path) as f:
        np.save(f, array)


def save_image(path: str | os.PathLike, image: Image.Image | np.ndarray, format: str = "PNG") -> None:
    """Save a PIL image, or a uint8 / uint16 array (uint16 -> 16-bit grayscale PNG), atomically."""
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint16 and image.ndim != 2:
            raise ValueError("uint16 images must be 2-D (grayscale)")
        image = Image.fromarray(image)  # uint16 [H, W] -> mode I;16
    with atomic_open(path) as f:
        image.save(f, format=format)


def save_json(path: str | os.PathLike, obj) -> None:
    import json

    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
