"""Protocol defaults, per-sample scoring and the resumable runner, with fake and saved predictions."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from apdepth.data import get_dataset
from apdepth.evaluation import (
    Protocol,
    ResumeMismatchError,
    SavedPredictions,
    evaluate_dataset,
    evaluate_sample,
    load_config,
    table1,
    write_combined_report,
)
from apdepth.testing.fixtures import make_tar, write_fixture


@pytest.fixture(scope="module")
def scannet(tmp_path_factory):
    work = tmp_path_factory.mktemp("runner")
    fx = write_fixture("scannet", work / "scannet", num_samples=3, seed=5)
    return fx, make_tar(fx.root, work / "scannet.tar")


class AffineOfTruth:
    """A perfect affine-invariant 'model': 0.1 * depth + 0.05, optionally raised to a per-sample power
    (a non-affine error) or failing for some samples."""

    def __init__(self, power: dict[str, float] | None = None, fail: set[str] | None = None):
        self.power, self.fail, self.calls = power or {}, fail or set(), []

    def __call__(self, samples):
        out = []
        for s in samples:
            self.calls.append(s["rgb_path"])
            if s["rgb_path"] in self.fail:
                raise RuntimeError("boom")
            out.append((0.1 * s["depth"][0] + 0.05) ** self.power.get(s["rgb_path"], 1.0))
        return out


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_scoring_imports_no_inference_code():
    """Scoring saved predictions needs neither diffusers nor transformers (nor the pipeline)."""
    probe = ("import sys\nimport apdepth.evaluation.protocol\nfrom apdepth.evaluation import SavedPredictions, "
             "evaluate_dataset\nprint(sorted(m for m in ('diffusers', 'transformers', 'apdepth.pipeline') "
             "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_protocol_defaults_and_overrides():
    from apdepth.data import DATASETS

    p = Protocol.for_dataset(DATASETS["eth3d"])
    assert (p.processing_resolution, p.alignment_max_resolution, p.min_depth, p.max_depth) == (756, 1024, 1e-5, math.inf)
    assert p.to_dict()["max_depth"] == "inf"
    assert Protocol.for_dataset(DATASETS["diode"]).processing_resolution == 640
    assert Protocol.for_dataset(DATASETS["nyu"], processing_resolution=None).processing_resolution == 0
    assert Protocol.for_dataset(DATASETS["nyu"], processing_resolution=64).processing_resolution == 64
    with pytest.raises(ValueError, match="Unknown protocol settings"):
        Protocol.for_dataset(DATASETS["nyu"], procesing_resolution=64)
    with pytest.raises(ValueError, match="alignment_space"):
        Protocol.for_dataset(DATASETS["nyu"], alignment_space="log")


def test_evaluate_sample_perfect_affine_and_resize(scannet):
    fx, _ = scannet
    ds = get_dataset("scannet", fx.root, fx.split)
    sample = ds[0]
    protocol = Protocol.for_dataset(ds)
    row = evaluate_sample(0.1 * sample["depth"][0] + 0.05, sample, protocol)
    assert row["abs_rel"] == pytest.approx(0, abs=1e-6) and row["delta1"] == 1.0
    assert row["scale"] == pytest.approx(10, rel=1e-4) and row["shift"] == pytest.approx(-0.5, abs=1e-4)
    assert row["n_valid"] == int(sample["valid_mask"].sum())
    # a prediction at another size is resized to the ground truth's first
    small = evaluate_sample(torch.full((12, 16), 0.5), sample, protocol)
    assert small["n_valid"] == row["n_valid"] and small["scale"] == 0.0  # constant: the mean depth


def test_evaluate_sample_without_valid_pixels(scannet):
    fx, _ = scannet
    sample = dict(get_dataset("scannet", fx.root, fx.split)[0])
    sample["valid_mask"] = torch.zeros_like(sample["valid_mask"])
    row = evaluate_sample(torch.rand(48, 64), sample, Protocol.for_dataset(get_dataset("scannet", fx.root, fx.split)))
    assert row["n_valid"] == 0 and math.isnan(row["abs_rel"]) and math.isnan(row["boundary_f1"])


def test_edge_metrics_use_the_edge_mask_when_given():
    gt = torch.ones(1, 20, 20) * 4.0
    gt[..., 10:] = 8.0
    no_edge = torch.ones(1, 20, 20, dtype=torch.bool)
    no_edge[..., 8:12] = False  # a Sobel-style mask removed the discontinuity
    sample = {"depth": gt, "valid_mask": no_edge, "edge_valid_mask": torch.ones(1, 20, 20, dtype=torch.bool)}
    protocol = Protocol(dataset="diode", min_depth=0.6, max_depth=350)
    assert evaluate_sample(gt[0], sample, protocol)["boundary_f1"] == pytest.approx(1.0)
    del sample["edge_valid_mask"]
    assert math.isnan(evaluate_sample(gt[0], sample, protocol)["boundary_f1"])


def test_runner_outputs_and_means(scannet, tmp_path, caplog):
    fx, tar = scannet
    ds = get_dataset("scannet", tar, fx.split)
    paths = [e[0] for e in ds.entries]
    predictor = AffineOfTruth(power={paths[1]: 3.0})  # sample 1 is wrong beyond scale and shift
    result = evaluate_dataset(ds, predictor, tmp_path / "out", Protocol.for_dataset(ds), progress=False)
    assert "3 samples, but the protocol evaluates 800" in caplog.text
    rows = read_csv(tmp_path / "out" / "per_sample.csv")
    assert [r["rgb_path"] for r in rows] == paths and result.ok
    assert set(rows[0]) >= {"rgb_path", "n_valid", "scale", "shift", "abs_rel", "delta1", "boundary_f1",
                            "flying_pixels", "silog"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["evaluated"] == 3 and summary["complete"] and summary["failed"] == []
    assert summary["expected_samples"] == 800
    for key in ("abs_rel", "delta1", "rmse"):  # the mean over images of the CSV values
        assert summary["metrics"][key] == pytest.approx(sum(float(r[key]) for r in rows) / 3)
    abs_rel = [float(r["abs_rel"]) for r in rows]
    assert abs_rel[0] == pytest.approx(0, abs=1e-6) and abs_rel[2] == pytest.approx(0, abs=1e-6)
    assert abs_rel[1] > 0.01 and summary["metrics"]["abs_rel"] == pytest.approx(abs_rel[1] / 3, rel=1e-4)
    assert "abs_rel" in (tmp_path / "out" / "table.md").read_text()
    assert json.loads((tmp_path / "out" / "run.json").read_text())["protocol"]["dataset"] == "scannet"


def test_runner_isolates_failures_and_resumes(scannet, tmp_path):
    fx, tar = scannet
    ds = get_dataset("scannet", tar, fx.split)
    paths = [e[0] for e in ds.entries]
    protocol = Protocol.for_dataset(ds)
    first = evaluate_dataset(ds, AffineOfTruth(fail={paths[1]}), tmp_path, protocol, batch_size=2, progress=False)
    assert not first.ok and [p for p, _ in first.failed] == [paths[1]] and "boom" in first.failed[0][1]
    assert first.summary["evaluated"] == 2 and not first.summary["complete"]
    assert [r["rgb_path"] for r in read_csv(tmp_path / "per_sample.csv")] == [paths[0], paths[2]]

    again = AffineOfTruth()
    second = evaluate_dataset(ds, again, tmp_path, protocol, progress=False)
    assert again.calls == [paths[1]]  # only the missing sample is predicted
    assert second.ok and second.summary["evaluated"] == 3
    assert [r["rgb_path"] for r in read_csv(tmp_path / "per_sample.csv")] == paths  # split order

    with pytest.raises(ResumeMismatchError, match="another protocol"):
        evaluate_dataset(ds, again, tmp_path, Protocol.for_dataset(ds, processing_resolution=64), progress=False)
    fresh = AffineOfTruth()
    evaluate_dataset(ds, fresh, tmp_path, Protocol.for_dataset(ds, processing_resolution=64), overwrite=True,
                     progress=False)
    assert fresh.calls == paths


def test_unreadable_sample_is_reported(tmp_path):
    fx = write_fixture("scannet", tmp_path / "scannet", num_samples=2)
    ds = get_dataset("scannet", fx.root, fx.split)
    (fx.root / ds.entries[0][1]).write_bytes(b"not a png")
    result = evaluate_dataset(ds, AffineOfTruth(), tmp_path / "out", Protocol.for_dataset(ds), workers=1,
                              progress=False)
    assert [p for p, _ in result.failed] == [ds.entries[0][0]] and "not a readable image" in result.failed[0][1]
    assert result.summary["evaluated"] == 1 and not result.summary["complete"]


def test_saved_predictions_round_trip(scannet, tmp_path):
    fx, tar = scannet
    ds = get_dataset("scannet", tar, fx.split)
    protocol = Protocol.for_dataset(ds)

    class Noisy(AffineOfTruth):
        def __call__(self, samples):
            return [p + 0.01 * torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) for p in
                    super().__call__(samples)]

    live = evaluate_dataset(ds, Noisy(), tmp_path / "live", protocol, save_predictions=True, progress=False)
    saved = sorted((tmp_path / "live" / "predictions").rglob("*.npy"))
    assert len(saved) == 3 and np.load(saved[0]).shape == (48, 64)
    replay = evaluate_dataset(ds, SavedPredictions(tmp_path / "live" / "predictions"), tmp_path / "replay", protocol,
                              progress=False)
    assert replay.summary["metrics"] == pytest.approx(live.summary["metrics"])


def test_saved_prediction_names(tmp_path):
    preds = SavedPredictions(tmp_path)
    marigold_nyu = tmp_path / "test" / "kitchen" / "pred_0001.npy"  # Marigold names NYU rgb_0001 as pred_0001
    marigold_nyu.parent.mkdir(parents=True)
    np.save(marigold_nyu, np.ones((4, 5), dtype=np.float32))
    assert preds.path_for("test/kitchen/rgb_0001.png") == marigold_nyu
    np.save(tmp_path / "test" / "kitchen" / "rgb_0001.npy", np.ones((1, 4, 5), dtype=np.float32))
    assert preds.path_for("test/kitchen/rgb_0001.png").name == "rgb_0001.npy"  # ours first
    assert preds([{"rgb_path": "test/kitchen/rgb_0001.png"}])[0].shape == (4, 5)
    with pytest.raises(FileNotFoundError) as info:
        preds.path_for("test/office/rgb_0002.png")
    assert "pred_0002.npy" in str(info.value) and "rgb_0002.npy" in str(info.value)


def test_config_and_combined_report(scannet, tmp_path):
    fx, tar = scannet
    config = tmp_path / "bench.yaml"
    config.write_text(f"data_root: {tar.parent}\nsplit_root: {fx.split.parent}\ndatasets:\n"
                      f"  scannet: {{data: {tar.name}, split: {fx.split.name}, processing_resolution: 64, "
                      f"missing: skip}}\n")
    (spec,) = load_config(config)
    assert spec.data == tar and spec.split == fx.split
    assert spec.protocol == {"processing_resolution": 64} and spec.options == {"missing": "skip"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"datasets": {"scannet": {"data": "x.tar"}}}))
    with pytest.raises(ValueError, match="needs both 'data' and 'split'"):
        load_config(bad)

    ds = get_dataset("scannet", tar, fx.split)
    evaluate_dataset(ds, AffineOfTruth(), tmp_path / "out" / "scannet", Protocol.for_dataset(ds), progress=False)
    summaries = write_combined_report(tmp_path / "out", method="mine")
    assert list(summaries) == ["scannet"]
    text = (tmp_path / "out" / "results.md").read_text()
    assert "| Method | ScanNet AbsRel↓ | ScanNet δ1↑ |" in text
    assert "| mine | 0.0 | 100.0 |" in text and "| ApDepth (paper, Table 1) | 4.5 | 97.3 |" in text
    assert "ScanNet F1↑" in text


def test_table1_layout_and_incomplete_marker():
    summaries = {
        name: {"dataset": name, "metrics": {"abs_rel": 0.0451, "delta1": 0.9734}, "complete": name != "kitti"}
        for name in ("diode", "nyu", "kitti")
    }
    text = table1(summaries, method="x", paper_row=False)
    assert text.splitlines()[0] == ("| Method | NYUv2 AbsRel↓ | NYUv2 δ1↑ | KITTI AbsRel↓ | KITTI δ1↑ | "
                                    "DIODE AbsRel↓ | DIODE δ1↑ |")
    assert text.splitlines()[2] == "| x | 4.5 | 97.3 | 4.5* | 97.3* | 4.5 | 97.3 |"
    assert "incomplete" in text


class WithNonFinite(AffineOfTruth):
    """The perfect affine model with NaN and inf written into valid pixels of some samples."""

    def __init__(self, bad: dict[str, list[tuple[int, int]]]):
        super().__init__()
        self.bad = bad

    def __call__(self, samples):
        out = super().__call__(samples)
        for s, p in zip(samples, out):
            for k, (y, x) in enumerate(self.bad.get(s["rgb_path"], [])):
                p[y, x] = math.nan if k % 2 == 0 else math.inf
        return out


def valid_pixels(sample, count):
    ys, xs = torch.nonzero(sample["valid_mask"][0], as_tuple=True)
    return [(int(ys[i]), int(xs[i])) for i in range(0, count * 7, 7)]


def test_nonfinite_prediction_pixels_are_masked_and_counted(scannet, tmp_path, caplog):
    fx, tar = scannet
    ds = get_dataset("scannet", tar, fx.split)
    paths = [e[0] for e in ds.entries]
    bad = {paths[0]: valid_pixels(ds[0], 2)}  # one NaN, one inf
    result = evaluate_dataset(ds, WithNonFinite(bad), tmp_path / "out", Protocol.for_dataset(ds), progress=False)
    assert result.ok and result.failed == []  # the sample is scored, not thrown away
    rows = read_csv(tmp_path / "out" / "per_sample.csv")
    assert [float(r["n_nonfinite"]) for r in rows] == [2, 0, 0]
    n_valid = int(ds[0]["valid_mask"].sum())
    assert float(rows[0]["n_valid"]) == n_valid and float(rows[0]["abs_rel"]) == pytest.approx(0, abs=1e-6)
    assert f"NaN or infinite on 2 of the {n_valid} valid pixels; they are left out" in caplog.text
    assert "need positive prediction" not in caplog.text
    s = result.summary
    assert s["nonfinite_predictions"] == {"policy": "mask", "samples": 1, "pixels": 2, "rgb_paths": [paths[0]]}
    assert "2 valid pixels in 1 samples had NaN or infinite predictions" in (tmp_path / "out" / "table.md").read_text()


def test_nonfinite_masking_equals_leaving_those_pixels_out(scannet):
    """Masked pixels: the same numbers as a valid mask without them (fit and metrics alike)."""
    fx, tar = scannet
    ds = get_dataset("scannet", tar, fx.split)
    sample = ds[1]
    gen = torch.Generator().manual_seed(0)
    pred = (0.1 * sample["depth"][0] + 0.05) ** 1.5 + 0.01 * torch.rand(sample["depth"].shape[-2:], generator=gen)
    where = valid_pixels(sample, 3)
    broken = pred.clone()
    reduced = dict(sample, valid_mask=sample["valid_mask"].clone())
    for y, x in where:
        broken[y, x] = math.nan
        reduced["valid_mask"][0, y, x] = False
    protocol = Protocol.for_dataset(ds)
    got, expected = evaluate_sample(broken, sample, protocol), evaluate_sample(pred, reduced, protocol)
    assert got["n_nonfinite"] == 3 and got["n_valid"] == expected["n_valid"] + 3
    for key in ("scale", "shift", "abs_rel", "delta1", "rmse", "silog", "boundary_f1"):
        assert got[key] == pytest.approx(expected[key], nan_ok=True), key


def test_nonfinite_reject_policy(scannet, tmp_path):
    fx, tar = scannet
    ds = get_dataset("scannet", tar, fx.split)
    paths = [e[0] for e in ds.entries]
    bad = {paths[2]: valid_pixels(ds[2], 1)}
    rejected = evaluate_dataset(ds, WithNonFinite(bad), tmp_path / "reject",
                                Protocol.for_dataset(ds, nonfinite="reject"), progress=False)
    assert not rejected.ok and [p for p, _ in rejected.failed] == [paths[2]]
    assert "NaN or infinite on 1 of the" in rejected.failed[0][1] and "rejected" in rejected.failed[0][1]
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        Protocol.for_dataset(ds, nonfinite="ignore")


def test_all_nonfinite_prediction_fails_with_a_message(scannet):
    fx, tar = scannet
    ds = get_dataset("scannet", tar, fx.split)
    sample = ds[0]
    with pytest.raises(ValueError, match=r"NaN or infinite on (\d+) of the \1 valid pixels; fewer than 2 finite"):
        evaluate_sample(torch.full(sample["depth"].shape[-2:], math.nan), sample, Protocol.for_dataset(ds))


def test_samples_without_valid_ground_truth_make_the_run_incomplete(tmp_path):
    fx = write_fixture("scannet", tmp_path / "scannet", num_samples=3, seed=2)
    empty = fx.root / fx.lines[1].split()[1]
    from PIL import Image

    Image.fromarray(np.zeros((48, 64), dtype=np.uint16)).save(empty)  # no measurement at all
    ds = get_dataset("scannet", fx.root, fx.split)
    result = evaluate_dataset(ds, AffineOfTruth(), tmp_path / "out", Protocol.for_dataset(ds), progress=False)
    s = result.summary
    assert not result.ok and not s["complete"] and result.failed == []
    assert s["without_valid_gt"] == [ds.entries[1][0]] and s["without_valid_pixels"] == 1 and s["evaluated"] == 2
    assert "INCOMPLETE" in (tmp_path / "out" / "table.md").read_text()
    assert "1 samples without valid ground-truth pixels are not in the means" in (tmp_path / "out" / "table.md").read_text()


def test_protocol_alignment_settings():
    from apdepth.data import DATASETS

    p = Protocol.for_dataset(DATASETS["eth3d"])
    assert (p.alignment_subsample, p.nonfinite) == ("width", "mask")
    assert Protocol.for_dataset(DATASETS["eth3d"], alignment_max_resolution=0).alignment_max_resolution is None
    with pytest.raises(ValueError, match="alignment_subsample must be one of"):
        Protocol.for_dataset(DATASETS["eth3d"], alignment_subsample="rows")
    with pytest.raises(ValueError, match="alignment_max_resolution must be an int >= 0"):
        Protocol.for_dataset(DATASETS["eth3d"], alignment_max_resolution=-1)


def test_resume_refuses_other_reader_settings(tmp_path):
    fx = write_fixture("diode", tmp_path / "diode", num_samples=1)
    paper = get_dataset("diode", fx.root, fx.split)
    evaluate_dataset(paper, AffineOfTruth(), tmp_path / "out", Protocol.for_dataset(paper), progress=False)
    marigold = get_dataset("diode", fx.root, fx.split, mask="marigold")
    with pytest.raises(ResumeMismatchError, match="another data_options"):
        evaluate_dataset(marigold, AffineOfTruth(), tmp_path / "out", Protocol.for_dataset(marigold), progress=False)
