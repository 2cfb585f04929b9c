"""Weighted human disagreement rate (WHDR) of a depth map against ordinal point-pair labels.

The labels follow "Depth in the Wild" (Chen et al., 2016): a pair of image points, each on a clearly
separate surface, and which of the two a person judged closer to the camera. "Intrinsic Images in the
Wild" (Bell et al., 2014) adds "about equal" labels and a tolerance ``delta`` under which a prediction
counts as "equal"; both kinds are supported here.

For a pair with label ``closer`` (1: point 1 is closer, 2: point 2 is closer, 0: about equal) and
predicted depths ``d1``, ``d2`` (larger = farther), the predicted relation is

* "point 1 closer" when ``d2 > (1 + delta) * d1`` (``d2 > d1`` when ``delta = 0``),
* "point 2 closer" when ``d1 > (1 + delta) * d2``,
* "equal" otherwise, which with ``delta = 0`` is an exact tie.

WHDR is the weighted fraction of pairs whose predicted relation disagrees with the label:
``sum(w_i * e_i) / sum(w_i)``, where ``e_i`` is 0 on agreement and 1 on disagreement, except that a
predicted "equal" against a "closer" label costs ``tie_penalty`` (default 0.5: the expected error of
breaking the tie by a coin flip, so a constant map scores 0.5 like a random guess instead of 1.0;
pass 1.0 for the strict rule of Intrinsic Images in the Wild). With ``delta > 0`` the depths must be
positive (the ratio test is meaningless otherwise).

Labels can be written point by point, or made from an annotation of groups (see
:func:`pairs_from_groups`): points on surfaces, grouped, and a list of "group A is closer than group B"
judgements; every point of A paired with every point of B is then a labelled pair.

Only numpy is needed. The label file is a CSV with the columns ``image,x1,y1,x2,y2,closer`` and an
optional ``weight`` (default 1); ``x``/``y`` are pixel columns/rows in the labelled image, with the
origin at the top-left pixel's centre.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "whdr_data"  # shipped photographs and labels (package data)
DEFAULT_LABELS = DATA_DIR / "pairs.csv"
DEFAULT_IMAGES = DATA_DIR / "images"
METHODS = ("model", "prior", "ramp", "constant")  # the rows of a report

LABEL_COLUMNS = ("image", "x1", "y1", "x2", "y2", "closer")


@dataclass(frozen=True)
class PairLabels:
    """Ordinal labels of one image: point coordinates ``[N, 2]`` each (x, y), ``closer`` ``[N]`` in {0, 1, 2},
    ``weight`` ``[N]``."""

    image: str
    point1: np.ndarray
    point2: np.ndarray
    closer: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.closer)


def read_labels(path: str | os.PathLike) -> dict[str, PairLabels]:
    """Read a label CSV into ``{image: PairLabels}`` (images in order of first appearance)."""
    rows: dict[str, list[tuple]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; a label file has {', '.join(LABEL_COLUMNS)}"
                             " and optionally weight")
        for line, row in enumerate(reader, start=2):
            try:
                x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
                closer = int(row["closer"])
                weight = float(row.get("weight") or 1.0)
            except ValueError as e:
                raise ValueError(f"{path}, line {line}: {e}") from e
            if closer not in (0, 1, 2):
                raise ValueError(f"{path}, line {line}: closer must be 0 (equal), 1 or 2, got {closer}")
            if not weight >= 0:
                raise ValueError(f"{path}, line {line}: weight must be >= 0, got {weight}")
            rows.setdefault(row["image"], []).append((x1, y1, x2, y2, closer, weight))
    if not rows:
        raise ValueError(f"{path}: no labelled pairs")
    labels = {}
    for image, values in rows.items():
        a = np.asarray(values, dtype=np.float64)  # [N, 6]
        labels[image] = PairLabels(image, a[:, 0:2], a[:, 2:4], a[:, 4].astype(np.int64), a[:, 5])
    return labels


def predicted_relation(d1: np.ndarray, d2: np.ndarray, delta: float = 0.0) -> np.ndarray:
    """Relation of depth pairs: 1 (point 1 closer), 2 (point 2 closer) or 0 (equal within ``delta``)."""
    d1, d2 = np.asarray(d1, dtype=np.float64), np.asarray(d2, dtype=np.float64)
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    if not (np.isfinite(d1).all() and np.isfinite(d2).all()):
        raise ValueError("depths must be finite")
    if delta > 0 and ((d1 <= 0).any() or (d2 <= 0).any()):
        raise ValueError("delta > 0 compares depth ratios: the depths must be positive")
    relation = np.zeros(np.broadcast(d1, d2).shape, dtype=np.int64)
    relation[d2 > (1.0 + delta) * d1] = 1
    relation[d1 > (1.0 + delta) * d2] = 2
    return relation


def disagreement(d1: np.ndarray, d2: np.ndarray, closer: np.ndarray, delta: float = 0.0,
                 tie_penalty: float = 0.5) -> np.ndarray:
    """Per-pair error in [0, 1]: 0 agreement, 1 disagreement, ``tie_penalty`` for a predicted "equal"
    against a "closer" label."""
    if not 0.0 <= tie_penalty <= 1.0:
        raise ValueError(f"tie_penalty must be in [0, 1], got {tie_penalty}")
    closer = np.asarray(closer)
    relation = predicted_relation(d1, d2, delta)
    error = (relation != closer).astype(np.float64)
    error[(relation == 0) & (closer != 0)] = tie_penalty
    return error


def whdr(d1: np.ndarray, d2: np.ndarray, closer: np.ndarray, weight: np.ndarray | None = None,
         delta: float = 0.0, tie_penalty: float = 0.5) -> float:
    """Weighted human disagreement rate of predicted depths ``d1``, ``d2`` ``[N]`` (larger = farther)."""
    error = disagreement(d1, d2, closer, delta, tie_penalty)
    weight = np.ones_like(error) if weight is None else np.asarray(weight, dtype=np.float64)
    if weight.shape != error.shape:
        raise ValueError(f"weight has shape {weight.shape}, the pairs {error.shape}")
    total = weight.sum()
    if not total > 0:
        raise ValueError("the pair weights sum to zero")
    return float((weight * error).sum() / total)


def sample_points(depth: np.ndarray, points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Depth at ``points`` ``[N, 2]`` (x, y in the labelled image of ``image_size`` = (width, height)).

    ``depth`` ``[h, w]`` may have another resolution than the image (the same aspect, as a prediction at
    a processing resolution): the points are mapped by pixel centres and read at the nearest pixel.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [h, w], got shape {depth.shape}")
    width, height = image_size
    points = np.asarray(points, dtype=np.float64)
    if ((points < -0.5) | (points > np.array([width, height]) - 0.5)).any():
        raise ValueError(f"points outside the {width}x{height} image")
    h, w = depth.shape
    cols = np.clip(np.floor((points[:, 0] + 0.5) * w / width), 0, w - 1).astype(np.int64)
    rows = np.clip(np.floor((points[:, 1] + 0.5) * h / height), 0, h - 1).astype(np.int64)
    return depth[rows, cols]


def image_whdr(depth: np.ndarray, labels: PairLabels, image_size: tuple[int, int], delta: float = 0.0,
               tie_penalty: float = 0.5) -> tuple[float, float, int]:
    """``(weighted errors, total weight, pairs)`` of one depth map ``[h, w]`` on one image's labels."""
    d1 = sample_points(depth, labels.point1, image_size)
    d2 = sample_points(depth, labels.point2, image_size)
    error = disagreement(d1, d2, labels.closer, delta, tie_penalty)
    return float((labels.weight * error).sum()), float(labels.weight.sum()), len(labels)


def vertical_ramp(height: int, width: int) -> np.ndarray:
    """Baseline depth ``[H, W]``: 1 (far) on the top row down to 0 (near) on the bottom row, like a floor."""
    return np.repeat(np.linspace(1.0, 0.0, height)[:, None], width, axis=1)


def constant_depth(height: int, width: int) -> np.ndarray:
    """Baseline depth ``[H, W]``: one value everywhere (every pair is a tie)."""
    return np.ones((height, width))


def _check_acyclic(image: str, names: list[str], closer_than: list[tuple[str, str]]) -> None:
    """Raise if the "closer than" judgements contradict each other (A before B before ... before A)."""
    after = {n: [far for near, far in closer_than if near == n] for n in names}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in after[node]:
            if state.get(nxt) == 1:
                raise ValueError(f"{image}: contradictory judgements, {' < '.join([*path, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for n in names:
        if n not in state:
            visit(n, [])


def pairs_from_groups(groups: dict[str, list], closer_than: list, max_pairs: int | None = None, seed: int = 0,
                      image: str = "image") -> list[tuple[float, float, float, float, int]]:
    """Labelled pairs ``(x1, y1, x2, y2, closer)`` from grouped points and group-level judgements.

    ``groups``: ``{name: [[x, y], ...]}``; ``closer_than``: ``[[near, far], ...]``, each meaning that every
    point of ``near`` is closer than every point of ``far``. All such pairs are candidates; when there are
    more than ``max_pairs``, they are taken round-robin over the judgements (each judgement's pairs in a
    seeded random order) so that every judgement is represented. Each pair's two points are put in a
    seeded random order, so ``closer`` is 1 or 2 about equally often.
    """
    names = list(groups)
    seen: dict[tuple, str] = {}
    for name, points in groups.items():
        for point in points:
            if len(point) != 2:
                raise ValueError(f"{image}: group {name!r}: a point is [x, y], got {point!r}")
            key = tuple(float(v) for v in point)
            if key in seen:
                raise ValueError(f"{image}: point {list(point)} is in groups {seen[key]!r} and {name!r}")
            seen[key] = name
    for judgement in closer_than:
        if len(judgement) != 2 or any(g not in groups for g in judgement) or judgement[0] == judgement[1]:
            raise ValueError(f"{image}: a judgement names two different groups of {names}, got {judgement!r}")
    _check_acyclic(image, names, [tuple(j) for j in closer_than])
    rng = np.random.default_rng(seed)
    queues = []
    for near, far in closer_than:
        combos = [(tuple(p), tuple(q)) for p in groups[near] for q in groups[far]]
        queues.append([combos[i] for i in rng.permutation(len(combos))])
    chosen: list[tuple[tuple, tuple]] = []
    limit = sum(len(q) for q in queues) if max_pairs is None else max_pairs
    for k in range(max((len(q) for q in queues), default=0)):
        for queue in queues:
            if k < len(queue) and len(chosen) < limit:
                chosen.append(queue[k])
    swap = rng.random(len(chosen)) < 0.5
    return [(*q, *p, 2) if s else (*p, *q, 1) for (p, q), s in zip(chosen, swap)]


def labels_from_annotations(path: str | os.PathLike, max_pairs_per_image: int | None = 30) -> str:
    """The label CSV text made from an annotation JSON ``{image: {"groups": ..., "closer_than": ...}}``.

    The seed of each image is the CRC-32 of its name, so the result is reproducible.
    """
    with open(path) as f:
        annotations = json.load(f)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LABEL_COLUMNS)
    for image, entry in annotations.items():
        rows = pairs_from_groups(entry["groups"], entry["closer_than"], max_pairs_per_image,
                                 seed=zlib.crc32(image.encode()), image=image)
        writer.writerows([(image, *(int(v) if float(v).is_integer() else v for v in row[:4]), row[4])
                          for row in rows])
    return out.getvalue()


def evaluate_whdr(labels: dict, images_dir: Path, methods: list[str], pipe=None,
                  processing_resolution: int | None = None, tie_penalty: float = 0.5) -> dict:
    """WHDR of each method over the labelled images.

    Returns ``{"whdr": {method: value}, "whdr_closer_not_lower": {method: value}, "per_image": ...}``;
    the second is the WHDR over the pairs whose closer point is not lower in the image than the
    other (those a "lower is closer" rule such as the ramp cannot get right). ``model`` and ``prior``
    need ``pipe`` (an :class:`~apdepth.pipeline.ApDepthPipeline`); they are read at the processing
    resolution, the labelled points mapped to it. The prior's disparity is negated (only the order
    matters).
    """
    from ..io import read_image

    if {"model", "prior"} & set(methods) and pipe is None:
        raise ValueError("the model and prior rows need a pipeline")
    errors: dict[str, list] = {m: [] for m in methods}  # method -> per-image error arrays [N]
    weights, not_lower, per_image = [], [], {}
    for name, pairs in labels.items():
        image = read_image(Path(images_dir) / name).convert("RGB")
        size = image.size  # (W, H)
        maps = {}
        if pipe is not None and {"model", "prior"} & set(methods):
            out = pipe(image, processing_resolution=processing_resolution, match_input_resolution=False,
                       output_type="np", output_prior="prior" in methods)
            maps["model"] = out.depth[0]  # [h, w], near small
            if out.prior is not None:
                maps["prior"] = -out.prior[0]  # disparity [h, w] -> far large
        maps["ramp"] = vertical_ramp(size[1], size[0])
        maps["constant"] = constant_depth(size[1], size[0])
        y_near = np.where(pairs.closer == 2, pairs.point2[:, 1], pairs.point1[:, 1])
        y_far = np.where(pairs.closer == 2, pairs.point1[:, 1], pairs.point2[:, 1])
        weights.append(pairs.weight)
        not_lower.append((pairs.closer != 0) & (y_near <= y_far))
        row = {"pairs": len(pairs)}
        for method in methods:
            d1 = sample_points(maps[method], pairs.point1, size)
            d2 = sample_points(maps[method], pairs.point2, size)
            errors[method].append(disagreement(d1, d2, pairs.closer, tie_penalty=tie_penalty))
            row[method] = float((pairs.weight * errors[method][-1]).sum() / pairs.weight.sum())
        per_image[name] = row
        logger.debug("%s: %s", name, row)
    weight, mask = np.concatenate(weights), np.concatenate(not_lower)

    def rate(error: np.ndarray, keep: np.ndarray) -> float | None:
        return float((weight * error)[keep].sum() / weight[keep].sum()) if weight[keep].sum() > 0 else None

    everything = np.ones_like(mask)
    return {
        "whdr": {m: rate(np.concatenate(e), everything) for m, e in errors.items()},
        "pairs_closer_not_lower": int(mask.sum()),
        "whdr_closer_not_lower": {m: rate(np.concatenate(e), mask) for m, e in errors.items()},
        "per_image": per_image,
    }
