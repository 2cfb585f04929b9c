"""Speed of the exported embedded model under onnxruntime / OpenVINO against torch on this CPU.

    python scripts/export_bench.py --size 192x256 --size 480x640 --threads 2 --repeats 5 \\
        --json docs/benchmarks/export-cpu.json

Each backend runs the same pipeline call (``processing_resolution=0`` on an image of the given size, so
the networks see exactly that size); the median of ``--repeats`` timed calls after one warm-up round is
reported, with the depth difference against torch. Backends are interleaved within each round. Each size gets its own fixed-size export (all four networks in ONNX).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", action="append", default=None, help="HxW (repeatable; default 192x256)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in (args.size or ["192x256"])]

    import numpy as np
    import torch

    from apdepth import ApDepthPipeline
    from apdepth.embedded import embedded_model_path
    from apdepth.export import example_image, export_onnx, load_exported_pipeline

    torch.set_num_threads(args.threads)
    eager = ApDepthPipeline.from_pretrained(embedded_model_path(), dtype=torch.float32)
    eager.set_progress_bar_config(disable=True)
    rows = []
    for height, width in sizes:
        # a fixed-size export per size: all four networks in ONNX (a dynamic export keeps the prior in torch)
        folder = tempfile.mkdtemp(prefix="apdepth-export-bench-")
        export_onnx(eager, folder, height, width)
        pipes = {"torch (contiguous)": eager}
        for backend in ("onnxruntime", "openvino"):
            try:
                pipes[backend] = load_exported_pipeline(folder, backend=backend, threads=args.threads)
            except ImportError as e:
                print(f"skip {backend}: {e}")
        image = example_image(height, width)
        variants = [*pipes.items(), ("torch (channels_last)", eager)]
        times: dict[str, list[float]] = {name: [] for name, _ in variants}
        depths = {}
        # Interleaved: every repeat runs each backend once, so a change in the machine's load hits all alike.
        for repeat in range(args.repeats + 1):  # the first round is the warm-up
            for name, pipe in variants:
                eager.set_channels_last(name == "torch (channels_last)")  # what `apdepth predict` uses on CPUs
                start = time.perf_counter()
                depths[name] = pipe(image, processing_resolution=0).depth[0]
                if repeat:
                    times[name].append(time.perf_counter() - start)
        eager.set_channels_last(False)
        ref = depths["torch (contiguous)"]
        for name, _ in variants:
            row = {"backend": name, "size": f"{height}x{width}", "median_s": statistics.median(times[name]),
                   "min_s": min(times[name]), "max_abs_diff_vs_torch": float(np.abs(depths[name] - ref).max())}
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "threads": args.threads, "load_average_at_end": os.getloadavg(), "repeats": args.repeats,
              "model": "embedded demo model (fp32)", "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
