"""Video clips with exact depth per frame: a camera path through a procedural room.

Motion types (``MOTIONS``):

- ``static``: the camera stands still; only the sensor noise changes from frame to frame.
- ``pan``: the camera turns about the world's vertical axis by ``pan_deg`` per frame (a tripod pan).
- ``forward``: the camera moves along its optical axis by ``step_m`` per frame (a dolly-in); the path
  is checked to stay clear of walls and furniture.
- ``object``: the camera stands still while a textured sphere crosses the view in front of the scene.

Each frame is ray cast (:func:`apdepth.synth.render.render`): depth is exact planar depth in metres.
The exposure is fixed from frame 0 (no auto-exposure flicker). A clip is written by :func:`write_clip`::

    CLIP/rgb/frame_0000.png ...      uint8 RGB frames (`apdepth video CLIP/rgb` reads them)
    CLIP/depth/frame_0000.png ...    uint16 planar depth in millimetres (0: no hit)
    CLIP/depth.npy                   float32 [N, H, W] planar depth in metres (exact; inf: no hit)
    CLIP/cameras.json                motion, fps, size and per frame: fx, fy, cx, cy, position, rotation
                                     (camera-to-world, OpenCV axes), and the moving object's centre
    CLIP/rgb.mp4                     optional H.264 copy of the frames (needs PyAV)
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import atomic_open, save_json
from . import encode as en
from . import materials as mt
from . import textures as tx
from .camera import Camera
from .compose import seed_rng
from .geometry import Sphere, rot_y
from .indoor import sample_indoor_camera, sample_room, scout_depth
from .render import Scene, render, tonemap

logger = logging.getLogger(__name__)

MOTIONS = ("static", "pan", "forward", "object")
STREAM_CLIP = 15  # seed stream of the clips (the data set writers use 11-14)
DEFAULT_FPS = 12.0


@dataclass
class Clip:
    """A rendered clip: ``rgb`` uint8 ``[N, H, W, 3]``, ``depth`` float32 ``[N, H, W]`` (metres, planar),
    ``cameras`` one per frame, ``object_centers`` the moving sphere's centre per frame (``object`` only)."""

    motion: str
    rgb: np.ndarray
    depth: np.ndarray
    cameras: list[Camera]
    fps: float = DEFAULT_FPS
    object_centers: list = field(default_factory=list)
    object_radius: float = 0.0


def _with_rotation(cam: Camera, rotation: np.ndarray, position=None) -> Camera:
    return Camera(cam.height, cam.width, cam.fx, cam.fy, cam.cx, cam.cy,
                  cam.position if position is None else np.asarray(position, np.float64), rotation)


def camera_path(motion: str, start: Camera, num_frames: int, pan_deg: float, step_m: float) -> list[Camera]:
    """The cameras of a clip starting at ``start``."""
    if motion == "pan":
        return [_with_rotation(start, rot_y(math.radians(pan_deg * k)) @ start.rotation) for k in range(num_frames)]
    if motion == "forward":
        return [_with_rotation(start, start.rotation, start.position + step_m * k * start.forward)
                for k in range(num_frames)]
    return [start] * num_frames


def _path_is_clear(room, cam: Camera, motion: str, num_frames: int, step_m: float) -> bool:
    """Enough room in front of the camera: the central third of the view is over 1.2 m away, and for
    ``forward`` still 0.8 m away after the whole travel."""
    depth, _ = scout_depth(room.scene, cam)  # [24, 32]
    centre = depth[8:16, 10:22]
    travel = step_m * (num_frames - 1) if motion == "forward" else 0.0
    return float(np.min(centre)) > max(1.2, travel + 0.8) and float(np.median(depth)) > 1.5


def render_clip(motion: str, num_frames: int = 10, size: tuple[int, int] = (96, 128), seed: int = 0, scene: int = 0,
                pan_deg: float = 1.5, step_m: float = 0.08, fps: float = DEFAULT_FPS) -> Clip:
    """Render one clip of ``motion`` (see ``MOTIONS``) in room ``scene`` of ``seed``; deterministic.

    Args:
        num_frames: frames in the clip (>= 2).
        size: (height, width) in pixels.
        pan_deg: degrees turned per frame (``pan``).
        step_m: metres moved per frame (``forward``).
    """
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {', '.join(MOTIONS)}, got {motion!r}")
    if num_frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {num_frames}")
    H, W = size
    if min(H, W) < 16:
        raise ValueError(f"size must be at least 16x16, got {H}x{W}")
    stream = MOTIONS.index(motion)
    room = sample_room(seed_rng(seed, STREAM_CLIP, stream, scene))
    rng = seed_rng(seed, STREAM_CLIP, stream, scene, 1)
    start = None
    for _ in range(30):  # a viewpoint with room to move
        cam = sample_indoor_camera(rng, room, H, W)
        if _path_is_clear(room, cam, motion, num_frames, step_m):
            start = cam
            break
    if start is None:
        raise ValueError(f"seed {seed}, scene {scene}: no clear camera path for {motion!r} in this room; "
                         "try another --seed or a smaller step")
    cameras = camera_path(motion, start, num_frames, pan_deg, step_m)
    centers, radius = [], 0.0
    if motion == "object":
        # a sphere 1.0-1.4 m in front of the camera, crossing 60% of the view from left to right
        dist = rng.uniform(1.0, 1.4)
        radius = rng.uniform(0.18, 0.25)
        half_width = dist * (W / 2) / start.fx
        material = mt.textured(tx.checker_texture(rng, 64), (0.12, 0.12), name="checker_obj")
        right = start.rotation[:, 0]
        for k in range(num_frames):
            lateral = (-0.6 + 1.2 * k / (num_frames - 1)) * half_width
            centers.append(start.position + dist * start.forward + lateral * right)
        sphere_material = material
    rgb = np.empty((num_frames, H, W, 3), np.uint8)
    depth = np.empty((num_frames, H, W), np.float32)
    exposure = None
    for k, cam in enumerate(cameras):
        frame_scene = room.scene
        if centers:
            frame_scene = Scene(room.scene.primitives + [Sphere(centers[k], radius, materials=sphere_material)],
                                room.scene.lights, room.scene.ambient, room.scene.sky, room.scene.fog)
        out = render(frame_scene, cam)
        if exposure is None:  # fixed from frame 0, as tonemap's auto exposure would choose it
            lum = out.radiance @ np.array([0.2126, 0.7152, 0.0722], np.float32)
            exposure = 0.8 / max(float(np.percentile(lum[::4, ::4], 90)), 1e-6)
        rgb[k] = tonemap(out.radiance, seed_rng(seed, STREAM_CLIP, stream, scene, 2 + k), exposure, noise=1.0)
        depth[k] = out.depth
    return Clip(motion, rgb, depth, cameras, fps, [np.asarray(c) for c in centers], radius)


def write_clip(clip: Clip, folder: str | os.PathLike, mp4: bool = False) -> dict:
    """Write ``clip`` in the layout of this module's docstring; returns the ``cameras.json`` content."""
    folder = Path(folder)
    for k in range(len(clip.rgb)):
        with atomic_open(folder / "rgb" / f"frame_{k:04d}.png") as f:
            f.write(en.png_bytes(clip.rgb[k]))
        with atomic_open(folder / "depth" / f"frame_{k:04d}.png") as f:
            f.write(en.png_bytes(en.metres_to_uint16(clip.depth[k], 1000.0)))
    with atomic_open(folder / "depth.npy") as f:
        np.save(f, clip.depth.astype(np.float32))
    frames = []
    for k, cam in enumerate(clip.cameras):
        entry = {"rgb": f"rgb/frame_{k:04d}.png", "depth": f"depth/frame_{k:04d}.png",
                 "fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy,
                 "position": [round(float(v), 6) for v in cam.position],
                 "rotation": [[round(float(v), 8) for v in row] for row in cam.rotation]}
        if clip.object_centers:
            entry["object_center"] = [round(float(v), 6) for v in clip.object_centers[k]]
        frames.append(entry)
    meta = {"motion": clip.motion, "num_frames": len(clip.rgb), "size": list(clip.depth.shape[1:]),
            "fps": clip.fps, "depth_units": "metres, planar (z) depth; depth/*.png: millimetres, 0 = no hit",
            "object_radius": clip.object_radius, "frames": frames}
    if mp4:
        from ..postprocessing.video.frames import VideoWriter

        with VideoWriter(folder / "rgb.mp4", clip.fps) as writer:
            for frame in clip.rgb:
                writer.write(frame)
    save_json(folder / "cameras.json", meta)
    return meta


def read_clip_depth(folder: str | os.PathLike) -> np.ndarray:
    """The exact depth ``[N, H, W]`` (metres) of a clip written by :func:`write_clip`."""
    path = Path(folder) / "depth.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a clip folder from `apdepth synth clip` has one)")
    return np.load(path)
