"""File input and output: robust image reading and atomic writes (no half-written file survives a crash).

An atomic write goes to a hidden temporary file ``.NAME.XXXXXXXX.tmp`` beside its target and is renamed
into place when complete. On POSIX the writer holds an exclusive ``flock`` on that file until the rename,
so :func:`clean_stale_temp_files` can tell the litter of a killed writer (unlocked) from the file of a
writer still at work (locked) and remove only the former.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; stale files are recognised by age alone
    fcntl = None

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# .NAME.XXXXXXXX.tmp as tempfile.mkstemp names them in atomic_open (8 random characters)
TEMP_FILE_PATTERN = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
# A temporary file younger than this is never removed: its writer may have just created it (POSIX) or may
# still be writing (Windows, where only age tells).
STALE_AFTER_S = 10.0
STALE_AFTER_S_NO_LOCKS = 24 * 3600.0


class ImageReadError(ValueError):
    """An input file that is missing, unreadable, corrupt or not an image."""


def _sample_bits(img: Image.Image) -> int:
    """Bits per sample as stored in the file, read from the decoder's raw mode before decoding (PIL opens
    a 16-bit RGB PNG as 8-bit ``RGB``; only the raw mode, e.g. ``RGB;16B``, tells)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return 16
    for tile in getattr(img, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return 16
    return 8


def read_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image, applying its EXIF orientation.

    The returned image's ``info`` records what the file held: ``source_mode`` (PIL mode) and
    ``source_bits`` (bits per sample); :func:`conversion_notes` turns them into what reading loses.
    Raises :class:`ImageReadError` naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            bits = _sample_bits(img)
            img.load()  # decode now: a truncated or corrupt file fails here, not later
            mode, has_transparency = img.mode, "transparency" in img.info
            img = ImageOps.exif_transpose(img)
            img = img.copy() if img is not None else img
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{path}: not a readable image ({e})") from e
    img.info.update(source_mode=mode, source_bits=bits, source_transparency=has_transparency)
    return img


def conversion_notes(image: Image.Image) -> list[str]:
    """What turning an image from :func:`read_image` into RGB input loses, in words (empty: nothing).

    - an alpha channel (RGBA, LA, or a palette with transparency) is dropped: depth sees the colours only;
    - 16-bit colour is read as 8 bits per channel (PIL decodes 16-bit RGB that way). 16-bit grayscale
      keeps its 16 bits and is not reported.
    """
    mode = image.info.get("source_mode", image.mode)
    notes = []
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and image.info.get("source_transparency")):
        notes.append("alpha channel dropped (depth is predicted from the colours only)")
    if image.info.get("source_bits", 8) == 16 and mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        notes.append("16-bit colour read as 8 bits per channel")
    return notes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Write to a temporary file beside ``path`` and move it into place only on success.

    The temporary file is removed on any failure, Ctrl-C included; one left by a killed process is
    removed by :func:`clean_stale_temp_files` on a later run.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # "being written": held until the rename below
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if fcntl is not None:  # POSIX: rename while still locked
                os.replace(tmp, path)
        if fcntl is None:  # Windows cannot rename an open file
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _is_stale(path: Path, now: float) -> bool:
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if fcntl is None:
        return age > STALE_AFTER_S_NO_LOCKS
    if age < STALE_AFTER_S:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # succeeds only when no writer holds it
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def clean_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove temporary files of atomic writes that a killed process left under ``folder`` (recursively).

    Only files named like :func:`atomic_open`'s (``.NAME.XXXXXXXX.tmp``), not locked by a live writer
    and not modified in the last seconds are removed. Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed, now = [], time.time()
    for path in folder.rglob(".*.tmp"):
        if path.is_file() and TEMP_FILE_PATTERN.match(path.name) and _is_stale(path, now):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    if removed:
        logger.info("Removed %d temporary file(s) left under %s by an interrupted run (e.g. %s).", len(removed),
                    folder, removed[0].name)
    return removed


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
