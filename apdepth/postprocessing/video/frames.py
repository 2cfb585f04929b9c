"""Video frames in and out: video files through PyAV (its wheels bundle FFmpeg), or folders of images.

Install with ``pip install apdepth[video]``. Frames are uint8 ``[H, W, 3]`` RGB arrays.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from ...io import IMAGE_EXTENSIONS, atomic_open, read_image

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".gif", ".mpg", ".mpeg")
DEFAULT_FPS = 24.0


def import_av():
    try:
        import av
    except ImportError:
        raise ImportError("video files need PyAV: pip install 'apdepth[video]'") from None
    return av


class FrameReader:
    """Frames of a video file or of a folder of images (sorted by name).

    Args:
        source: a video file or a folder of images.
        stride: keep every ``stride``-th frame.
        max_frames: stop after this many kept frames (``None``: all).
        fps: frame rate for a folder of images (a video's own rate is used for files).
    """

    def __init__(self, source: str | os.PathLike, *, stride: int = 1, max_frames: int | None = None,
                 fps: float | None = None):
        self.source = Path(source)
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride!r}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames!r}")
        self.stride, self.max_frames = stride, max_frames
        self.files: list[Path] | None = None
        if self.source.is_dir():
            self.files = sorted(p for p in self.source.iterdir()
                                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not self.files:
                raise ValueError(f"{self.source}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            self.source_fps = float(fps or DEFAULT_FPS)
        elif self.source.is_file():
            av = import_av()
            try:
                with av.open(str(self.source)) as container:
                    if not container.streams.video:
                        raise ValueError(f"{self.source}: no video stream")
                    rate = container.streams.video[0].average_rate
                    self.source_fps = float(fps or (rate if rate else DEFAULT_FPS))
            except av.error.FFmpegError as e:
                raise ValueError(f"{self.source}: not a readable video ({e})") from e
        else:
            raise FileNotFoundError(f"{source}: no such video file or frame folder")

    @property
    def fps(self) -> float:
        """Frame rate of the kept frames."""
        return self.source_fps / self.stride

    def _kept(self, items):
        """(source index, item) for every ``stride``-th item, at most ``max_frames`` of them."""
        for n, item in enumerate(items):
            if n % self.stride:
                continue
            if self.max_frames is not None and n // self.stride >= self.max_frames:
                return
            yield n, item

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(name, frame)`` per kept frame: the image file's stem, or the zero-padded source frame index."""
        if self.files is not None:
            for _, path in self._kept(self.files):
                yield path.stem, np.asarray(read_image(path).convert("RGB"))
            return
        av = import_av()
        with av.open(str(self.source)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for n, frame in self._kept(container.decode(stream)):
                    yield f"{n:06d}", frame.to_ndarray(format="rgb24")
            except av.error.FFmpegError as e:
                raise ValueError(f"{self.source}: decoding failed ({e})") from e


class VideoWriter:
    """Write RGB frames to an H.264 MP4 atomically (the file appears only when closed without error).

    Frames of odd size are padded by one pixel (``yuv420p`` needs even sizes). Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 18):
        self.path, self.fps, self.crf = Path(path), fps, crf
        self._av = import_av()
        self._ctx = self._file = self._container = self._stream = None

    def __enter__(self) -> VideoWriter:
        self._ctx = atomic_open(self.path, "wb")
        self._file = self._ctx.__enter__()
        self._container = self._av.open(self._file, mode="w", format="mp4")
        return self

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
        H, W = frame.shape[:2]
        if self._stream is None:
            rate = Fraction(self.fps).limit_denominator(1001)
            self._stream = self._container.add_stream("libx264", rate=rate)
            self._stream.width, self._stream.height = W + W % 2, H + H % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.crf)}
        if (H + H % 2, W + W % 2) != (self._stream.height, self._stream.width):
            raise ValueError(f"{self.path}: frame size {W}x{H} differs from the first frame's")
        if H % 2 or W % 2:
            frame = np.pad(frame, ((0, H % 2), (0, W % 2), (0, 0)), mode="edge")
        for packet in self._stream.encode(self._av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                if self._stream is None:
                    raise ValueError(f"{self.path}: no frames to write")
                for packet in self._stream.encode():  # flush the encoder
                    self._container.mux(packet)
                self._container.close()
            else:
                with contextlib.suppress(Exception):  # keep the original error
                    self._container.close()
        except BaseException as e:
            self._ctx.__exit__(type(e), e, e.__traceback__)  # removes the temporary file
            raise
        self._ctx.__exit__(exc_type, exc, tb)  # moves it into place, or removes it after an error
        return False
