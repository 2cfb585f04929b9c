"""Procedural RGB-D scenes with exact planar depth, written in the real data sets' layouts.

- :mod:`.camera`: pinhole camera and primary rays (camera-frame z = 1, so ray parameter = planar depth)
- :mod:`.geometry`: quads / planes, oriented boxes, ellipsoids (spheres), capped cylinders
- :mod:`.textures`, :mod:`.materials`: procedural and photographic textures, mip-mapped; materials
- :mod:`.render`: vectorised ray caster with point / area / directional lights and shadow rays
- :mod:`.indoor`, :mod:`.furniture`, :mod:`.outdoor`: scene samplers (rooms, streets)
- :mod:`.encode`, :mod:`.datasets`: file encodings and the Hypersim / VKITTI / NYUv2 / KITTI writers
- :mod:`.clip`: video clips along a camera path (static, pan, forward, moving object), exact depth per frame

Command line: ``apdepth synth {hypersim,vkitti,nyu,kitti,all} -o DIR`` (see ``docs/synthetic_data.md``)
and ``apdepth synth clip -o DIR`` (see ``docs/features.md``).
"""

from .camera import Camera, camera_from_focal, camera_from_fov, rotation_from_angles
from .datasets import KINDS, generate
from .geometry import Box, Cylinder, Ellipsoid, Quad, Sphere
from .render import Light, RenderOutput, Scene, render, tonemap

__all__ = [
    "KINDS", "Box", "Camera", "Cylinder", "Ellipsoid", "Light", "Quad", "RenderOutput", "Scene", "Sphere",
    "camera_from_focal", "camera_from_fov", "generate", "render", "rotation_from_angles", "tonemap",
]
