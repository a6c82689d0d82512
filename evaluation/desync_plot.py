"""A picture of a sync curve: the sound's offset against the picture, window by window, over time.

IMAGE [height, width, 3] in 0..1 (ComfyUI's layout), torch alone: the offset axis spans the offset
head's -2..2 s (late sounds up), a bright line at 0, each window's offset as a dot joined by a line
(in the window's colour: green in sync, yellow within 0.2 s, red beyond), second ticks below and the
DeSync in the corner. The same fonts and colours as the sync plot (`pipeline.visualize`).
"""
from __future__ import annotations

import torch

from ..pipeline.visualize import _BACKGROUND, _GRID, _TEXT, _draw_text, _text_width, _tick_step
from .desync import SyncCurve

RANGE_SECONDS = 2.0
_ZERO = torch.tensor([0.55, 0.55, 0.6])
_GOOD, _NEAR, _BAD = torch.tensor([0.3, 0.85, 0.4]), torch.tensor([0.95, 0.8, 0.25]), torch.tensor([0.95, 0.3, 0.25])


def _colour(offset: float) -> torch.Tensor:
    return _GOOD if abs(offset) < 0.1 else _NEAR if abs(offset) < 0.3 else _BAD


def offset_curve_image(curve: SyncCurve, seconds: float, index: int = 0, width: int = 1024,
                       height: int = 200) -> torch.Tensor:
    """IMAGE [height, width, 3] of take `index`'s offsets over a clip of `seconds`."""
    left, right, top, bottom = 40, 6, 18, 16
    plot_w, plot_h = max(8, width - left - right), max(8, height - top - bottom)
    image = _BACKGROUND.expand(height, width, 3).clone()
    plot = image[top:top + plot_h, left:left + plot_w]
    span = max(seconds, 1e-6)

    def row(offset: float) -> int:
        return round((RANGE_SECONDS - max(-RANGE_SECONDS, min(RANGE_SECONDS, offset))) / (2 * RANGE_SECONDS)
                     * (plot_h - 1))

    def column(time: float) -> int:
        return min(plot_w - 1, max(0, round(time / span * (plot_w - 1))))

    for level, label in ((2.0, "+2s"), (1.0, "+1s"), (0.0, "0"), (-1.0, "-1s"), (-2.0, "-2s")):
        plot[row(level)] = _ZERO if level == 0 else _GRID
        _draw_text(image, label, 2, top + row(level) - 5, _TEXT)
    step = _tick_step(seconds)
    for k in range(int(seconds / step + 1e-9) + 1):
        x = column(k * step)
        plot[:, x][plot[:, x].eq(_BACKGROUND).all(-1)] = _GRID * 0.8
        label = f"{k * step:g}s"
        _draw_text(image, label, min(max(0, left + x - _text_width(label) // 2), width - _text_width(label)),
                   top + plot_h + 4, _TEXT)
    points = [(column(float(t)), row(float(o)), float(o)) for t, o in zip(curve.times, curve.offsets[index])]
    for (x0, y0, _), (x1, y1, offset) in zip(points, points[1:]):  # joining lines, a handful of windows
        count = max(abs(x1 - x0), abs(y1 - y0)) + 1
        xs = torch.linspace(x0, x1, count).round().long()
        ys = torch.linspace(y0, y1, count).round().long()
        plot[ys, xs] = _colour(offset) * 0.7
    for x, y, offset in points:
        plot[max(0, y - 2):y + 3, max(0, x - 2):x + 3] = _colour(offset)
    _draw_text(image, f"DESYNC {float(curve.desync[index]):.2f}s", left, 4, _TEXT)
    _draw_text(image, "SOUND LATE +", width - _text_width("SOUND LATE +") - right, 4, _TEXT)
    return image
