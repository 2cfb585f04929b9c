"""A local web demo (Gradio): upload an image or a video, see its depth beside it, pick a colour map,
download the 16-bit PNG, the float depth (npy) and a coloured point cloud (PLY).

Install with ``pip install 'apdepth[demo]'``; start with ``apdepth serve`` or :func:`launch`.
Everything runs locally: no analytics, no web fonts, no share link.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..image_utils import colorize_depth, depth_to_uint16
from ..io import read_image, save_image, save_npy

logger = logging.getLogger(__name__)

COLORMAPS = ("Spectral", "Spectral_r", "viridis", "magma", "inferno", "plasma", "turbo", "gray", "gray_r")
PLY_OFFSET = 0.25  # z = depth + offset for the affine-invariant depth (as `apdepth predict --ply-offset`)


def import_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise ImportError("the web demo needs Gradio: pip install 'apdepth[demo]'") from None
    return gr


class DemoModel:
    """The demo's work, independent of the UI: one pipeline, outputs in a fresh folder per request."""

    def __init__(self, pipe, *, processing_resolution: int | None = None, workdir: str | os.PathLike | None = None,
                 max_video_frames: int = 120, keep_seconds: float = 3600.0):
        self.pipe = pipe
        self.keep_seconds = keep_seconds
        self.processing_resolution = processing_resolution
        self.max_video_frames = max_video_frames
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="apdepth_demo_"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one prediction at a time on the model

    def _request_dir(self) -> Path:
        """A fresh folder for one request's outputs; folders older than ``keep_seconds`` are removed."""
        now = time.time()
        for old in self.workdir.iterdir():
            with contextlib.suppress(OSError):
                if old.is_dir() and now - old.stat().st_mtime > self.keep_seconds:
                    shutil.rmtree(old)
        return Path(tempfile.mkdtemp(dir=self.workdir))

    def predict_image(self, path: str, colormap: str) -> tuple[np.ndarray, np.ndarray, list[str], str]:
        """Image file -> (coloured depth uint8 [H, W, 3], depth float32 [H, W], download paths, message)."""
        from ..postprocessing.pointcloud import depth_to_ply, resolve_focal

        image = read_image(path)
        with self._lock:
            depth = self.pipe(image, processing_resolution=self.processing_resolution).depth[0]  # [H, W]
        out = self._request_dir()
        stem = Path(path).stem or "image"
        files = [out / f"{stem}_depth.png", out / f"{stem}_depth.npy", out / f"{stem}_points.ply"]
        save_image(files[0], depth_to_uint16(depth))
        save_npy(files[1], depth.astype(np.float32))
        H, W = depth.shape
        focal, how = resolve_focal(image, W, H, name=stem)
        count = depth_to_ply(files[2], depth + PLY_OFFSET, np.asarray(image.convert("RGB")), focal, comments=[
            f"apdepth demo point cloud of {Path(path).name}",
            f"affine-invariant depth (not metric): z = depth + {PLY_OFFSET:g}", f"focal from {how}"])
        message = (f"{W}x{H} px; depth in [0, 1] (near small, affine-invariant). Point cloud: {count} points, "
                   f"focal {focal:.0f} px ({how}).")
        return np.asarray(colorize_depth(depth, colormap)), depth, [str(f) for f in files], message

    def predict_video(self, path: str, colormap: str, max_frames: int | None = None) -> tuple[str, list[str], str]:
        """Video file -> (side-by-side video path, download paths, message with the flicker metric)."""
        from ..postprocessing.video.stabilize import process_video

        out = self._request_dir()
        limit = int(max_frames or self.max_video_frames)
        with self._lock:
            result = process_video(self.pipe, path, out, formats=("video", "sbs", "png16"), colormap=colormap,
                                   processing_resolution=self.processing_resolution, max_frames=limit)
        frames_zip = shutil.make_archive(str(out / "depth_frames_png16"), "zip", root_dir=out / "frames")
        files = [str(out / "depth.mp4"), frames_zip, str(out / "video.json")]
        message = (f"{result.num_frames} frames at {result.fps:.3g} fps (at most {limit}). Flicker (mean frame-to-frame "
                   f"change on matched pixels / depth range): {result.flicker_raw:.4f} per frame, "
                   f"{result.flicker_stabilized:.4f} stabilised.")
        return str(out / "side_by_side.mp4"), files, message


def build_demo(model: DemoModel):
    """The Gradio ``Blocks`` for a :class:`DemoModel`."""
    gr = import_gradio()

    def on_image(path, colormap):
        if not path:
            raise gr.Error("Upload an image first.")
        try:
            return model.predict_image(path, colormap)
        except ValueError as e:
            raise gr.Error(str(e)) from e

    def on_colormap(depth, colormap):
        return None if depth is None else np.asarray(colorize_depth(depth, colormap))

    def on_video(path, colormap, max_frames):
        if not path:
            raise gr.Error("Upload a video first.")
        try:
            return model.predict_video(path, colormap, max_frames)
        except (ValueError, ImportError) as e:
            raise gr.Error(str(e)) from e

    # Gradio's own copies of inputs and outputs are deleted after a day, checked hourly
    with gr.Blocks(title="ApDepth", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# ApDepth: monocular depth in one diffusion step\nUpload an image or a video. "
                    "Depth is affine-invariant: near is small, far is large.")
        colormap = gr.Dropdown(list(COLORMAPS), value=COLORMAPS[0], label="Colour map", elem_id="colormap")
        with gr.Tab("Image"):
            with gr.Row():
                image_in = gr.Image(type="filepath", image_mode=None, label="Input image", elem_id="image_input")
                depth_out = gr.Image(type="numpy", format="png", label="Depth", interactive=False,
                                     elem_id="depth_output")
            image_button = gr.Button("Estimate depth", variant="primary", elem_id="image_button")
            image_files = gr.File(label="Downloads: 16-bit PNG, npy, PLY", file_count="multiple",
                                  elem_id="image_files")
            image_info = gr.Markdown(elem_id="image_info")
            depth_state = gr.State(None)
        with gr.Tab("Video"):
            with gr.Row():
                video_in = gr.Video(label="Input video", sources=["upload"], elem_id="video_input")
                video_out = gr.Video(label="Input | depth (stabilised)", interactive=False, elem_id="video_output")
            max_frames = gr.Slider(1, 1000, value=model.max_video_frames, step=1, label="Frames (at most)")
            video_button = gr.Button("Estimate video depth", variant="primary", elem_id="video_button")
            video_files = gr.File(label="Downloads: depth video, 16-bit PNG frames (zip), report",
                                  file_count="multiple", elem_id="video_files")
            video_info = gr.Markdown(elem_id="video_info")

        image_button.click(on_image, [image_in, colormap], [depth_out, depth_state, image_files, image_info])
        colormap.change(on_colormap, [depth_state, colormap], depth_out)
        video_button.click(on_video, [video_in, colormap, max_frames], [video_out, video_files, video_info])
    return demo


def launch(pipe, *, host: str = "127.0.0.1", port: int | None = None, processing_resolution: int | None = None,
           max_video_frames: int = 120, block: bool = True, workdir: str | os.PathLike | None = None):
    """Build and start the demo on ``http://host:port``. With ``block=False`` it returns the running
    ``Blocks`` at once (``demo.local_url``; stop it with ``demo.close()``)."""
    gr = import_gradio()
    model = DemoModel(pipe, processing_resolution=processing_resolution, workdir=workdir,
                      max_video_frames=max_video_frames)
    demo = build_demo(model)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
                ssr_mode=False, quiet=not block, theme=theme, allowed_paths=[str(model.workdir)], mcp_server=False,
                show_error=True)
    return demo
