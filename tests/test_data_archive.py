"""Archive: the same bytes from a folder, a ./-prefixed tar, a plain-named tar and a tar.gz; clear
errors; safe in DataLoader worker processes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from apdepth.data import Archive, get_dataset, normalize_member
from apdepth.testing.fixtures import make_tar, write_fixture


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive") / "data"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.bin").write_bytes(b"\x00\x01payload")
    (root / "top.txt").write_bytes(b"top")
    return root


@pytest.fixture(scope="module", params=["folder", "tar_dot", "tar_plain", "tar_gz"])
def archive(request, tree, tmp_path_factory):
    work = tmp_path_factory.mktemp("packed")
    if request.param == "folder":
        return Archive(tree)
    if request.param == "tar_dot":
        return Archive(make_tar(tree, work / "data.tar"))
    if request.param == "tar_plain":
        return Archive(make_tar(tree, work / "data.tar", prefix=""))
    return Archive(make_tar(tree, work / "data.tar.gz"))


def test_read_and_list(archive):
    assert archive.read_bytes("a/b/x.bin") == b"\x00\x01payload"
    assert archive.read_bytes("./a/b/x.bin") == b"\x00\x01payload"  # ./ normalised
    assert archive.read_bytes("top.txt") == b"top"
    assert archive.names() == ["a/b/x.bin", "top.txt"]
    assert archive.exists("a/b/x.bin") and "./top.txt" in archive
    assert not archive.exists("a/b/y.bin") and not archive.exists("a/b")


def test_missing_member_names_archive_and_member(archive):
    with pytest.raises(FileNotFoundError) as info:
        archive.read_bytes("a/nothing.png")
    message = str(info.value)
    assert "a/nothing.png" in message and str(archive.path) in message


def test_unsafe_and_bad_paths(tree, tmp_path):
    assert normalize_member("./a//b/../c.png") == "a/c.png"
    for bad in ("../etc/passwd", "/abs/path.png", ""):
        with pytest.raises(ValueError):
            normalize_member(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Archive(tmp_path / "nope.tar")
    not_tar = tmp_path / "x.txt"
    not_tar.write_text("hello")
    with pytest.raises(ValueError, match="not a folder or a tar"):
        Archive(not_tar)


def test_pickle_drops_handle_and_reopens(tree, tmp_path):
    archive = Archive(make_tar(tree, tmp_path / "d.tar"))
    archive.read_bytes("top.txt")  # opens the handle in this process
    clone = pickle.loads(pickle.dumps(archive))
    assert clone._handle is None and clone._index == archive._index  # index travels, handle does not
    assert clone.read_bytes("a/b/x.bin") == b"\x00\x01payload"


def test_dataloader_workers_read_tar(tmp_path):
    fx = write_fixture("scannet", tmp_path / "scannet", num_samples=4)
    tar = make_tar(fx.root, tmp_path / "scannet.tar")
    ds = get_dataset("scannet", tar, fx.split)
    first = ds[0]  # the parent opens its handle before the workers fork
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    got = {s["rgb_path"]: s for s in loader}
    assert sorted(got) == sorted(e[0] for e in ds.entries)
    for i in range(len(ds)):
        ref = ds[i]
        assert torch.equal(got[ref["rgb_path"]]["depth"], ref["depth"])
        assert torch.equal(got[ref["rgb_path"]]["rgb"], ref["rgb"])
    assert np.array_equal(first["depth"].numpy(), ds[0]["depth"].numpy())
