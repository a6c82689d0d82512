"""Pictures of the synthetic world: a plain wall, a floor band, flat-coloured bodies.

Edges are anti-aliased (coverage falls off over one pixel) so motion between frames is smooth at any
size. Balls carry a dark marker that turns as they roll, so rolling is visible. Drawn with numpy in
float32, a chunk of frames at a time: on small pictures torch's intra-op threads cost more than they
save (30x slower on a busy 2-core machine).
"""
from __future__ import annotations

import numpy as np
import torch

from .physics import FLOOR, Body, Motion

MARKER_OFFSET, MARKER_SIZE, MARKER_SHADE = 0.55, 0.3, 0.45
_CHUNK_PIXELS = 1 << 20  # pixels drawn at once: bounds memory at large sizes


def _at(times: np.ndarray, motion_times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-body values [S, n] read at `times` [T] (linear between 1 ms steps) -> [T, n, 1, 1]."""
    columns = [np.interp(times, motion_times, values[:, k]) for k in range(values.shape[1])]
    return np.stack(columns, 1).astype(np.float32)[..., None, None]


def _coverage(signed_distance: np.ndarray) -> np.ndarray:
    """Share of a pixel inside a shape, from the pixel centre's distance inside its edge (in pixels)."""
    return np.clip(signed_distance + 0.5, 0.0, 1.0)


def render(motion: Motion, bodies: list[Body], frame_times: np.ndarray, size: tuple[int, int],
           background: tuple[int, int, int], floor: tuple[int, int, int]) -> torch.Tensor:
    """uint8 [T, H, W, 3] frames of the world at `frame_times` (seconds); size is (width, height)."""
    width, height = size
    scale = float(height)  # pixels per world unit: the picture is 1 high
    rows = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    cols = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    scene = np.empty((height, width, 3), dtype=np.float32)
    scene[:] = background
    scene[(1 - rows[:, 0] / scale) < FLOOR] = floor
    x = _at(frame_times, motion.times, motion.x) * scale
    y = (1 - _at(frame_times, motion.times, motion.y)) * scale
    angle = _at(frame_times, motion.times, motion.angle)
    radii = [body.radius * scale for body in bodies]
    colours = [np.asarray(body.material.colour, dtype=np.float32) for body in bodies]
    frames = np.empty((len(frame_times), height, width, 3), dtype=np.uint8)
    chunk = max(1, _CHUNK_PIXELS // (width * height))
    for start in range(0, len(frame_times), chunk):
        stop = min(start + chunk, len(frame_times))
        image = np.repeat(scene[None], stop - start, axis=0)
        for k, body in enumerate(bodies):
            dx, dy = cols - x[start:stop, k], rows - y[start:stop, k]
            if body.shape == "ball":
                inside = _coverage(radii[k] - np.sqrt(dx * dx + dy * dy))
                mx = x[start:stop, k] + MARKER_OFFSET * radii[k] * np.cos(angle[start:stop, k])
                my = y[start:stop, k] - MARKER_OFFSET * radii[k] * np.sin(angle[start:stop, k])
                marker = _coverage(MARKER_SIZE * radii[k] - np.sqrt((cols - mx) ** 2 + (rows - my) ** 2))
                paint = colours[k] * (1 - (1 - MARKER_SHADE) * np.minimum(marker, inside))[..., None]
            else:
                inside = _coverage(radii[k] - np.maximum(np.abs(dx), np.abs(dy)))
                paint = colours[k]
            alpha = inside[..., None]
            image = image * (1 - alpha) + paint * alpha
        frames[start:stop] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return torch.from_numpy(frames)
