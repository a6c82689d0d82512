"""Per-frame picture transforms: upright rotation, encoder resizing, model normalisation.

Resizing follows torchvision's `Resize` on uint8 tensors (what the reference's preprocessing runs):
`torch.nn.functional.interpolate` with antialias=True directly on uint8 (torchvision's native CPU
uint8 path), `int(size * long / short)` for the long side, and `round((new - crop) / 2)` crop offsets.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

ResizePolicy = Literal["stretch", "short_side_center_crop", "none"]
Interpolation = Literal["bilinear", "bicubic"]
RESIZE_POLICIES: tuple[str, ...] = ("stretch", "short_side_center_crop", "none")
INTERPOLATIONS: tuple[str, ...] = ("bilinear", "bicubic")


def normalize_rotation(degrees: float) -> int:
    """Snap a display rotation to one of 0, 90, 180, -90 (counter-clockwise degrees)."""
    quarter_turns = round(float(degrees) / 90) % 4
    return (0, 90, 180, -90)[quarter_turns]


def rotate_upright(image: np.ndarray | torch.Tensor, rotation: int) -> torch.Tensor:
    """Turn an [H, W, C] picture `rotation` degrees counter-clockwise (PyAV's `VideoFrame.rotation`).

    A portrait phone video is stored landscape with rotation -90: turning it by -90 (clockwise)
    shows it upright, as players do.
    """
    tensor = torch.from_numpy(image) if isinstance(image, np.ndarray) else image
    quarter_turns = round(normalize_rotation(rotation) / 90) % 4
    if quarter_turns == 0:
        return tensor
    # torch.rot90 from dim 0 towards dim 1 turns the displayed picture counter-clockwise.
    return torch.rot90(tensor, quarter_turns, dims=(0, 1)).contiguous()


def resized_shape(height: int, width: int, policy: ResizePolicy, size: int) -> tuple[int, int]:
    """Size after the resize step of `policy` (before any crop)."""
    if policy == "stretch":
        return size, size
    if policy == "short_side_center_crop":
        if height <= width:
            return size, int(size * width / height)
        return int(size * height / width), size
    return height, width


def resize_frame(image: torch.Tensor, policy: ResizePolicy, size: int, interpolation: Interpolation) -> torch.Tensor:
    """Resize one uint8 [H, W, 3] picture for an encoder; returns a contiguous uint8 [h, w, 3].

    'stretch' -> size x size ignoring aspect (SigLIP2); 'short_side_center_crop' -> short side to size,
    then the central size x size (Synchformer); 'none' -> unchanged.
    """
    if policy == "none":
        return image.contiguous()
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; use one of {RESIZE_POLICIES}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; use one of {INTERPOLATIONS}")
    height, width = image.shape[0], image.shape[1]
    new_height, new_width = resized_shape(height, width, policy, size)
    # [H,W,C] -> [1,C,H,W] as a view is channels-last, the layout the uint8 kernels are fastest on.
    batch = image.permute(2, 0, 1).unsqueeze(0)
    if (new_height, new_width) != (height, width):
        batch = F.interpolate(batch, size=(new_height, new_width), mode=interpolation,
                              align_corners=False, antialias=True)
    if policy == "short_side_center_crop":
        top = int(round((new_height - size) / 2.0))
        left = int(round((new_width - size) / 2.0))
        batch = batch[:, :, top:top + size, left:left + size]
    return batch[0].permute(1, 2, 0).contiguous()


def to_model_input(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [T, 3, H, W] in [-1, 1] (mean 0.5, std 0.5, as both encoders expect)."""
    return frames.permute(0, 3, 1, 2).to(dtype, memory_format=torch.contiguous_format).div_(127.5).sub_(1.0)


def images_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE float [..., H, W, C] in 0..1 -> uint8 [..., H, W, 3] (alpha dropped, grey expanded)."""
    channels = images.shape[-1]
    if channels == 1:
        images = images.expand(*images.shape[:-1], 3)
    elif channels >= 3:
        images = images[..., :3]
    else:
        raise ValueError(f"IMAGE must have 1, 3 or 4 channels, got {channels}")
    if images.dtype == torch.uint8:
        return images.contiguous()
    return images.float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
