"""Start the local web demo: upload an image or a video, see the depth map beside it, choose the colour
map, download the 16-bit PNG, npy and PLY. Needs Gradio: pip install 'apdepth[demo]'.
"""

from __future__ import annotations

import argparse
import logging

from .common import UsageError, add_model_arguments, check_model_arguments

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--processing-res", type=int, default=None,
                        help="long edge used for inference; 0 = native size (default: the checkpoint's)")
    parser.add_argument("--max-video-frames", type=int, default=120,
                        help="default frame limit for uploaded videos (default: 120)")
    add_model_arguments(parser)


def check(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    check_model_arguments(args)


def run(args: argparse.Namespace) -> int:
    from ..web_demo import import_gradio, launch
    from .common import load_pipeline

    import_gradio()  # fail with the install hint before loading the model
    pipe = load_pipeline(args)
    print(f"apdepth serve: http://{args.host}:{args.port} (Ctrl+C to stop)")
    launch(pipe, host=args.host, port=args.port, processing_resolution=args.processing_res,
           max_video_frames=args.max_video_frames, block=True)
    return 0
