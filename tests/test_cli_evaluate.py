"""`apdepth evaluate`: all five data sets end to end on fixtures with a tiny saved pipeline, resume,
saved predictions, the Table 1 preset layout, config files, failures and argument errors."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from apdepth.apps.cli import main
from apdepth.testing.fixtures import make_tar, write_fixture

SETS = ("nyu", "kitti", "eth3d", "scannet", "diode")
AS_TAR = {"nyu", "eth3d", "diode"}  # the others are read from extracted folders
# Marigold's layout: archive under the data root, split list under data_split/
LAYOUT = {
    "nyu": ("nyuv2/nyu_labeled_extracted.tar", "nyu/labeled/filename_list_test.txt"),
    "kitti": ("kitti/kitti_eigen_split_test.tar", "kitti/eigen_test_files_with_gt.txt"),
    "eth3d": ("eth3d/eth3d.tar", "eth3d/eth3d_filename_list.txt"),
    "scannet": ("scannet/scannet_val_sampled_800_1.tar", "scannet_depth/scannet_val_sampled_list_800_1.txt"),
    "diode": ("diode/diode_val.tar", "diode/diode_val_all_filename_list.txt"),
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Fixtures of the five sets, as given on the command line and in Marigold's layout."""
    work = tmp_path_factory.mktemp("bench")
    args, data_root, split_root = [], work / "marigold_eval", work / "Marigold" / "data_split"
    for name in SETS:
        fx = write_fixture(name, work / name, num_samples=2, seed=11)
        data = make_tar(fx.root, work / f"{name}.tar") if name in AS_TAR else fx.root
        args += ["--dataset", name, "--data", str(data), "--split", str(fx.split)]
        archive, split = LAYOUT[name]
        (data_root / archive).parent.mkdir(parents=True, exist_ok=True)
        make_tar(fx.root, data_root / archive)
        (split_root / split).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fx.split, split_root / split)
    return {"args": args, "data_root": data_root, "split_root": split_root.parent, "work": work}


def evaluate(*args) -> int:
    return main(["evaluate", *map(str, args), "--device", "cpu", "--workers", "0"])


@pytest.fixture(scope="module")
def first_run(bench, tiny_pipeline_dir):
    out = bench["work"] / "out"
    rc = evaluate(*bench["args"], "--model", tiny_pipeline_dir, "--processing-res", 64, "--save-predictions",
                  "-o", out)
    return rc, out


def summary(out, name):
    return json.loads((out / name / "summary.json").read_text())


def test_all_five_sets_end_to_end(first_run):
    rc, out = first_run
    assert rc == 0
    for name in SETS:
        with open(out / name / "per_sample.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 2  # KITTI: 3 split lines, one without ground truth
        s = summary(out, name)
        assert s["complete"] and s["evaluated"] == 2 and s["failed"] == []
        assert s["protocol"]["processing_resolution"] == 64
        for key in ("abs_rel", "delta1", "boundary_f1", "flying_pixels"):
            values = [float(r[key]) for r in rows if r[key] != "nan"]
            if values:
                assert s["metrics"][key] == pytest.approx(sum(values) / len(values))
        assert 0 < s["metrics"]["abs_rel"] < 1 and 0 <= s["metrics"]["delta1"] <= 1
        assert (out / name / "table.md").read_text().startswith("### ")
    assert summary(out, "kitti")["excluded_without_gt"] == 1
    assert summary(out, "eth3d")["protocol"]["alignment_max_resolution"] == 1024
    assert summary(out, "eth3d")["protocol"]["alignment_subsample"] == "width"  # Marigold's: the columns only
    assert summary(out, "diode")["data_options"] == {"mask": "paper", "edge_threshold": 0.3}
    # processing at 64 px on the long side, saved before resizing to the ground truth
    assert np.load(out / "nyu" / "predictions" / "test" / "scene_00" / "rgb_0000.npy").shape == (48, 64)
    assert np.load(out / "kitti" / "predictions" / "2011_09_26" / "2011_09_26_drive_0002_sync" / "image_02"
                   / "data" / "0000000000.npy").shape == (16, 64)  # 352x1216 after the crop: 18x64, VAE floors to 8
    table = (out / "results.md").read_text()
    assert table.splitlines()[0] == ("| Method | NYUv2 AbsRel↓ | NYUv2 δ1↑ | KITTI AbsRel↓ | KITTI δ1↑ | "
                                     "ETH3D AbsRel↓ | ETH3D δ1↑ | ScanNet AbsRel↓ | ScanNet δ1↑ | DIODE AbsRel↓ | "
                                     "DIODE δ1↑ |")
    ours = f"{100 * summary(out, 'nyu')['metrics']['abs_rel']:.1f}"
    assert table.splitlines()[2].split(" | ")[1] == ours
    assert "| ApDepth (paper, Table 1) | 4.5 | 97.3 | 8.7 | 93.7 | 5.6 | 96.3 | 4.5 | 97.3 | 8.3 | 93.2 |" in table
    assert set(json.loads((out / "results.json").read_text())) == set(SETS)


def test_rerun_resumes_without_loading_the_model(first_run, bench, tiny_pipeline_dir, monkeypatch):
    _, out = first_run
    before = {n: (out / n / "per_sample.csv").read_text() for n in SETS}

    def no_model(args):
        raise AssertionError("every sample is done: the model must not be loaded")

    monkeypatch.setattr("apdepth.apps.commands.common.load_pipeline", no_model)
    assert evaluate(*bench["args"], "--model", tiny_pipeline_dir, "--processing-res", 64, "-o", out) == 0
    assert {n: (out / n / "per_sample.csv").read_text() for n in SETS} == before
    # other settings in the same folder are refused rather than mixed
    with pytest.raises(SystemExit, match="another protocol"):
        evaluate(*bench["args"], "--model", tiny_pipeline_dir, "-o", out)


def test_saved_predictions_with_the_table1_preset(first_run, bench, monkeypatch):
    """--dataset all with Marigold's directory layout, scoring the predictions saved by the first run."""
    _, out = first_run
    monkeypatch.setattr("apdepth.apps.commands.common.load_pipeline", lambda args: pytest.fail("no model needed"))
    replay = bench["work"] / "replay"
    rc = evaluate("--dataset", "all", "--data-root", bench["data_root"], "--split-root", bench["split_root"],
                  "--predictions", out, "--method", "replayed", "-o", replay)
    assert rc == 0
    for name in SETS:
        assert summary(replay, name)["metrics"] == pytest.approx(summary(out, name)["metrics"], nan_ok=True)
        assert summary(replay, name)["data"].endswith(LAYOUT[name][0])
    assert "| replayed |" in (replay / "results.md").read_text()


def test_config_file(first_run, bench, tmp_path):
    _, out = first_run
    config = tmp_path / "bench.yaml"
    config.write_text(f"data_root: {bench['data_root']}\nsplit_root: {bench['split_root']}\ndatasets:\n"
                      "  scannet: {}\n"
                      "  kitti: {data: kitti/kitti_eigen_split_test.tar, split: data_split/kitti/"
                      "eigen_test_files_with_gt.txt, eval_crop: garg}\n")
    assert evaluate("--config", config, "--predictions", out, "-o", tmp_path / "cfg") == 0
    assert summary(tmp_path / "cfg", "scannet")["metrics"] == pytest.approx(summary(out, "scannet")["metrics"],
                                                                           nan_ok=True)
    assert summary(tmp_path / "cfg", "kitti")["metrics"]["abs_rel"] != summary(out, "kitti")["metrics"]["abs_rel"]
    assert not (tmp_path / "cfg" / "nyu").exists()


def test_failed_sample_exits_non_zero(tiny_pipeline_dir, tmp_path, capsys):
    fx = write_fixture("scannet", tmp_path / "scannet", num_samples=2)
    bad = fx.lines[1].split()[1]
    (fx.root / bad).write_bytes(b"\x89PNG broken")
    rc = evaluate("--dataset", "scannet", "--data", fx.root, "--split", fx.split, "--model", tiny_pipeline_dir,
                  "--processing-res", 32, "-o", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 1 and "INCOMPLETE" in err and f"FAILED {fx.lines[1].split()[0]}" in err
    s = summary(tmp_path / "out", "scannet")
    assert s["evaluated"] == 1 and not s["complete"] and bad in s["failed"][0]["error"]


def test_argument_errors(bench, tmp_path, tiny_pipeline_dir):
    fx = write_fixture("scannet", tmp_path / "scannet", num_samples=1)
    with pytest.raises(SystemExit, match="one --split per data set"):
        evaluate("--dataset", "scannet", "--dataset", "nyu", "--data", fx.root, "--data", fx.root,
                 "--split", fx.split, "-o", tmp_path / "o")
    with pytest.raises(SystemExit, match="--model or --predictions"):
        evaluate("--dataset", "scannet", "--data", fx.root, "--split", fx.split, "--model", tiny_pipeline_dir,
                 "--predictions", tmp_path, "-o", tmp_path / "o")
    with pytest.raises(SystemExit, match="--data-root"):
        evaluate("--dataset", "scannet", "--split", fx.split, "-o", tmp_path / "o")
    with pytest.raises(SystemExit, match="predictions folder .*nope does not exist"):
        evaluate("--dataset", "scannet", "--data", fx.root, "--split", fx.split, "--predictions", tmp_path / "nope",
                 "-o", tmp_path / "o")
    broken = tmp_path / "broken.yaml"
    broken.write_text("datasets: {nyu: [unclosed\n")
    with pytest.raises(SystemExit, match="not valid YAML"):
        evaluate("--config", broken, "-o", tmp_path / "o")
    split = tmp_path / "with_missing.txt"
    split.write_text(fx.split.read_text() + "scene0999_00/color/000999.jpg scene0999_00/depth/000999.png\n")
    with pytest.raises(SystemExit, match="scene0999_00/color/000999.jpg"):
        evaluate("--dataset", "scannet", "--data", fx.root, "--split", split, "-o", tmp_path / "o")
    # --missing skip evaluates the rest, and the result says it is incomplete
    rc = evaluate("--dataset", "scannet", "--data", fx.root, "--split", split, "--missing", "skip",
                  "--model", tiny_pipeline_dir, "--processing-res", 32, "-o", tmp_path / "skip")
    s = summary(tmp_path / "skip", "scannet")
    assert rc == 1 and s["evaluated"] == 1 and s["skipped_missing_files"] == ["scene0999_00/color/000999.jpg"]


def test_diode_mask_choices(first_run, bench, tmp_path, monkeypatch):
    _, out = first_run
    monkeypatch.setattr("apdepth.apps.commands.common.load_pipeline", lambda args: pytest.fail("no model needed"))
    diode = ["--dataset", "diode", "--data-root", bench["data_root"], "--split-root", bench["split_root"],
             "--predictions", out]
    results = {}
    for flags in (["--diode-mask", "marigold"], ["--diode-mask", "range"], ["--no-diode-edge-mask"]):
        name = "_".join(flags).strip("-")
        assert evaluate(*diode, *flags, "-o", tmp_path / name) == 0
        results[name] = summary(tmp_path / name, "diode")
    assert results["diode-mask_marigold"]["data_options"] == {"mask": "marigold"}
    assert results["no-diode-edge-mask"]["data_options"] == {"mask": "range"}
    assert results["no-diode-edge-mask"]["metrics"] == results["diode-mask_range"]["metrics"]
    assert results["diode-mask_marigold"]["metrics"]["abs_rel"] != summary(out, "diode")["metrics"]["abs_rel"]
    with pytest.raises(SystemExit, match="contradicts --diode-mask marigold"):
        evaluate(*diode, "--diode-mask", "marigold", "--no-diode-edge-mask", "-o", tmp_path / "x")


def scannet_predictions(fx, folder, nan_at=None):
    """Saved predictions in this tool's layout (<rgb path>.npy): the ground truth, NaN at some pixels."""
    from apdepth.data import get_dataset

    ds = get_dataset("scannet", fx.root, fx.split)
    for i, sample in enumerate(ds):
        pred = 0.1 * sample["depth"][0].numpy() + 0.05
        if nan_at is not None and i == 0:
            pred[nan_at] = np.nan
        path = folder / sample["rgb_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".npy"), pred)
    return ds


def test_nonfinite_predictions_are_counted_not_fatal(tmp_path, capsys):
    fx = write_fixture("scannet", tmp_path / "scannet", num_samples=2)
    ds = scannet_predictions(fx, tmp_path / "preds", nan_at=(slice(10, 12), slice(20, 23)))  # 6 valid pixels
    args = ["--dataset", "scannet", "--data", fx.root, "--split", fx.split, "--predictions", tmp_path / "preds"]
    assert evaluate(*args, "-o", tmp_path / "mask") == 0
    err = capsys.readouterr().err
    assert "6 valid pixels in 1 samples had NaN or infinite predictions and were left out" in err
    assert "positive prediction" not in err
    s = summary(tmp_path / "mask", "scannet")
    assert s["complete"] and s["evaluated"] == 2 and s["nonfinite_predictions"]["pixels"] == 6
    assert s["metrics"]["abs_rel"] == pytest.approx(0, abs=1e-6)
    assert evaluate(*args, "--nonfinite", "reject", "-o", tmp_path / "reject") == 1
    err = capsys.readouterr().err
    assert f"FAILED {ds.entries[0][0]}" in err and "NaN or infinite on 6 of the" in err


def test_sample_without_valid_ground_truth_exits_non_zero(tmp_path, capsys):
    from PIL import Image

    fx = write_fixture("scannet", tmp_path / "scannet", num_samples=2)
    scannet_predictions(fx, tmp_path / "preds")
    Image.fromarray(np.zeros((48, 64), dtype=np.uint16)).save(fx.root / fx.lines[1].split()[1])
    rc = evaluate("--dataset", "scannet", "--data", fx.root, "--split", fx.split, "--predictions", tmp_path / "preds",
                  "-o", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 1 and "1 without valid ground truth" in err
    assert f"NO VALID GROUND TRUTH {fx.lines[1].split()[0]}" in err
    s = summary(tmp_path / "out", "scannet")
    assert not s["complete"] and s["without_valid_gt"] == [fx.lines[1].split()[0]] and s["evaluated"] == 1
