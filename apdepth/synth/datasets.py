"""Write synthetic data sets in the real on-disk layouts (docs/reference.md sections 4 and 5).

=========  ===========================================================  ==============================
kind       files (relative to the data set folder)                       split list
=========  ===========================================================  ==============================
hypersim   ``ai_XXX_YYY/rgb_cam_00_frNNNN.png`` + ``depth_plane_...png``  ``filename_list_train.txt``
           (480x640, uint16 mm, planar depth)
vkitti     ``rgb/SceneNN/<variant>/frames/rgb/Camera_0/rgb_NNNNN.jpg``   ``vkitti_train.txt``
           + ``depth/.../depth_NNNNN.png`` (375x1242, uint16 cm, 65535 sky)
nyu        ``nyu_labeled_extracted.tar``: ``./test/<scene>/rgb_NNNN.png``,  ``filename_list_test.txt``
           ``depth_NNNN.png`` (raw, holes 0) and ``filled_NNNN.png``, mm
kitti      ``kitti_eigen_split_test.tar``: ``./<date>/<drive>/image_02/``  ``eigen_test_files_with_gt.txt``
           ``data/<frame>.png`` + ``./<drive>/proj_depth/groundtruth/...``
           (uint16 depth*256, sparse LiDAR; some frames without GT)
=========  ===========================================================  ==============================

Each scene is rendered by one worker from seeds derived from ``(seed, data set, scene, frame)``, so
the output does not depend on the number of workers, and the held-out sets never share a scene with
the training sets. Each folder also gets ``synth_meta.json`` (settings and per-frame intrinsics).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import atomic_open
from . import encode as en
from .closeup import closeup_camera, sample_closeup_scene
from .compose import seed_rng
from .indoor import sample_indoor_camera, sample_room
from .openair import clamp_sky, open_camera, sample_open_scene
from .optics import defocus
from .outdoor import KITTI_HEIGHT, KITTI_WIDTH, VARIANTS, sample_street, street_camera, street_scene
from .render import render, tonemap

logger = logging.getLogger(__name__)

KINDS = ("hypersim", "vkitti", "nyu", "kitti")
STREAM = {"hypersim": 11, "vkitti": 12, "nyu": 13, "kitti": 14}  # seed streams: one per data set
OPEN_STREAM = 15  # which Hypersim-layout scenes are open-air / close-up ones, and the open-air ones' seeds
CLOSEUP_STREAM = 16  # the close-up scenes' seeds (``closeup`` > 0)
DEFAULT_SIZE = {"hypersim": (480, 640), "nyu": (480, 640), "vkitti": (KITTI_HEIGHT, KITTI_WIDTH),
                "kitti": (KITTI_HEIGHT, KITTI_WIDTH)}
DEFAULT_FRAMES = {"hypersim": 4, "vkitti": 5, "nyu": 3, "kitti": 8}
SPLIT_NAME = {"hypersim": "filename_list_train.txt", "vkitti": "vkitti_train.txt",
              "nyu": "filename_list_test.txt", "kitti": "eigen_test_files_with_gt.txt"}
ARCHIVE_NAME = {"nyu": "nyu_labeled_extracted.tar", "kitti": "kitti_eigen_split_test.tar"}
FOLDER_NAME = {"hypersim": "hypersim", "vkitti": "vkitti", "nyu": "nyuv2", "kitti": "kitti"}  # under `all`
NYU_SCENES = ("bathroom", "bedroom", "bookstore", "classroom", "dining_room", "home_office", "kitchen",
              "living_room", "office", "study")
KITTI_NO_GT_FRAME = 7  # frames 7, 22, 37, ... of a drive have no ground truth (the Eigen list: 45 of 697)


@dataclass
class SceneResult:
    files: list = field(default_factory=list)  # (relative path, bytes), in writing order
    lines: list = field(default_factory=list)  # split lines
    meta: list = field(default_factory=list)  # per frame: dict
    seconds: dict = field(default_factory=dict)  # process CPU time: scene, render, encode
    depths: list = field(default_factory=list)  # float32 [H, W] metres per frame, when asked for (tests)


def _cam_meta(rel: str, cam, extra: dict | None = None) -> dict:
    meta = {"rgb": rel, "fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy,
            "position": [round(float(v), 6) for v in cam.position],
            "rotation": [[round(float(v), 8) for v in row] for row in cam.rotation]}
    return {**meta, **(extra or {})}


def _tick(result: SceneResult, key: str, start: float) -> float:
    now = time.process_time()
    result.seconds[key] = result.seconds.get(key, 0.0) + now - start
    return now


def render_frame(scene, camera, rng):
    """(uint8 RGB ``[H, W, 3]``, float32 planar depth ``[H, W]`` in metres, inf where nothing is hit)."""
    out = render(scene, camera)
    rgb = tonemap(out.radiance, rng, exposure=None, noise=rng.uniform(0.5, 2.5))
    return rgb, out.depth


def is_open_air(seed: int, scene: int, outdoor: float) -> bool:
    """Is Hypersim-layout scene ``scene`` an open-air one? A fraction ``outdoor`` of scenes are, each decided
    by its own seed (so adding scenes never changes earlier ones)."""
    return scene_kind(seed, scene, outdoor) == "open"


# synth_meta.json's per-frame "room" of the scenes that are not rooms (a room's is its kind: "kitchen", ...)
OPEN_AIR_ROOM, CLOSEUP_ROOM = "open_air", "closeup"


def scene_kind(seed: int, scene: int, outdoor: float, closeup: float = 0.0) -> str:
    """``"open"`` (a fraction ``outdoor`` of the scenes), ``"closeup"`` (a fraction ``closeup``) or ``"room"``,
    each scene decided by one draw from its own seed: raising ``closeup`` turns rooms into close-ups and
    leaves the open-air scenes as they were."""
    u = seed_rng(seed, OPEN_STREAM, scene).random()
    if outdoor > 0 and u < outdoor:
        return "open"
    return "closeup" if closeup > 0 and u < outdoor + closeup else "room"


def render_open_frame(scene, camera, rng):
    """As :func:`render_frame` with a lens: defocus blur around a focus distance (half the frames), and
    the depth of the sky clamped to the open-air scenes' far limit."""
    out = render(scene.scene, camera)
    radiance = out.radiance
    if rng.random() < 0.5:
        h, w = camera.height, camera.width
        centre = out.depth[h * 2 // 5:h * 3 // 5, w * 2 // 5:w * 3 // 5]
        focus = float(np.median(np.where(np.isfinite(centre), centre, 60.0)))
        strength = rng.uniform(2.0, 14.0) * w / 256  # pixels of blur per dioptre of defocus
        radiance = defocus(radiance, out.depth, max(focus, 0.5), strength)
    rgb = tonemap(radiance, rng, exposure=None, noise=rng.uniform(0.5, 2.5))
    return rgb, clamp_sky(out.depth)


def open_hypersim_scene(seed: int, scene: int, frames: list[int], size: tuple[int, int], name: str,
                        keep_depth: bool = False, closeup: bool = False) -> SceneResult:
    """An open-air scene (:mod:`apdepth.synth.openair`), or a close-up one (:mod:`apdepth.synth.closeup`),
    written like a Hypersim one."""
    res, t = SceneResult(), time.process_time()
    stream = CLOSEUP_STREAM if closeup else OPEN_STREAM
    world = (sample_closeup_scene if closeup else sample_open_scene)(seed_rng(seed, stream, scene, 0))
    t = _tick(res, "scene", t)
    for fr in frames:
        rng = seed_rng(seed, stream, scene, fr + 1)
        cam = (closeup_camera if closeup else open_camera)(rng, world, *size)
        rgb, depth = render_open_frame(world, cam, rng)
        res.depths += [depth] if keep_depth else []
        t = _tick(res, "render", t)
        rgb_rel, depth_rel = f"{name}/rgb_cam_00_fr{fr:04d}.png", f"{name}/depth_plane_cam_00_fr{fr:04d}.png"
        res.files += [(rgb_rel, en.png_bytes(rgb)), (depth_rel, en.png_bytes(en.metres_to_uint16(depth, 1000.0)))]
        res.lines.append(f"{rgb_rel} {depth_rel}")
        res.meta.append(_cam_meta(rgb_rel, cam, {"room": CLOSEUP_ROOM if closeup else OPEN_AIR_ROOM}))
        t = _tick(res, "encode", t)
    return res


def hypersim_scene(seed: int, scene: int, frames: list[int], size: tuple[int, int],
                   keep_depth: bool = False, outdoor: float = 0.0, closeup: float = 0.0) -> SceneResult:
    """A furnished room seen from ``frames`` viewpoints, or an open-air scene (a fraction ``outdoor``), or a
    close-up of one subject (a fraction ``closeup``)."""
    name = f"ai_{scene // 100 + 1:03d}_{scene % 100 + 1:03d}"
    kind = scene_kind(seed, scene, outdoor, closeup)
    if kind != "room":
        return open_hypersim_scene(seed, scene, frames, size, name, keep_depth, closeup=kind == "closeup")
    res, t = SceneResult(), time.process_time()
    room = sample_room(seed_rng(seed, STREAM["hypersim"], scene))
    t = _tick(res, "scene", t)
    for fr in frames:
        rng = seed_rng(seed, STREAM["hypersim"], scene, fr + 1)
        cam = sample_indoor_camera(rng, room, *size)
        rgb, depth = render_frame(room.scene, cam, rng)
        res.depths += [depth] if keep_depth else []
        t = _tick(res, "render", t)
        rgb_rel, depth_rel = f"{name}/rgb_cam_00_fr{fr:04d}.png", f"{name}/depth_plane_cam_00_fr{fr:04d}.png"
        res.files += [(rgb_rel, en.png_bytes(rgb)), (depth_rel, en.png_bytes(en.metres_to_uint16(depth, 1000.0)))]
        res.lines.append(f"{rgb_rel} {depth_rel}")
        res.meta.append(_cam_meta(rgb_rel, cam, {"room": room.kind}))
        t = _tick(res, "encode", t)
    return res


def vkitti_scene(seed: int, scene: int, frames: list[int], size: tuple[int, int],
                 keep_depth: bool = False) -> SceneResult:
    """``frames`` index (variant, frame) pairs: ``k -> (VARIANTS[k // F], k % F)`` with F frames per variant."""
    res, t = SceneResult(), time.process_time()
    rng_scene = seed_rng(seed, STREAM["vkitti"], scene)
    street = sample_street(rng_scene)
    focal = rng_scene.uniform(690.0, 740.0)  # one camera per scene
    per_variant = DEFAULT_FRAMES["vkitti"]
    t = _tick(res, "scene", t)
    for k in frames:
        variant, fr = VARIANTS[(k // per_variant) % len(VARIANTS)], k % per_variant
        light_rng = seed_rng(seed, STREAM["vkitti"], scene, 1000 + VARIANTS.index(variant))
        lit = street_scene(light_rng, street, variant)
        rng = seed_rng(seed, STREAM["vkitti"], scene, fr + 1)  # same pose in every variant, as VKITTI
        cam = street_camera(rng, street, fr * 4, variant, *size, step=1.0, focal=focal)
        rgb, depth = render_frame(lit, cam, seed_rng(seed, STREAM["vkitti"], scene, fr + 1, k))
        res.depths += [depth] if keep_depth else []
        t = _tick(res, "render", t)
        base = f"Scene{scene + 1:02d}/{variant}/frames"
        rgb_rel, depth_rel = f"rgb/{base}/rgb/Camera_0/rgb_{fr:05d}.jpg", f"depth/{base}/depth/Camera_0/depth_{fr:05d}.png"
        res.files += [(rgb_rel, en.jpg_bytes(rgb)),
                      (depth_rel, en.png_bytes(en.metres_to_uint16(depth, 100.0, invalid=en.UINT16_MAX)))]
        res.lines.append(f"{rgb_rel} {depth_rel}")
        res.meta.append(_cam_meta(rgb_rel, cam, {"variant": variant}))
        t = _tick(res, "encode", t)
    return res


def nyu_scene(seed: int, scene: int, frames: list[int], size: tuple[int, int],
              keep_depth: bool = False) -> SceneResult:
    """``frames`` are global image numbers (NYU numbers its test images across scenes)."""
    res, t = SceneResult(), time.process_time()
    room = sample_room(seed_rng(seed, STREAM["nyu"], scene))
    t = _tick(res, "scene", t)
    folder = f"test/{NYU_SCENES[scene % len(NYU_SCENES)]}_{scene // len(NYU_SCENES) + 1:04d}"
    for number in frames:
        rng = seed_rng(seed, STREAM["nyu"], scene, number + 1)
        cam = sample_indoor_camera(rng, room, *size)
        rgb, depth = render_frame(room.scene, cam, rng)
        res.depths += [depth] if keep_depth else []
        t = _tick(res, "render", t)
        raw = np.where(en.kinect_holes(depth, rng), 0.0, depth)
        names = [f"{folder}/{kind}_{number:04d}.png" for kind in ("rgb", "depth", "filled")]
        res.files += [(names[0], en.png_bytes(rgb)), (names[1], en.png_bytes(en.metres_to_uint16(raw, 1000.0))),
                      (names[2], en.png_bytes(en.metres_to_uint16(depth, 1000.0, overflow=en.UINT16_MAX)))]
        res.lines.append(" ".join(names))
        res.meta.append(_cam_meta(names[0], cam, {"room": room.kind}))
        t = _tick(res, "encode", t)
    return res


def kitti_drive(seed: int, scene: int, frames: list[int], size: tuple[int, int],
                keep_depth: bool = False) -> SceneResult:
    res, t = SceneResult(), time.process_time()
    rng_scene = seed_rng(seed, STREAM["kitti"], scene)
    street = sample_street(rng_scene)
    lit = street_scene(rng_scene, street, str(rng_scene.choice(["clone", "clone", "morning", "overcast"])))
    focal = rng_scene.uniform(690.0, 740.0)  # one camera per drive, like KITTI's per-day calibration
    t = _tick(res, "scene", t)
    date = f"2011_09_{26 + scene % 5:02d}"
    drive = f"{date}_drive_{scene + 1:04d}_sync"
    for fr in frames:
        rng = seed_rng(seed, STREAM["kitti"], scene, fr + 1)
        cam = street_camera(rng, street, fr * 3, "clone", *size, step=1.0, focal=focal)
        rgb, depth = render_frame(lit, cam, rng)
        res.depths += [depth] if keep_depth else []
        t = _tick(res, "render", t)
        rgb_rel = f"{date}/{drive}/image_02/data/{fr:010d}.png"
        gt_rel = f"{drive}/proj_depth/groundtruth/image_02/{fr:010d}.png"
        res.files.append((rgb_rel, en.png_bytes(rgb)))
        if fr % 15 == KITTI_NO_GT_FRAME:  # 1 in 15 frames has no ground truth, as 45 of 697 in the Eigen list
            gt_rel = "None"
        else:
            sparse = np.where(en.lidar_mask(cam, depth, rng), depth, 0.0)
            res.files.append((gt_rel, en.png_bytes(en.metres_to_uint16(sparse, 256.0))))
        res.lines.append(f"{rgb_rel} {gt_rel} {en.focal_text(cam.fx)}")
        res.meta.append(_cam_meta(rgb_rel, cam))
        t = _tick(res, "encode", t)
    return res


RENDERERS = {"hypersim": hypersim_scene, "vkitti": vkitti_scene, "nyu": nyu_scene, "kitti": kitti_drive}


def plan(kind: str, num: int, frames_per_scene: int | None = None) -> list[tuple[int, list[int]]]:
    """Split ``num`` images into (scene, frame numbers) work units."""
    if kind not in KINDS:
        raise ValueError(f"Unknown data set kind {kind!r}; choose among {', '.join(KINDS)}")
    if num < 1:
        raise ValueError(f"The number of images must be at least 1, got {num}")
    per = frames_per_scene or DEFAULT_FRAMES[kind]
    if kind == "vkitti":
        per = DEFAULT_FRAMES["vkitti"] * len(VARIANTS) if frames_per_scene is None else frames_per_scene
    if per < 1:
        raise ValueError(f"frames per scene must be at least 1, got {per}")
    units = []
    for scene, start in enumerate(range(0, num, per)):
        count = min(per, num - start)
        frames = list(range(start, start + count)) if kind == "nyu" else list(range(count))
        units.append((scene, frames))
    return units


def render_scene(kind: str, seed: int, scene: int, frames: list[int], size: tuple[int, int] | None = None,
                 keep_depth: bool = False, outdoor: float = 0.0, closeup: float = 0.0) -> SceneResult:
    """Render one work unit of :func:`plan` exactly as :func:`generate` does (``keep_depth``: also return
    the float depth maps)."""
    extra = {"outdoor": outdoor, "closeup": closeup} if kind == "hypersim" else {}
    return RENDERERS[kind](seed, scene, frames, tuple(size or DEFAULT_SIZE[kind]), keep_depth, **extra)


def _run_unit(args) -> SceneResult:
    kind, seed, scene, frames, size, outdoor, closeup = args
    return render_scene(kind, seed, scene, frames, size, outdoor=outdoor, closeup=closeup)


def generate(kind: str, out_dir: str | os.PathLike, num: int, seed: int = 0, workers: int = 1,
             size: tuple[int, int] | None = None, frames_per_scene: int | None = None,
             progress: bool = True, outdoor: float = 0.0, closeup: float = 0.0) -> dict:
    """Render ``num`` images of data set ``kind`` into ``out_dir``; returns a summary dict (counts, paths, timing).

    ``outdoor`` (``hypersim`` only): the fraction of scenes that are open-air ones (:mod:`.openair`)
    instead of rooms, written in the same layout; ``closeup`` (``hypersim`` only): the fraction that are
    close-ups of one subject in front of a farther backdrop (:mod:`.closeup`).
    """
    size = tuple(size or DEFAULT_SIZE[kind])
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"size must be (height, width) with both >= 16, got {size}")
    if not 0.0 <= outdoor <= 1.0 or (outdoor > 0 and kind != "hypersim"):
        raise ValueError(f"outdoor must be in [0, 1] and is only for hypersim, got {outdoor} for {kind}")
    if closeup < 0 or outdoor + closeup > 1.0 or (closeup > 0 and kind != "hypersim"):
        raise ValueError(f"closeup must be in [0, 1 - outdoor] and is only for hypersim, got {closeup} for {kind}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    units = plan(kind, num, frames_per_scene)
    jobs = [(kind, int(seed), scene, frames, size, float(outdoor), float(closeup)) for scene, frames in units]
    lines, meta, seconds = [], [], {}
    archive = out / ARCHIVE_NAME[kind] if kind in ARCHIVE_NAME else None
    from tqdm.auto import tqdm

    bar = tqdm(total=num, desc=f"synth {kind}", unit="img", disable=not progress or None)
    start = time.perf_counter()
    with _maybe_pool(workers) as pool, (atomic_open(archive) if archive else _null()) as fh:
        tar = en.TarWriter(fh) if archive else None
        results = pool.map(_run_unit, jobs) if pool else map(_run_unit, jobs)
        for res in results:
            for rel, data in res.files:
                if tar is not None:
                    tar.add(rel, data)
                else:
                    with atomic_open(out / rel) as f:
                        f.write(data)
            lines += res.lines
            meta += res.meta
            for key, value in res.seconds.items():
                seconds[key] = seconds.get(key, 0.0) + value
            bar.update(len(res.lines))
        if tar is not None:
            tar.close()
    bar.close()
    wall = time.perf_counter() - start
    split = out / SPLIT_NAME[kind]
    with atomic_open(split, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    info = {"kind": kind, "seed": int(seed), "images": len(lines), "size": list(size), "scenes": len(units),
            **({"outdoor": float(outdoor)} if outdoor > 0 else {}), **({"closeup": float(closeup)} if closeup > 0 else {}),
            "root": str(archive or out), "split": str(split),
            "cpu_seconds_per_image": {k: v / max(len(lines), 1) for k, v in seconds.items()},
            "wall_seconds": wall, "workers": workers}
    with atomic_open(out / "synth_meta.json", "w") as f:
        json.dump({**{k: v for k, v in info.items() if k not in ("wall_seconds", "root", "split",
                                                                 "cpu_seconds_per_image")},
                   "frames": meta}, f, indent=1)
    return info


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _maybe_pool(workers: int):
    if workers is None or workers <= 1:
        return _null()
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
