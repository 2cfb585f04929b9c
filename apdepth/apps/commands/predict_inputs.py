"""`apdepth predict`'s inputs and outputs: expanding files, folders and list files into work items, and
keeping them apart from the outputs (an output folder is never read back as input, an input never
overwritten) and checking the outputs can be written before any work."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .common import UsageError

logger = logging.getLogger(__name__)

LIST_EXTENSIONS = (".txt", ".lst", ".list")
# Written into OUTDIR: a folder holding it is never read back as input (by any later run, whatever its -o).
OUTPUT_MARKER = ".apdepth-output"


@dataclass
class WorkItem:
    source: Path
    stem: str  # output path without suffix, relative to OUTDIR


@dataclass
class Report:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_processed: int = 0  # left when interrupted

    def fail(self, name: str, reason: str) -> None:
        self.failed.append((name, reason))
        logger.error("%s", reason)


def is_output_folder(folder: Path, outdir: Path | None) -> bool:
    """This run's OUTDIR, or a folder an earlier apdepth run wrote (it holds the marker)."""
    return (outdir is not None and _same(folder, outdir)) or (folder / OUTPUT_MARKER).is_file()


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _within_output(path: Path, outdir: Path | None) -> bool:
    """Whether ``path`` lies in OUTDIR or in a folder an apdepth run marked as its output."""
    resolved = path.resolve()
    if outdir is not None and resolved.is_relative_to(outdir.resolve()):
        return True
    return any((parent / OUTPUT_MARKER).is_file() for parent in (resolved, *resolved.parents))


def scan_folder(root: Path, outdir: Path | None, ours: tuple[str, ...] = ()) -> tuple[list[Path], list[Path]]:
    """Image files under ``root`` (sorted) and the output folders left out.

    Sub-folders that are apdepth output folders (OUTDIR, or marked by an earlier run) are skipped whole;
    when ``root`` itself is one (``apdepth predict photos -o photos``), its originals are read and the
    files apdepth wrote (``*_depth.png``, ``*_depth_color.png``, ...) are not."""
    from ...io import IMAGE_EXTENSIONS

    ours = tuple(o.lower() for o in ours)
    files, left_out = [], []
    inside = {root: _within_output(root, outdir)}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            sub = here / d
            if is_output_folder(sub, outdir):
                left_out.append(sub)
            else:
                keep.append(d)
                inside[sub] = inside[here]
        dirnames[:] = keep
        for name in filenames:
            if not name.lower().endswith(IMAGE_EXTENSIONS) or name.startswith("."):
                continue
            if inside[here] and ours and name.lower().endswith(ours):
                continue
            files.append(here / name)
    return sorted(files), left_out


def read_list_file(path: Path) -> list[Path]:
    """Paths in a list file: one a line, trimmed, relative to the list's folder; blank lines and ``#``
    comments skipped. A line that is not an existing path but whose first word is (a data set split list
    with several columns) names that first word."""
    base = path.parent
    entries = []
    for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = Path(line).expanduser()
        entry = entry if entry.is_absolute() else base / entry
        if not entry.exists() and len(line.split()) > 1:
            first = Path(line.split()[0]).expanduser()
            first = first if first.is_absolute() else base / first
            if first.is_file():
                entry = first
        entries.append(entry)
    return entries


def collect_inputs(inputs: list[str], report: Report, outdir: Path | None = None,
                   ours: tuple[str, ...] = ()) -> list[WorkItem]:
    """Expand files, folders and list files into work items with unique output stems.

    Folders never yield apdepth's own outputs (see :func:`scan_folder`; ``ours``: the name endings of the
    images apdepth writes); a file named explicitly (argument or list entry) that is one of them is a
    :class:`UsageError`."""
    ours = tuple(o.lower() for o in ours)
    found: list[tuple[Path, Path]] = []  # (source, path relative to the output folder)
    clashes: list[Path] = []
    for raw in inputs:
        pairs, explicit = _expand(Path(raw), report, outdir, ours)
        found += pairs
        clashes += [source for source, _ in pairs if explicit and _is_our_output(source, outdir, ours)]
    if clashes:
        shown = ", ".join(map(str, clashes[:3])) + (f" and {len(clashes) - 3} more" if len(clashes) > 3 else "")
        raise UsageError(f"input {shown}: an output of apdepth (in {outdir} or an earlier output folder); "
                         "apdepth does not read its own outputs back as inputs: remove it from the inputs")
    return _with_unique_stems(found, report)


def _expand(path: Path, report: Report, outdir: Path | None,
            ours: tuple[str, ...]) -> tuple[list[tuple[Path, Path]], bool]:
    """One INPUT -> (source, path relative to the output folder) pairs: a folder's images (its output folders
    left out), a list file's entries, or the file itself; a missing path is reported. And whether the files
    were named explicitly (not found by a folder scan)."""
    if path.is_dir():
        files, left_out = scan_folder(path, outdir, ours)
        for folder in left_out:
            logger.info("%s: left out (an apdepth output folder)", folder)
        if not files:
            logger.warning("%s: no images (%s) in this folder", path, ", ".join(_extensions()))
        return [(p, p.relative_to(path)) for p in files], False
    if path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
        pairs = []
        for entry in read_list_file(path):
            try:
                rel = entry.relative_to(path.parent)
            except ValueError:
                rel = Path(entry.name)
            pairs.append((entry, rel))
        return pairs, True
    if path.exists():
        return [(path, Path(path.name))], True
    report.fail(str(path), f"{path}: no such file or folder")
    return [], True


def _is_our_output(source: Path, outdir: Path | None, ours: tuple[str, ...]) -> bool:
    """A file that apdepth wrote, in its output folder or an earlier one."""
    return bool(ours) and source.is_file() and source.name.lower().endswith(ours) and _within_output(source, outdir)


def _with_unique_stems(found: list[tuple[Path, Path]], report: Report) -> list[WorkItem]:
    """Work items whose output stems differ: ``a.jpg`` and ``a.png`` in one folder are ``a`` and ``a_png``; a
    third clash is reported and left out."""
    items: list[WorkItem] = []
    used: set[str] = set()
    for source, rel in found:
        stem = str(rel.with_suffix(""))
        if stem in used:  # a.jpg and a.png in one folder: keep both, name the second by its extension
            stem = f"{stem}_{rel.suffix.lstrip('.').lower()}"
        if stem in used:
            report.fail(str(source), f"{source}: another input already writes {stem}*")
            continue
        used.add(stem)
        items.append(WorkItem(source, stem))
    return items


def _extensions() -> tuple[str, ...]:
    from ...io import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


def check_outputs(outdir: Path, todo: list) -> None:
    """Before the model loads: OUTDIR and every folder the outputs go to can be written, and no output
    path is taken by a folder."""
    from .common import check_output_folder

    folders = set()
    for _, paths in todo:
        for path in paths.values():
            if path.is_dir():
                raise UsageError(f"cannot write {path}: a folder of that name is in the way")
            folders.add(path.parent)
    check_output_folder(outdir, folders - {outdir})
    marker = outdir / OUTPUT_MARKER
    if not marker.exists():
        marker.write_text("apdepth output folder: apdepth never reads the images in a folder holding this file "
                          "as inputs.\n")
