"""Wall-clock timing with device synchronisation, and peak memory (CUDA allocator or CPU RSS)."""

from __future__ import annotations

import resource
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Milliseconds over ``n`` timed runs (after ``warmup`` untimed ones)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    n: int
    warmup: int

    def as_dict(self) -> dict:
        return asdict(self)


def measure(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> Timing:
    """Time ``fn`` ``repeats`` times after ``warmup`` calls; the device is synchronised around each call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
    return Timing(statistics.median(times), q[0], q[-1], times[0], len(times), warmup)


def gemm_tflops(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 1.0) -> float:
    """The machine's matrix-product rate in ``dtype``: TFLOP/s of repeated ``n x n @ n x n`` products for about
    ``seconds`` after a warm-up. A report carries it so that runs on machines of one name but different speed
    (a busy host, fewer or slower cores than the name suggests) can be told apart and compared."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        if device.type == "cuda" and count % 16:
            continue
        synchronize(device)
    synchronize(device)
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e12


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:  # not Linux: fall back to the lifetime peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory while the block runs: CUDA peak allocation on GPUs, sampled resident set size on CPU.

    ``peak_mb`` is the absolute peak; ``delta_mb`` the rise over the level at entry.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.002):
        self.device, self.interval_s = device, interval_s
        self.peak_mb = self.delta_mb = float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = _rss_bytes()
            self._peak = self._start
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.peak_mb = peak / 2**20
        self.delta_mb = (peak - self._start) / 2**20


def emit_json_line(result: dict, path: str | None = None) -> None:
    """Print ``result`` as one JSON line and, with ``path``, append that line to the file: the output of the
    one-measurement-per-process benchmark modules (``--json``), so that several runs collect in one file."""
    import json

    line = json.dumps(result)
    print(line)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
