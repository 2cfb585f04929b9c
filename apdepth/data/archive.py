"""Read data set files by relative path from an extracted folder or a ``.tar`` / ``.tar.gz`` archive.

The Marigold-format archives store members as ``./test/kitchen_0001/rgb_0001.png``; split lists name
them ``test/kitchen_0001/rgb_0001.png``. :class:`Archive` normalises both to the second form.

Worker processes: an :class:`Archive` holds only its path and, once built, its member index; file
handles are opened lazily per process (a handle inherited through ``fork`` is never reused), so it
can be handed to ``torch.utils.data.DataLoader`` workers with any start method.
"""

from __future__ import annotations

import logging
import os
import posixpath
import tarfile
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def normalize_member(name: str) -> str:
    """``./a//b/../c.png`` -> ``a/c.png``; rejects absolute paths and paths leaving the root."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"Archive member names must be non-empty strings, got {name!r}")
    name = name.strip().replace("\\", "/")
    if name.startswith("/"):
        raise ValueError(f"Archive member {name!r} is an absolute path; split entries must be relative")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../"):
        raise ValueError(f"Archive member {name!r} points outside the data root")
    return norm


def is_tar_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(TAR_SUFFIXES)


class Archive:
    """Files of a data set, by relative path, from a folder or a tar archive.

    Args:
        path: an extracted folder, or a ``.tar`` / ``.tar.gz`` / ``.tgz`` file.

    Plain ``.tar`` members are read by seeking straight to their bytes. Compressed archives work
    but every read may decompress from the start: extract them, or convert to plain ``.tar``, for
    anything larger than a test fixture.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            self.kind = "folder"
        elif self.path.is_file():
            if not (is_tar_path(self.path) or tarfile.is_tarfile(self.path)):
                raise ValueError(f"{self.path}: not a folder or a tar archive ({', '.join(TAR_SUFFIXES)})")
            self.kind = "tar"
            self.compressed = not _is_plain_tar(self.path)
            if self.compressed:
                logger.warning("%s is compressed: random access is slow; extract it or use a plain .tar.",
                               self.path)
        else:
            raise FileNotFoundError(f"Data root {self.path} does not exist (expected a folder or a .tar file)")
        self._index: dict[str, tuple[int, int]] | None = None  # member -> (data offset, size), plain tar
        self._pid: int | None = None
        self._handle = None  # per-process file object (plain tar) or TarFile (compressed)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Archive({str(self.path)!r})"

    # ------------------------------------------------------------------ pickling (DataLoader workers)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_handle=None, _pid=None, _lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ listing

    def _build_index(self) -> dict[str, tuple[int, int]]:
        index: dict[str, tuple[int, int]] = {}
        with tarfile.open(self.path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                try:
                    name = normalize_member(member.name)
                except ValueError:
                    logger.warning("%s: ignoring unsafe member name %r", self.path, member.name)
                    continue
                # Sparse members cannot be read by a plain seek: mark them for the tarfile path.
                offset = -1 if (self.compressed or member.issparse()) else member.offset_data
                index[name] = (offset, member.size)
        return index

    @property
    def index(self) -> dict[str, tuple[int, int]]:
        if self.kind != "tar":
            raise AttributeError("only tar archives have a member index")
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def names(self) -> list[str]:
        """All regular files, as normalised relative paths (sorted)."""
        if self.kind == "tar":
            return sorted(self.index)
        return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())

    def exists(self, rel: str) -> bool:
        name = normalize_member(rel)
        if self.kind == "tar":
            return name in self.index
        return (self.path / name).is_file()

    __contains__ = exists

    # ------------------------------------------------------------------ reading

    def _missing(self, rel: str) -> FileNotFoundError:
        return FileNotFoundError(f"{rel!r} is not in {self.kind} {self.path}")

    def read_bytes(self, rel: str) -> bytes:
        """The bytes of member ``rel``; ``FileNotFoundError`` naming archive and member if absent."""
        name = normalize_member(rel)
        if self.kind == "folder":
            try:
                return (self.path / name).read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise self._missing(rel) from None
        entry = self.index.get(name)
        if entry is None:
            raise self._missing(rel)
        offset, size = entry
        with self._lock:
            handle = self._open()
            if offset >= 0:
                handle.seek(offset)
                data = handle.read(size)
            elif isinstance(handle, tarfile.TarFile):
                data = self._read_with_tarfile(handle, name)
            else:  # a sparse member of a plain tar (rare): let tarfile reassemble it
                with tarfile.open(self.path) as tar:
                    data = self._read_with_tarfile(tar, name)
        if len(data) != size:
            raise OSError(f"{self.path}: member {rel!r} is truncated ({len(data)} of {size} bytes)")
        return data

    def _open(self):
        """The handle of this process (reopened after fork)."""
        pid = os.getpid()
        if self._handle is None or self._pid != pid:
            self._handle = tarfile.open(self.path) if self.compressed else open(self.path, "rb")  # noqa: SIM115
            self._pid = pid
        return self._handle

    def _read_with_tarfile(self, tar: tarfile.TarFile, name: str) -> bytes:
        for candidate in (name, "./" + name):
            try:
                member = tar.getmember(candidate)
            except KeyError:
                continue
            f = tar.extractfile(member)
            if f is not None:
                return f.read()
        raise self._missing(name)

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle, self._pid = None, None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _is_plain_tar(path: Path) -> bool:
    with open(path, "rb") as f:
        magic = f.read(6)
    return not (magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00")
