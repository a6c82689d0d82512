"""The four materials of the synthetic world: each ties a colour to how an object moves and sounds.

The colour is the only visual cue to the material, so a model that hears the right timbre has read
the colour; the caption names both.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Material:
    name: str
    adjective: str  # as a caption says it: "a wooden block"
    colour_name: str
    colour: tuple[int, int, int]  # sRGB 0..255
    restitution: float  # share of the normal speed kept by a bounce
    sliding_friction: float  # deceleration of a sliding block, in units of g
    frequency_range: tuple[float, float]  # Hz range of the lowest mode, drawn per object
    mode_ratios: tuple[float, ...]  # mode frequencies relative to the lowest
    mode_gains: tuple[float, ...]
    decay: float  # seconds for the lowest mode to fall by 1/e; higher modes die faster
    decay_exponent: float  # mode k decays in decay / ratio_k ** decay_exponent
    click: float  # level of the broadband contact transient relative to the modes
    click_brightness: float  # 0 (dull, low-passed) .. 1 (white)


MATERIALS: dict[str, Material] = {
    # Free-bar modes ring long: a bright metallic clang.
    "metal": Material("metal", "metal", "red", (205, 45, 40), 0.62, 0.25, (520.0, 1100.0),
                      (1.0, 2.76, 5.40, 8.93), (1.0, 0.7, 0.45, 0.3), 0.35, 0.5, 0.5, 1.0),
    # Low, fast-dying modes and a strong click: a knock.
    "wood": Material("wood", "wooden", "blue", (45, 80, 200), 0.5, 0.35, (180.0, 420.0),
                     (1.0, 2.57, 4.2), (1.0, 0.6, 0.3), 0.045, 1.0, 0.8, 0.6),
    # High modes with a medium ring: a ping.
    "glass": Material("glass", "glass", "green", (50, 170, 80), 0.55, 0.2, (1400.0, 2600.0),
                      (1.0, 2.32, 4.25), (1.0, 0.5, 0.25), 0.18, 0.7, 0.4, 1.0),
    # One low mode damped at once and a muffled transient: a thud.
    "rubber": Material("rubber", "rubber", "yellow", (225, 195, 40), 0.8, 0.5, (70.0, 140.0),
                       (1.0, 1.72), (1.0, 0.3), 0.035, 1.0, 0.7, 0.15),
}
SHAPES = {"ball": "disc", "block": "square"}
