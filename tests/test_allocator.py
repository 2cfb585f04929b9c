"""apdepth.allocator: choosing, preloading and in-process retention of CPU memory; each checked in a
child process, so this test process keeps its own allocator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from apdepth import allocator

ROOT = Path(__file__).resolve().parents[1]

# Allocate, touch and free a 64 MB block 5 times; print the minor faults of the last 4 rounds.
FAULTS = """
import ctypes, json, resource, sys
from apdepth.allocator import retain_glibc_memory
if sys.argv[1] == "retain":
    assert retain_glibc_memory()
libc = ctypes.CDLL(None)  # the process's malloc: a preloaded allocator's when there is one
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size, counts = 64 * 2**20, []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(counts[1:]))
"""


def _child(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *args], env=full_env, capture_output=True, text=True,
                          timeout=300, check=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_glibc_retain_stops_refaulting_large_blocks():
    default = json.loads(_child(FAULTS, "default").stdout)
    retained = json.loads(_child(FAULTS, "retain").stdout)
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    # glibc maps a 64 MB block afresh each time (with transparent huge pages, fewer faults per MB)
    assert min(default) > pages // 600
    assert max(retained) < min(default) // 10 and max(retained) < 100
    for name in ("jemalloc", "tcmalloc"):
        if allocator.find_library(name):
            preloaded = json.loads(_child(FAULTS, "default", env=allocator.preload_env(name, environ={})).stdout)
            assert max(preloaded) < 100, name


def test_resolve():
    assert allocator.resolve("system", "cpu") == "system"
    assert allocator.resolve("auto", "cuda:0") == "system"
    if sys.platform.startswith("linux"):
        assert allocator.resolve("auto", "cpu") == "glibc-retain"
    with pytest.raises(ValueError, match="unknown allocator 'mimalloc'"):
        allocator.resolve("mimalloc")


def test_active_allocator_reads_the_maps(tmp_path, monkeypatch):
    monkeypatch.setattr(allocator, "_glibc_retained", False)
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert allocator.active_allocator(str(maps)) == "jemalloc"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert allocator.active_allocator(str(maps)) == "system"
    # glibc keeping its freed memory (--allocator auto / glibc-retain, in process) is named as such
    monkeypatch.setattr(allocator, "_glibc_retained", True)
    assert allocator.active_allocator(str(maps)) == "glibc-retain"


@pytest.mark.skipif(allocator.find_library("jemalloc") is None, reason="libjemalloc2 not installed")
def test_preload_env_and_cli_reexec(tmp_path):
    env = allocator.preload_env("jemalloc", environ={"LD_PRELOAD": "/x/other.so"})
    assert env["LD_PRELOAD"].split() == [allocator.find_library("jemalloc"), "/x/other.so"]
    assert env["MALLOC_CONF"] == allocator.JEMALLOC_CONF and "retain:true" in env["MALLOC_CONF"]
    assert allocator.preload_env("jemalloc", environ={"MALLOC_CONF": "narenas:1"})["MALLOC_CONF"] == "narenas:1"
    # The command line re-executes itself with jemalloc loaded (checked through /proc/self/maps).
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"hardware": {"cpu": "x", "cpu_count": 1}, "versions": {
        "torch": "t", "diffusers": "d", "transformers": "t", "apdepth": "a"}, "settings": {
        "prior": "small", "repeats": 1, "warmup": 0}, "rows": []}))
    out = subprocess.run([sys.executable, "-m", "apdepth", "bench", "--from", str(report), "--allocator", "jemalloc"],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "memory allocator: jemalloc (retain:true" in out.stderr
