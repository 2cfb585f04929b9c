"""Indoor scenes: a textured room (walls, floor, ceiling, skirting, doors, windows, pictures),
furniture placed without overlaps, ceiling / lamp / window lights, and cameras at human viewpoints."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from . import furniture as fu
from . import materials as mt
from . import textures as tx
from .camera import Camera, camera_from_fov
from .compose import Footprints
from .geometry import Box, Ellipsoid, rot_y
from .render import Light, Scene, primary_visibility, screen_rects

logger = logging.getLogger(__name__)

# room type -> furniture (name, weight); the number of pieces grows with the floor area
ROOM_TYPES = {
    "living_room": {"sofa": 3, "table": 2, "chair": 1, "shelf": 2, "cabinet": 1, "plant": 2, "clutter": 1},
    "bedroom": {"bed": 4, "cabinet": 2, "shelf": 1, "chair": 1, "plant": 1, "clutter": 2},
    "office": {"table": 3, "chair": 3, "shelf": 3, "cabinet": 2, "plant": 1, "clutter": 1},
    "kitchen": {"cabinet": 5, "table": 2, "chair": 2, "clutter": 1},
    "dining_room": {"table": 3, "chair": 4, "cabinet": 1, "shelf": 1, "plant": 1},
    "study": {"shelf": 4, "table": 2, "chair": 2, "sofa": 1, "plant": 1},
    "storage": {"clutter": 6, "shelf": 3, "cabinet": 1},
}


@dataclass
class Room:
    scene: Scene
    width: float  # x extent, metres
    length: float  # z extent
    height: float
    footprints: Footprints
    kind: str


def light_color(rng: np.random.Generator) -> np.ndarray:
    """Warm to cool white."""
    t = rng.uniform(-1, 1)
    return np.array([1.0, 0.92 + 0.04 * t, 0.8 + 0.2 * t]) if t < 0 else np.array([0.9 + 0.1 * (1 - t), 0.95, 1.0])


def sample_room(rng: np.random.Generator) -> Room:
    """A furnished, lit room: floor centred at the origin, x in [-W/2, W/2], z in [-L/2, L/2], y in [0, H]."""
    kind = str(rng.choice(list(ROOM_TYPES)))
    W, L, H = rng.uniform(2.8, 8.0), rng.uniform(3.0, 9.0), rng.uniform(2.4, 3.4)
    wall = mt.wall_material(rng)
    walls = [wall] * 4
    if rng.random() < 0.35:
        walls[int(rng.integers(4))] = mt.wall_material(rng)
    scene = Scene(ambient=((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
    # The shell is one box seen from inside: faces -x, +x, floor, ceiling, -z, +z.
    scene.add(Box((0, H / 2, 0), None, (walls[0], walls[1], mt.floor_material(rng), mt.ceiling_material(rng),
                                        walls[2], walls[3]), half=(W / 2, H / 2, L / 2), casts_shadow=False))
    _wall_details(rng, scene, W, L, H)
    lights = _ceiling_lights(rng, scene, W, L, H)
    pal = fu.Palette.sample(rng)
    feet = Footprints()
    _furnish(rng, scene, pal, kind, W, L, feet, lights)
    if rng.random() < 0.25:  # a rug
        rw, rl = rng.uniform(1.0, min(3.0, W - 0.5)), rng.uniform(1.0, min(4.0, L - 0.5))
        rug = mt.textured(rng.choice([tx.stripes_texture, tx.noise_texture, tx.checker_texture])(rng, 64),
                          (rng.uniform(0.3, 1.5),) * 2, name="rug")
        scene.add(Box((rng.uniform(-0.2, 0.2) * W, 0.006, rng.uniform(-0.2, 0.2) * L), rot_y(rng.uniform(0, math.pi)),
                      rug, half=(rw / 2, 0.006, rl / 2), casts_shadow=False))
    scene.lights = lights
    mean = np.mean([li.color / max(li.color.max(), 1e-6) for li in lights], axis=0)
    amb = rng.uniform(0.08, 0.3)
    scene.ambient = (mean * amb, mean * amb * rng.uniform(0.4, 0.8))
    return Room(scene, W, L, H, feet, kind)


def _walls(W, L):
    """(centre of wall on the floor (x, z), inward normal (x, z), wall length, yaw that turns local +z to the wall)."""
    return [((-W / 2, 0.0), (1, 0), L, -math.pi / 2), ((W / 2, 0.0), (-1, 0), L, math.pi / 2),
            ((0.0, -L / 2), (0, 1), W, math.pi), ((0.0, L / 2), (0, -1), W, 0.0)]


def _wall_details(rng, scene: Scene, W, L, H) -> None:
    skirting = mt.plain(tx.random_color(rng, sat=(0.0, 0.2), val=(0.3, 0.95)), specular=0.2)
    sk_h = rng.uniform(0.05, 0.12)
    for (cx, cz), (nx, nz), length, yaw in _walls(W, L):
        if rng.random() < 0.8:
            scene.add(Box((cx + nx * 0.01, sk_h / 2, cz + nz * 0.01), rot_y(yaw), skirting,
                          half=(length / 2, sk_h / 2, 0.012), casts_shadow=False))
        n_items = int(rng.integers(0, 4))
        used: list[tuple[float, float]] = []
        for _ in range(n_items):
            kind = rng.choice(["door", "window", "picture", "picture"])
            if kind == "door":
                w, h, y = rng.uniform(0.8, 1.0), rng.uniform(2.0, min(2.2, H - 0.1)), None
            elif kind == "window":
                w, h = rng.uniform(0.8, 2.0), rng.uniform(1.0, min(1.6, H - 1.0))
                y = rng.uniform(0.8, H - h - 0.15) + h / 2
            else:
                img, _ = tx.picture(rng)
                h = rng.uniform(0.3, 0.9)
                w = h * tx.texture_aspect(img)
                y = rng.uniform(1.2, H - 0.3 - h / 2)
            if w > length - 0.4:
                continue
            s = rng.uniform(-length / 2 + w / 2 + 0.1, length / 2 - w / 2 - 0.1)
            if any(abs(s - a) < (w + b) / 2 + 0.1 for a, b in used):
                continue
            used.append((s, w))
            along = np.array([-nz, nx], dtype=float)  # direction along the wall
            x, z = cx + along[0] * s, cz + along[1] * s
            rot = rot_y(yaw)
            if kind == "door":
                door = mt.furniture_material(rng)
                scene.add(Box((x + nx * 0.02, h / 2, z + nz * 0.02), rot, door, half=(w / 2, h / 2, 0.02)))
                knob = mt.plain((0.7, 0.65, 0.5), specular=0.9, shininess=64)
                kx = x + along[0] * (w / 2 - 0.08) + nx * 0.06
                kz = z + along[1] * (w / 2 - 0.08) + nz * 0.06
                scene.add(Ellipsoid((kx, 1.0, kz), rot, knob, radii=(0.03, 0.03, 0.03)))
            elif kind == "window":
                frame = mt.plain(tx.random_color(rng, sat=(0.0, 0.2), val=(0.5, 0.95)), specular=0.2)
                sky = np.array([0.75, 0.85, 1.0]) * rng.uniform(0.8, 1.2)
                glass = mt.Material(sky * 0.2, emission=sky * rng.uniform(1.5, 4.0), name="window")
                scene.add(Box((x + nx * 0.03, y, z + nz * 0.03), rot, (frame, frame, frame, frame, glass, glass),
                              half=(w / 2, h / 2, 0.03), casts_shadow=False))
                for k in (-1, 1):  # mullions
                    scene.add(Box((x + nx * 0.07 + along[0] * k * w / 4, y, z + nz * 0.07 + along[1] * k * w / 4),
                                  rot, frame, half=(0.02, h / 2, 0.015)))
            else:
                pic = mt.textured(img, (w, h), wrap="clamp", name="picture")
                frame = mt.plain(tx.random_color(rng, val=(0.1, 0.9)), specular=0.3)
                depth = rng.uniform(0.015, 0.04)
                # turned so that local +z faces the room: the picture is the +z face (5)
                scene.add(Box((x + nx * depth, y, z + nz * depth), rot @ rot_y(math.pi),
                              (frame, frame, frame, frame, frame, pic), half=(w / 2, h / 2, depth)))


def _ceiling_lights(rng, scene: Scene, W, L, H) -> list[Light]:
    lights = []
    for _ in range(1 if W * L < 20 or rng.random() < 0.5 else 2):
        x, z = rng.uniform(-0.3, 0.3) * W, rng.uniform(-0.3, 0.3) * L
        color = light_color(rng)
        power = rng.uniform(6.0, 18.0)
        if rng.random() < 0.5:  # a square light panel
            s = rng.uniform(0.2, 0.45)
            scene.add(Box((x, H - 0.01, z), None, mt.emissive(color, 3.0, "panel"), half=(s, 0.01, s),
                          casts_shadow=False))
            lights.append(Light("area", color * power, position=(x, H - 0.03, z), axis_u=(s, 0, 0),
                                axis_v=(0, 0, s), samples=2))
        else:  # a pendant bulb
            drop = rng.uniform(0.0, 0.8)
            scene.add(Ellipsoid((x, H - 0.1 - drop, z), None, mt.emissive(color, 3.0, "bulb"),
                                radii=(0.06, 0.06, 0.06), casts_shadow=False))
            lights.append(Light("point", color * power * 0.7, position=(x, H - 0.1 - drop, z)))
    return lights


def _furnish(rng, scene: Scene, pal: fu.Palette, kind: str, W, L, feet: Footprints, lights: list) -> None:
    names, weights = zip(*ROOM_TYPES[kind].items())
    p = np.array(weights, float) / sum(weights)
    n = int(np.clip(rng.poisson(W * L / 3.0) + 2, 2, 18))
    walls = _walls(W, L)
    for _ in range(n):
        name = str(rng.choice(names, p=p))
        builder, against_wall = fu.BUILDERS[name]
        piece = builder(rng, pal)
        _place(rng, scene, piece, against_wall or rng.random() < 0.3, walls, W, L, feet)
    if rng.random() < 0.35 and len(lights) < 3:  # a floor lamp
        piece = fu.floor_lamp(rng, pal, light_color(rng), rng.uniform(1.5, 4.0))
        if _place(rng, scene, piece, True, walls, W, L, feet, margin=0.15):
            lights.extend(piece.lights)


def _place(rng, scene, piece: fu.Piece, against_wall: bool, walls, W, L, feet: Footprints, margin=0.05) -> bool:
    for _ in range(12):
        if against_wall:
            (cx, cz), (nx, nz), length, yaw = walls[int(rng.integers(4))]
            if piece.width > length - 0.2:
                continue
            s = rng.uniform(-length / 2 + piece.width / 2 + 0.05, length / 2 - piece.width / 2 - 0.05)
            off = piece.depth / 2 + 0.03
            x, z = cx - nz * s + nx * off, cz + nx * s + nz * off
        else:
            yaw = rng.uniform(-math.pi, math.pi)
            r = 0.5 * math.hypot(piece.width, piece.depth)
            if W / 2 - r - 0.1 <= 0 or L / 2 - r - 0.1 <= 0:
                return False
            x, z = rng.uniform(-W / 2 + r + 0.1, W / 2 - r - 0.1), rng.uniform(-L / 2 + r + 0.1, L / 2 - r - 0.1)
        rect = Footprints.rect(x, z, piece.width, piece.depth, yaw, margin)
        if rect[0] < -W / 2 - 0.01 or rect[1] > W / 2 + 0.01 or rect[2] < -L / 2 - 0.01 or rect[3] > L / 2 + 0.01:
            continue
        if feet.free(rect):
            piece.move((x, 0.0, z), yaw)
            scene.add(*piece.prims)
            feet.add(rect)
            return True
    return False


def sample_indoor_camera(rng: np.random.Generator, room: Room, height: int, width: int,
                         tries: int = 10) -> Camera:
    """A camera inside ``room`` at a human viewpoint, away from walls and furniture, usually aimed at furniture.

    Candidates are scouted with a coarse 24x32 ray grid: the first whose median depth is over 1 m and
    whose view is less than 75% bare room shell is taken, else the best-scoring candidate.
    """
    W, L, H = room.width, room.length, room.height
    best, best_score = None, -np.inf
    targets = [((a0 + a1) / 2, (b0 + b1) / 2) for a0, a1, b0, b1 in room.footprints.rects]
    for _ in range(tries):
        x, z = rng.uniform(-W / 2 + 0.4, W / 2 - 0.4), rng.uniform(-L / 2 + 0.4, L / 2 - 0.4)
        if room.footprints.contains(x, z, margin=0.25):
            continue
        y = rng.uniform(0.6, 1.0) if rng.random() < 0.15 else rng.uniform(1.0, min(1.9, H - 0.4))
        if targets and rng.random() < 0.75:
            tx_, tz = targets[int(rng.integers(len(targets)))]
            ty = rng.uniform(0.2, 1.0)
        else:
            tx_, tz, ty = rng.uniform(-0.3, 0.3) * W, rng.uniform(-0.3, 0.3) * L, rng.uniform(0.5, 1.5)
        dist = max(math.hypot(tx_ - x, tz - z), 0.3)
        yaw = math.atan2(tx_ - x, tz - z) + rng.normal(0.0, math.radians(15))
        pitch = np.clip(math.atan2(ty - y, dist) + rng.normal(0.0, math.radians(8)), math.radians(-45), math.radians(15))
        roll = math.radians(rng.normal(0.0, 2.0))
        cam = camera_from_fov(height, width, rng.uniform(55.0, 80.0), (x, y, z), yaw, float(pitch), roll)
        depth, prim_id = scout_depth(room.scene, cam)
        shell, median = float(np.mean(prim_id == 0)), float(np.median(depth))
        if median > 1.0 and shell < 0.75:
            return cam
        score = (1.0 - shell) + min(median, 2.0)
        if score > best_score:
            best, best_score = cam, score
    if best is None:  # the room is full: stand in the middle
        best = camera_from_fov(height, width, 65.0, (0.0, min(1.5, H - 0.3), 0.0), rng.uniform(-math.pi, math.pi),
                               math.radians(-10))
    return best


def scout_depth(scene: Scene, camera: Camera, grid: tuple[int, int] = (24, 32)) -> tuple[np.ndarray, np.ndarray]:
    """Planar depth (inf where nothing is hit) and primitive index on a coarse ``grid`` of rays spanning the view."""
    gh, gw = grid
    small = Camera(gh, gw, camera.fx * gw / camera.width, camera.fy * gh / camera.height, camera.cx * gw / camera.width,
                   camera.cy * gh / camera.height, camera.position, camera.rotation)
    return primary_visibility(scene.primitives, screen_rects(scene.primitives, small), small.position,
                              small.ray_directions())
