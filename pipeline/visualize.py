"""Pictures of sound and of sync, and the curves behind them, with torch alone (no plotting library).

- `onset_strength`: the evaluation's onset curve (positive spectral flux), `ONSET_RATE` values per second;
- `motion_energy` / `video_motion`: AV-Align's motion curve (mean absolute difference between
  consecutive grey frames), one value per frame at the video's own rate;
- `spectrogram_image` and `sync_plot_image`: ComfyUI IMAGE pictures (float [H, W, 3] in 0..1);
- `preview_frames`: a video's frames at a bounded count and size, for the IMAGE output of Load Video;
- `encode_png`: an RGB picture as PNG bytes (zlib only), for node previews.

The curves are the evaluation's own, so the sync plot shows what onset F1 and AV-Align measure.
"""
from __future__ import annotations

import math
import os
import struct
import zlib
from fractions import Fraction

import torch
import torch.nn.functional as F

from ..media import StreamSpec, as_rate, sample_images, sample_video
from ..models.mel import mel_filterbank as htk_filterbank

ONSET_RATE = 100.0  # curve values per second (10 ms hop)
MOTION_SIZE = 64  # frames are shrunk to this square before differencing: motion, not detail
# Perceptually ordered colours (close to matplotlib's "magma"), low to high.
MAGMA = torch.tensor([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                      [250, 193, 39], [252, 255, 164]], dtype=torch.float32) / 255
ONSET_COLOUR = torch.tensor([1.0, 0.62, 0.2])
MOTION_COLOUR = torch.tensor([0.25, 0.8, 0.95])
_BACKGROUND, _GRID, _TEXT = torch.tensor([0.08, 0.08, 0.1]), torch.tensor([0.22, 0.22, 0.26]), torch.tensor([0.8] * 3)


# Curves -------------------------------------------------------------------------------------------
def mono(waveform: torch.Tensor) -> torch.Tensor:
    """[T], [C, T] or [1, C, T] audio -> float [T] (channels averaged)."""
    waveform = waveform.float()
    while waveform.ndim > 1:
        waveform = waveform.mean(0)
    return waveform


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular filters on the HTK mel scale: [n_mels, n_freqs] over an rfft of n_freqs bins."""
    return htk_filterbank(n_freqs, n_mels, sample_rate, f_min, f_max or sample_rate / 2).T.contiguous()


def log_mel(waveform: torch.Tensor, sample_rate: int, hop: int, n_mels: int = 128, top_db: float = 80.0) -> torch.Tensor:
    """Log-mel power in dB, floored `top_db` below its peak: [n_mels, frames], frame i centred at i * hop."""
    signal = mono(waveform)
    n_fft = 1 << max(8, math.ceil(math.log2(sample_rate * 0.04)))  # ~40 ms windows (2048 at 48 kHz)
    if signal.numel() < n_fft // 2 + 1:
        signal = F.pad(signal, (0, n_fft // 2 + 1 - signal.numel()))
    spectrum = torch.stft(signal, n_fft, hop, window=torch.hann_window(n_fft), center=True, return_complex=True)
    power = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate) @ spectrum.abs().square()
    decibels = 10.0 * torch.log10(power.clamp_min(1e-10))
    return decibels.clamp_min(decibels.max() - top_db)


def onset_strength(waveform: torch.Tensor, sample_rate: int, rate: float = ONSET_RATE) -> torch.Tensor:
    """The evaluation's onset curve (positive spectral flux, `media.analysis`), `rate` values per
    second, so the plot shows exactly what onset F1 is computed from."""
    from ..media.analysis import OnsetParams, onset_strength as evaluation_onsets

    curve, _ = evaluation_onsets(mono(waveform).numpy(), sample_rate, OnsetParams(hop=1.0 / rate))
    return torch.from_numpy(curve).float()


def motion_energy(frames: torch.Tensor) -> torch.Tensor:
    """The motion curve of AV-Align (`media.analysis`): mean absolute grey-level difference
    between consecutive frames of [T, H, W, C] (uint8 or 0..1), scaled to 0..1, one value per frame."""
    from ..media.analysis import grey_frames, motion_curve

    scale = 1.0 if frames.dtype == torch.uint8 else 255.0
    return torch.from_numpy(motion_curve(grey_frames(frames.float() * scale)) / 255.0).float()


def video_motion(source: str | os.PathLike | tuple[torch.Tensor, float], fps: float, start: float = 0.0,
                 duration: float | None = None) -> torch.Tensor:
    """Motion energy of a video file (or `(IMAGE, fps)`) from `start`, one value per frame at `fps`."""
    spec = [StreamSpec("motion", as_rate(fps), "stretch", MOTION_SIZE, "bilinear")]
    if isinstance(source, tuple):
        clip = sample_images(source[0], source[1], spec, start=start, max_duration=duration or None)
    else:
        clip = sample_video(source, spec, start=start, max_duration=duration or None)
    return motion_energy(clip["motion"].frames)


# Frames for display --------------------------------------------------------------------------------
def preview_frames(path: str | os.PathLike, fps: float, display_size: tuple[int, int], start: float = 0.0,
                   duration: float | None = None, max_frames: int = 0, max_side: int = 0
                   ) -> tuple[torch.Tensor, float]:
    """A video's upright frames as IMAGE [N, h, w, 3] in 0..1, and their frame rate.

    At most `max_frames` frames (0: all): a longer clip is sampled at a lower rate so the frames still
    span it. The longer side is at most `max_side` pixels (0: the source's). Frames are decoded into a
    square of that side (so full-size pictures are never held) and brought back to the display aspect.
    """
    width, height = display_size
    rate = as_rate(fps)
    if max_frames and duration and duration * rate > max_frames:
        rate = Fraction(max_frames) / Fraction(duration).limit_denominator(1000)
    side = max(width, height) if not max_side else min(max_side, max(width, height))
    spec = StreamSpec("preview", rate, "stretch", side, "bilinear")
    frames = sample_video(path, [spec], start=start, max_duration=duration or None)["preview"].frames
    out_h, out_w = max(1, round(height * side / max(width, height))), max(1, round(width * side / max(width, height)))
    images = torch.empty(frames.shape[0], out_h, out_w, 3)
    for begin in range(0, frames.shape[0], 32):  # bounded float copies of the square frames
        batch = frames[begin:begin + 32].permute(0, 3, 1, 2).float()
        batch = F.interpolate(batch, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=True)
        images[begin:begin + 32] = batch.permute(0, 2, 3, 1).div_(255.0).clamp_(0, 1)
    return images, float(rate)


# Pictures -------------------------------------------------------------------------------------------
def colormap(values: torch.Tensor, colours: torch.Tensor = MAGMA) -> torch.Tensor:
    """Values in 0..1 (any shape) -> RGB (shape + [3]) by linear interpolation between `colours`."""
    position = values.clamp(0, 1) * (colours.shape[0] - 1)
    low = position.floor().long().clamp_max(colours.shape[0] - 2)
    weight = (position - low).unsqueeze(-1)
    return colours[low] * (1 - weight) + colours[low + 1] * weight


def spectrogram_image(waveform: torch.Tensor, sample_rate: int, width: int = 1024, height: int = 256) -> torch.Tensor:
    """Log-mel spectrogram as IMAGE [height, width, 3]: time left to right, low frequencies at the bottom."""
    decibels = log_mel(waveform, sample_rate, max(1, sample_rate // 100))
    levels = (decibels - decibels.min()) / (decibels.max() - decibels.min()).clamp_min(1e-6)
    levels = F.interpolate(levels.flip(0)[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return colormap(levels[0, 0])


def fit_curve(curve: torch.Tensor, rate: float, seconds: float, columns: int) -> torch.Tensor:
    """A curve sampled at `rate` over `seconds` -> one value per column (peaks kept when shrinking)."""
    length = max(1, round(seconds * rate))
    curve = F.pad(curve.float(), (0, max(0, length - curve.numel())))[:length]
    if length > columns:
        curve = F.adaptive_max_pool1d(curve[None, None], columns)[0, 0]
    else:
        curve = F.interpolate(curve[None, None], size=columns, mode="nearest")[0, 0]
    return curve / curve.max() if curve.max() > 0 else curve


def sync_plot_image(onset: torch.Tensor, onset_rate: float, motion: torch.Tensor, motion_rate: float,
                    seconds: float, width: int = 1024, height: int = 320) -> torch.Tensor:
    """IMAGE [height, width, 3]: video motion energy (filled, cyan) under audio onset strength (orange line),
    both scaled to their own peak on one time axis of `seconds`, with second ticks and a colour key."""
    left, right, top, bottom = 6, 6, 18, 16
    plot_w, plot_h = max(8, width - left - right), max(8, height - top - bottom)
    image = _BACKGROUND.expand(height, width, 3).clone()
    plot = image[top:top + plot_h, left:left + plot_w]
    rows = torch.arange(plot_h, dtype=torch.float32)[:, None]
    step = _tick_step(seconds)
    for k in range(int(seconds / step) + 1):
        x = min(plot_w - 1, round(k * step / max(seconds, 1e-9) * (plot_w - 1)))
        plot[:, x] = _GRID
        label = f"{k * step:g}s"
        label_x = min(max(0, left + x - _text_width(label) // 2), width - _text_width(label))
        _draw_text(image, label, label_x, top + plot_h + 4, _TEXT)
    motion_y = (1 - fit_curve(motion, motion_rate, seconds, plot_w)) * (plot_h - 1)
    plot[rows >= motion_y[None, :]] = MOTION_COLOUR * 0.55
    onset_y = (1 - fit_curve(onset, onset_rate, seconds, plot_w)) * (plot_h - 1)
    previous = torch.cat([onset_y[:1], onset_y[:-1]])
    line = (rows >= torch.minimum(onset_y, previous).floor() - 0.5) & (rows <= torch.maximum(onset_y, previous).ceil() + 0.5)
    plot[line] = ONSET_COLOUR
    x = left
    for label, colour in (("AUDIO ONSET", ONSET_COLOUR), ("VIDEO MOTION", MOTION_COLOUR)):
        image[5:13, x:x + 8] = colour
        x = _draw_text(image, label, x + 11, 4, colour) + 12
    return image


def _tick_step(seconds: float) -> float:
    """A round spacing giving at most ~10 ticks."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if seconds / step <= 10:
            return step
    return 10 ** math.ceil(math.log10(max(seconds, 1) / 10))


# A 3x5 pixel font for the few characters the plots write.
_GLYPHS = {
    "0": "###|#.#|#.#|#.#|###", "1": ".#.|##.|.#.|.#.|###", "2": "###|..#|###|#..|###", "3": "###|..#|.##|..#|###",
    "4": "#.#|#.#|###|..#|..#", "5": "###|#..|###|..#|###", "6": "###|#..|###|#.#|###", "7": "###|..#|..#|.#.|.#.",
    "8": "###|#.#|###|#.#|###", "9": "###|#.#|###|..#|###", ".": "...|...|...|...|.#.", "s": "...|.##|#..|..#|##.",
    "A": ".#.|#.#|###|#.#|#.#", "D": "##.|#.#|#.#|#.#|##.", "E": "###|#..|##.|#..|###", "I": "###|.#.|.#.|.#.|###",
    "M": "#.#|###|###|#.#|#.#", "N": "##.|#.#|#.#|#.#|#.#", "O": ".#.|#.#|#.#|#.#|.#.", "S": ".##|#..|.#.|..#|##.",
    "T": "###|.#.|.#.|.#.|.#.", "U": "#.#|#.#|#.#|#.#|###", "V": "#.#|#.#|#.#|#.#|.#.", " ": "...|...|...|...|...",
    "+": "...|.#.|###|.#.|...", "-": "...|...|###|...|...", "C": ".##|#..|#..|#..|.##", "Y": "#.#|#.#|.#.|.#.|.#.",
    "L": "#..|#..|#..|#..|###", "R": "##.|#.#|##.|#.#|#.#", "F": "###|#..|##.|#..|#..", ":": "...|.#.|...|.#.|...",
}


def _text_width(text: str, scale: int = 2) -> int:
    return len(text) * 4 * scale - scale


def _draw_text(image: torch.Tensor, text: str, x: int, y: int, colour: torch.Tensor, scale: int = 2) -> int:
    """Write `text` with its top-left corner at (x, y), clipped to the image; returns the x after it."""
    height, width = image.shape[:2]
    for char in text:
        glyph = _GLYPHS.get(char, _GLYPHS[" "])
        mask = torch.tensor([[c == "#" for c in row] for row in glyph.split("|")])
        mask = mask.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + mask.shape[1], width), min(y + mask.shape[0], height)
        if x1 > x0 and y1 > y0:
            image[y0:y1, x0:x1][mask[y0 - y:y1 - y, x0 - x:x1 - x]] = colour
        x += mask.shape[1] + scale
    return x


def encode_png(image: torch.Tensor) -> bytes:
    """IMAGE [H, W, 3] in 0..1 (or uint8) -> PNG bytes (8-bit RGB, no filtering)."""
    pixels = image[..., :3] if image.dtype == torch.uint8 else (image[..., :3].float() * 255).round().clamp(0, 255)
    pixels = pixels.to(torch.uint8).contiguous()
    height, width = pixels.shape[:2]
    rows = torch.cat([torch.zeros(height, 1, dtype=torch.uint8), pixels.reshape(height, width * 3)], dim=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.numpy().tobytes(), 6))
            + chunk(b"IEND", b""))
