"""WHDR on labelled point pairs: the metric against hand-computed cases, the shipped labels and photographs,
and `apdepth evaluate-whdr` end to end on a tiny saved pipeline."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from apdepth.apps.cli import main
from apdepth.evaluation.whdr import (
    DATA_DIR,
    DEFAULT_IMAGES,
    DEFAULT_LABELS,
    constant_depth,
    disagreement,
    image_whdr,
    labels_from_annotations,
    pairs_from_groups,
    predicted_relation,
    read_labels,
    sample_points,
    vertical_ramp,
    whdr,
)

# ---------------------------------------------------------------- the metric


def test_predicted_relation_by_hand():
    d1 = np.array([1.0, 2.0, 1.0, 1.0, 1.0])
    d2 = np.array([2.0, 1.0, 1.0, 1.05, 0.95])
    assert predicted_relation(d1, d2).tolist() == [1, 2, 0, 1, 2]
    # delta = 0.1: 1.05 and 0.95 are within 10 % of 1 -> equal; 2 vs 1 is not
    assert predicted_relation(d1, d2, delta=0.1).tolist() == [1, 2, 0, 0, 0]


def test_whdr_by_hand():
    d1 = np.array([1.0, 3.0, 2.0, 5.0])
    d2 = np.array([2.0, 1.0, 2.0, 4.0])
    closer = np.array([1, 1, 2, 2])
    # predicted relations 1, 2, 0 (tie), 2 -> errors 0, 1, tie, 0
    assert disagreement(d1, d2, closer).tolist() == [0.0, 1.0, 0.5, 0.0]
    assert whdr(d1, d2, closer) == pytest.approx(1.5 / 4)
    assert whdr(d1, d2, closer, weight=np.array([1.0, 2.0, 1.0, 1.0])) == pytest.approx(2.5 / 5)
    assert whdr(d1, d2, closer, weight=np.array([1.0, 2.0, 1.0, 1.0]), tie_penalty=1.0) == pytest.approx(3.0 / 5)
    assert whdr(d1, d2, closer, tie_penalty=0.0) == pytest.approx(1.0 / 4)


def test_whdr_equal_labels_and_delta():
    d1 = np.array([1.0, 1.0, 1.0])
    d2 = np.array([1.05, 1.5, 0.5])
    closer = np.array([0, 0, 1])  # "about equal", "about equal", point 1 closer
    # delta 0: every pair is ordered -> both equal labels disagree, the last pair (2 closer) disagrees too
    assert disagreement(d1, d2, closer).tolist() == [1.0, 1.0, 1.0]
    # delta 0.1: the first pair is equal (agrees); 1.5 and 0.5 are outside 10 %
    assert disagreement(d1, d2, closer, delta=0.1).tolist() == [0.0, 1.0, 1.0]
    assert whdr(d1, d2, closer, delta=0.6) == pytest.approx(1.0 / 3)  # only the last disagrees (0.5 < 1/1.6)


def test_whdr_errors():
    with pytest.raises(ValueError, match="positive"):
        predicted_relation(np.array([-1.0]), np.array([1.0]), delta=0.1)
    with pytest.raises(ValueError, match="delta"):
        predicted_relation(np.array([1.0]), np.array([2.0]), delta=-0.1)
    with pytest.raises(ValueError, match="finite"):
        predicted_relation(np.array([np.nan]), np.array([2.0]))
    with pytest.raises(ValueError, match="tie_penalty"):
        disagreement(np.array([1.0]), np.array([2.0]), np.array([1]), tie_penalty=2.0)
    with pytest.raises(ValueError, match="sum to zero"):
        whdr(np.array([1.0]), np.array([2.0]), np.array([1]), weight=np.array([0.0]))


def test_sample_points_maps_pixel_centres():
    depth = np.array([[0.0, 1.0], [2.0, 3.0]])  # a 2x2 prediction of a 4x4 image
    points = np.array([[0, 0], [3, 3], [1.4, 2.6], [2, 1]])
    # x 1.4 -> column floor(1.9 / 2) = 0; y 2.6 -> row floor(3.1 / 2) = 1; (2, 1) -> column 1, row 0
    assert sample_points(depth, points, (4, 4)).tolist() == [0.0, 3.0, 2.0, 1.0]
    assert sample_points(np.arange(12.0).reshape(3, 4), np.array([[3, 2]]), (4, 3)).tolist() == [11.0]
    with pytest.raises(ValueError, match="outside"):
        sample_points(depth, np.array([[4, 0]]), (4, 4))


def test_baseline_maps():
    ramp = vertical_ramp(3, 2)
    assert ramp.tolist() == [[1.0, 1.0], [0.5, 0.5], [0.0, 0.0]]
    assert constant_depth(2, 3).tolist() == [[1.0] * 3] * 2


def test_read_labels(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("image,x1,y1,x2,y2,closer,weight\na.jpg,0,0,1,1,2,0.5\nb.jpg,1,2,3,4,1,\na.jpg,5,5,6,6,0,2\n")
    labels = read_labels(path)
    assert list(labels) == ["a.jpg", "b.jpg"]
    assert labels["a.jpg"].closer.tolist() == [2, 0]
    assert labels["a.jpg"].weight.tolist() == [0.5, 2.0]
    assert labels["b.jpg"].point2.tolist() == [[3.0, 4.0]] and labels["b.jpg"].weight.tolist() == [1.0]
    path.write_text("image,x1,y1,x2,y2,closer\na.jpg,0,0,1,1,3\n")
    with pytest.raises(ValueError, match="line 2: closer"):
        read_labels(path)
    path.write_text("image,x1,y1,x2,closer\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_labels(path)


def test_image_whdr_ramp_by_hand():
    labels = _labels([(0, 0, 0, 3, 2), (0, 3, 0, 0, 2), (1, 1, 0, 1, 1)])  # 4x4 image
    # ramp: lower rows are nearer -> pair 1 right, pair 2 wrong, pair 3 a tie (same row)
    errors, weight, n = image_whdr(vertical_ramp(4, 4), labels, (4, 4))
    assert (errors, weight, n) == (1.5, 3.0, 3)


def _labels(rows):
    from apdepth.evaluation.whdr import PairLabels

    a = np.asarray(rows, dtype=np.float64)
    return PairLabels("x", a[:, 0:2], a[:, 2:4], a[:, 4].astype(np.int64), np.ones(len(a)))


# ---------------------------------------------------------------- making pairs from groups


def test_pairs_from_groups():
    groups = {"near": [[0, 0]], "mid": [[1, 1], [2, 2]], "far": [[3, 3]]}
    rows = pairs_from_groups(groups, [["near", "mid"], ["mid", "far"]], seed=1)
    assert len(rows) == 4
    rank = {(0, 0): 0, (1, 1): 1, (2, 2): 1, (3, 3): 2}
    for x1, y1, x2, y2, closer in rows:
        near, far = ((x1, y1), (x2, y2)) if closer == 1 else ((x2, y2), (x1, y1))
        assert rank[near] < rank[far]
    # capped: round-robin keeps both judgements
    capped = pairs_from_groups(groups, [["near", "mid"], ["mid", "far"]], max_pairs=2, seed=1)
    assert len(capped) == 2
    assert {frozenset({rank[r[0:2]], rank[r[2:4]]}) for r in capped} == {frozenset({0, 1}), frozenset({1, 2})}
    with pytest.raises(ValueError, match="contradictory"):
        pairs_from_groups(groups, [["near", "mid"], ["mid", "far"], ["far", "near"]])
    with pytest.raises(ValueError, match="in groups"):
        pairs_from_groups({"a": [[0, 0]], "b": [[0, 0]]}, [["a", "b"]])
    with pytest.raises(ValueError, match="two different groups"):
        pairs_from_groups(groups, [["near", "sky"]])


# ---------------------------------------------------------------- the shipped labels


@pytest.fixture(scope="module")
def shipped():
    return read_labels(DEFAULT_LABELS)


def test_shipped_labels_are_the_annotations():
    """pairs.csv is exactly what annotations.json makes (no hand edits that the record lacks)."""
    assert DEFAULT_LABELS.read_text() == labels_from_annotations(DATA_DIR / "annotations.json")


def test_shipped_labels_are_valid(shipped):
    assert len(shipped) >= 20
    assert sum(len(p) for p in shipped.values()) >= 400
    files = sorted(p.name for p in DEFAULT_IMAGES.iterdir())
    assert files == sorted(shipped), "every shipped photograph is labelled and every label has its photograph"
    sources = (DATA_DIR / "SOURCES.md").read_text()
    for name, pairs in shipped.items():
        assert "motorcycle" not in name.lower()  # reserved for an independent check
        assert f"`{name}`" in sources, f"{name} has no provenance in SOURCES.md"
        assert len(pairs) >= 9
        width, height = Image.open(DEFAULT_IMAGES / name).size
        for points in (pairs.point1, pairs.point2):
            assert (points >= 0).all() and (points[:, 0] < width).all() and (points[:, 1] < height).all(), name
        assert (np.abs(pairs.point1 - pairs.point2).sum(axis=1) > 0).all()
        assert set(pairs.closer.tolist()) <= {1, 2}
    closer = np.concatenate([p.closer for p in shipped.values()])
    assert 0.4 < (closer == 1).mean() < 0.6  # the closer point is first about half the time


def test_shipped_baselines(shipped):
    """Constant: every pair ties -> 0.5. Ramp: counted directly from the rows of the two points."""
    from apdepth.evaluation.whdr import evaluate_whdr

    result = evaluate_whdr(shipped, DEFAULT_IMAGES, ["ramp", "constant"])
    assert result["whdr"]["constant"] == pytest.approx(0.5)
    errors, hard = [], []
    for pairs in shipped.values():
        y1, y2 = pairs.point1[:, 1], pairs.point2[:, 1]
        lower = np.where(y1 > y2, 1, np.where(y2 > y1, 2, 0))  # the ramp calls the lower point closer
        errors += [0.5 if lo == 0 else float(lo != c) for lo, c in zip(lower, pairs.closer)]
        hard += [lo != c for lo, c in zip(lower, pairs.closer)]  # the closer point is level or higher
    assert result["whdr"]["ramp"] == pytest.approx(np.mean(errors))
    assert result["pairs_closer_not_lower"] == sum(hard) > 0
    assert result["whdr_closer_not_lower"]["ramp"] == pytest.approx(np.mean(np.asarray(errors)[hard]))
    assert result["whdr_closer_not_lower"]["constant"] == pytest.approx(0.5)


# ---------------------------------------------------------------- the command


def test_command_on_tiny_model(tiny_pipeline_dir, tmp_path):
    out = tmp_path / "whdr.json"
    rc = main(["evaluate-whdr", "--model", tiny_pipeline_dir, "--processing-res", "32", "--device", "cpu",
               "-o", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["pairs"] >= 400 and report["images"] >= 20 and report["processing_resolution"] == 32
    assert set(report["whdr"]) == set(report["whdr_closer_not_lower"]) == {"model", "prior", "ramp", "constant"}
    assert all(0.0 <= v <= 1.0 for v in report["whdr"].values())
    assert report["whdr"]["constant"] == pytest.approx(0.5)
    total = sum(r["pairs"] for r in report["per_image"].values())
    assert report["whdr"]["model"] == pytest.approx(
        sum(r["model"] * r["pairs"] for r in report["per_image"].values()) / total)


def test_command_model_row_matches_direct_sampling(pipe, tiny_pipeline_dir, tmp_path):
    """At the native size (processing-res 0) the model row is the pipeline's depth read at the label pixels."""
    names = ["carphone_060.jpg", "lion.jpg"]
    labels = tmp_path / "pairs.csv"
    with open(DEFAULT_LABELS) as f, open(labels, "w", newline="") as g:
        rows = [r for r in csv.DictReader(f) if r["image"] in names]
        writer = csv.DictWriter(g, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "whdr.json"
    assert main(["evaluate-whdr", "--model", tiny_pipeline_dir, "--processing-res", "0", "--device", "cpu",
                 "--labels", str(labels), "--methods", "model,ramp", "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["whdr"]) == {"model", "ramp"}
    errors = []
    for name in names:
        depth = pipe(Image.open(DEFAULT_IMAGES / name).convert("RGB"), processing_resolution=0).depth[0]  # [H, W]
        for r in (r for r in rows if r["image"] == name):
            d1 = depth[int(r["y1"]), int(r["x1"])]
            d2 = depth[int(r["y2"]), int(r["x2"])]
            relation = 1 if d1 < d2 else 2 if d2 < d1 else 0
            errors.append(0.5 if relation == 0 else float(relation != int(r["closer"])))
    assert report["whdr"]["model"] == pytest.approx(np.mean(errors))


def test_command_errors(tmp_path):
    with pytest.raises(ValueError, match="--methods"):
        main(["evaluate-whdr", "--methods", "ramp,oracle"])
    labels = tmp_path / "pairs.csv"
    labels.write_text("image,x1,y1,x2,y2,closer\nnot_there.jpg,0,0,1,1,1\n")
    with pytest.raises(FileNotFoundError, match="not_there.jpg"):
        main(["evaluate-whdr", "--labels", str(labels), "--methods", "ramp"])


# ---------------------------------------------------------------- the shipped embedded model


@pytest.fixture(scope="module")
def embedded_whdr(shipped):
    """`apdepth evaluate-whdr --model embedded` as the recipe runs it (fp32, the model's default processing
    resolution), and the numbers the model card was written from."""
    import json

    import torch

    from apdepth.embedded import WEIGHTS_DIR, embedded_model_path
    from apdepth.evaluation.whdr import evaluate_whdr
    from apdepth.pipeline import ApDepthPipeline

    pipe = ApDepthPipeline.from_pretrained(embedded_model_path(), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    measured = evaluate_whdr(shipped, DEFAULT_IMAGES, ["model", "prior", "ramp"], pipe)["whdr"]
    path = WEIGHTS_DIR / "whdr.json"
    return measured, json.loads(path.read_text())["whdr"], path


def test_shipped_embedded_model_reproduces_its_card_on_real_photographs(embedded_whdr):
    measured, card, path = embedded_whdr
    for method in ("model", "prior", "ramp"):
        assert measured[method] == pytest.approx(card[method], abs=0.005), (method, path)
    assert measured["model"] < 0.5 and measured["prior"] < 0.5  # better than a coin (a constant map)


def test_shipped_embedded_model_beats_the_ramp_on_real_photographs(embedded_whdr):
    measured, _, _ = embedded_whdr
    assert measured["model"] < measured["ramp"], measured


@pytest.mark.xfail(strict=True, reason="issue 17's target, WHDR at most half the ramp's, is not met: the shipped "
                   "model scores 0.172 against the ramp's 0.194 (half: 0.097); strict, so a model that meets it "
                   "fails here until this marker is removed")
def test_shipped_embedded_model_halves_the_ramps_error_on_real_photographs(embedded_whdr):
    measured, _, _ = embedded_whdr
    assert measured["model"] <= 0.5 * measured["ramp"], measured
