"""Small stand-ins for CLAP, SigLIP2 and Synchformer that the demo model is trained with.

They sit behind the same interfaces as the real encoders (`pipeline.encode`'s protocols), so every
loader, node and command runs them unchanged, in milliseconds and without `transformers`:

- `DemoTextEncoder` (for CLAP): a word-level embedding table, fixed-seed (the DiT's text projection
  learns what to make of it) over the synthetic world's caption vocabulary, other words hashed into
  buckets. Always 77 tokens, padded with the pad embedding, so training and inference see the same
  lengths.
- `DemoImageEncoder` (for SigLIP2, 8 fps): per frame, how much of each hue is seen and where (mass
  and centroid per hue class), a coarse grid of coloured mass and the frame's mean colour.
- `DemoSyncEncoder` (for Synchformer, 25 fps segments of 16 frames, 8 tokens each): the motion of
  each hue class's centroid, whose second difference (a kink: a change of velocity) marks contacts.
  The DiT spreads sync tokens uniformly over the audio (nearest-exact resize), while Synchformer's
  tokens follow segments that overlap by half, so token times and audio times drift apart. The
  stand-in therefore describes each token at the time the DiT will place it: it rebuilds the frame
  sequence from the segments (a clip of whole 8-frame steps, as `encode_video` passes a clip of up
  to 16 s), and reads the motion there. Clips of other lengths are off by at most 7 frames at their end.
  Like Synchformer it also has an audio side and an offset head (`sync_audio.py`, weight-free), so
  DeSync and best-take picking run on the demo too.

Each encoder is a file (safetensors, `metadata["syncfoley_demo"]` names the kind) holding its table
or feature scales; `load_demo_encoder` reads any of them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..models.encoders import TEXT_TOKENS, FrameSpec
from ..models.synchformer_head import OFFSET_GRID_SECONDS
from . import sync_audio

KIND_KEY = "syncfoley_demo"
TEXT_KIND, IMAGE_KIND, SYNC_KIND = "text_encoder", "image_encoder", "sync_encoder"
SEGMENT_FRAMES, SEGMENT_STRIDE, TOKENS_PER_SEGMENT = 16, 8, 8

# The world's caption words (demo/world.py `describe`) get their own rows; others share hash buckets.
WORLD_WORDS = (
    "a", "the", "and", ",", "other", "red", "blue", "green", "yellow", "metal", "wooden", "glass", "rubber", "ball",
    "block", "bounces", "drops", "lands", "tumbles", "on", "onto", "floor", "rolls", "slides", "hits", "wall",
    "knocks", "into", "falls",
)
PAD, HASH_BUCKETS = "<pad>", 160
_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")

HUES = 6  # hue classes, 60 degrees apart from red: red, yellow, green, cyan, blue, magenta
HUE_SHARPNESS = 12.0  # softmax of cos(angle difference): a colour 10 degrees off its class leaks ~3 %
CHROMA_FLOOR, CHROMA_RAMP = 0.25, 0.15  # max-min of RGB (0..1): greys and browns below count as scene
PRESENT_MASS = 0.005  # share of the picture above which a hue's centroid is trusted
GRID = 4
KINK_OFFSETS = (-2.0, -1.0, 0.0, 1.0, 2.0)  # frames around a token's time at which kinks are read
_AT_TOKEN = KINK_OFFSETS.index(0.0)
KINK_CHANNELS = slice(_AT_TOKEN * HUES, (_AT_TOKEN + 1) * HUES)  # the kinks at each token's own time


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _bucket(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % HASH_BUCKETS


class DemoTextEncoder(nn.Module):
    """Prompts -> `[B, 77, D]` word embeddings (row 0 is the pad)."""

    kind = "demo-text"

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)
        self.vocabulary = {word: 1 + i for i, word in enumerate(WORLD_WORDS)}
        self.first_bucket = 1 + len(WORLD_WORDS)

    @classmethod
    def create(cls, dim: int = 64, seed: int = 0) -> "DemoTextEncoder":
        generator = torch.Generator().manual_seed(seed)
        rows = 1 + len(WORLD_WORDS) + HASH_BUCKETS
        return cls(torch.randn(rows, dim, generator=generator) / math.sqrt(dim) * 4)

    @property
    def dim(self) -> int:
        return self.table.shape[1]

    def token_ids(self, prompt: str) -> list[int]:
        ids = [self.vocabulary.get(w, self.first_bucket + _bucket(w)) for w in tokenize(prompt)][:TEXT_TOKENS]
        return ids + [0] * (TEXT_TOKENS - len(ids))

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        ids = torch.tensor([self.token_ids(p) for p in prompts], device=self.table.device)
        return self.table[ids]

    def config(self) -> dict:
        return {"dim": self.dim, "words": list(WORLD_WORDS), "hash_buckets": HASH_BUCKETS}


def hue_weights(frames: torch.Tensor) -> torch.Tensor:
    """`[..., 3, H, W]` in [-1, 1] -> `[..., HUES, H, W]`: each pixel's saturation shared among hue classes."""
    rgb = (frames.float() + 1) / 2
    red, green, blue = rgb.unbind(-3)
    chroma = rgb.amax(-3) - rgb.amin(-3)
    strength = ((chroma - CHROMA_FLOOR) / CHROMA_RAMP).clamp(0, 1)
    angle = torch.atan2((green - blue) * (math.sqrt(3) / 2), red - (green + blue) / 2)
    centres = torch.arange(HUES, device=frames.device, dtype=torch.float32) * (2 * math.pi / HUES)
    membership = torch.softmax(HUE_SHARPNESS * torch.cos(angle.unsqueeze(-3) - centres[:, None, None]), dim=-3)
    return strength.unsqueeze(-3) * membership


def hue_moments(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mass `[..., HUES]` (share of the picture), centroid `[..., HUES, 2]` (x right, y up, 0..1) and
    presence `[..., HUES]` (0..1: how far the mass is above `PRESENT_MASS`)."""
    height, width = weights.shape[-2:]
    xs = (torch.arange(width, device=weights.device, dtype=torch.float32) + 0.5) / width
    ys = 1 - (torch.arange(height, device=weights.device, dtype=torch.float32) + 0.5) / height
    total = weights.sum((-2, -1))
    cx = (weights.sum(-2) * xs).sum(-1) / total.clamp(min=1e-6)
    cy = (weights.sum(-1) * ys).sum(-1) / total.clamp(min=1e-6)
    mass = total / (height * width)
    return mass, torch.stack((cx, cy), -1), (mass / PRESENT_MASS).clamp(max=1.0)


class _FeatureEncoder(nn.Module):
    """Hand-made features times a per-feature scale stored in the file."""

    def __init__(self, scale: torch.Tensor, size: int):
        super().__init__()
        self.register_buffer("feature_scale", scale)
        self.size = size

    @property
    def dim(self) -> int:
        return self.feature_scale.shape[0]

    def config(self) -> dict:
        return {"size": self.size, "fps": self.frame_spec.fps, "dim": self.dim}


class DemoImageEncoder(_FeatureEncoder):
    """Frames `[T, 3, S, S]` (8 fps) -> `[T, 40]`: per hue mass and centroid, a 4x4 grid of coloured
    mass, the mean colour and the mean and spread of saturation and brightness."""

    kind = "demo-image"

    DIM = 3 * HUES + GRID * GRID + 6

    @classmethod
    def create(cls, size: int = 64) -> "DemoImageEncoder":
        scale = torch.cat([torch.full((HUES,), 30.0), torch.full((2 * HUES,), 2.0), torch.full((GRID * GRID,), 3.0),
                           torch.full((6,), 2.0)])
        return cls(scale, size)

    @property
    def frame_spec(self) -> FrameSpec:
        return FrameSpec(fps=8, size=self.size, resize="stretch", interpolation="bilinear")

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.to(self.feature_scale.device, torch.float32)
        weights = hue_weights(frames)
        mass, centre, presence = hue_moments(weights)
        placed = (centre - 0.5) * presence.unsqueeze(-1)  # absent hues sit at the centre
        grid = F.adaptive_avg_pool2d(weights.sum(-3), GRID).flatten(1)
        rgb = (frames + 1) / 2
        brightness = rgb.mean(1)
        saturation = weights.sum(-3)
        scene = torch.cat([rgb.mean((-2, -1)) - 0.5, torch.stack([saturation.mean((-2, -1)),
                           saturation.std((-2, -1)), brightness.std((-2, -1))], -1)], -1)
        features = torch.cat([mass, placed[..., 0], placed[..., 1], grid, scene], -1)
        return features * self.feature_scale


class DemoSyncEncoder(_FeatureEncoder):
    """Segments `[B, S, 16, 3, s, s]` (25 fps) -> `[B, S, 8, 48]`: per hue, centroid kinks around the
    token's time (5 offsets), centroid speed, mass and height at it."""

    kind = "demo-sync"

    DIM = HUES * (len(KINK_OFFSETS) + 3)

    @classmethod
    def create(cls, size: int = 64) -> "DemoSyncEncoder":
        scale = torch.cat([torch.full((HUES * len(KINK_OFFSETS),), 10.0), torch.full((HUES,), 10.0),
                           torch.full((HUES,), 30.0), torch.full((HUES,), 2.0)])
        return cls(scale, size)

    @property
    def frame_spec(self) -> FrameSpec:
        return FrameSpec(fps=25, size=self.size, resize="stretch", interpolation="bilinear")

    @torch.no_grad()
    def extract_visual(self, segments: torch.Tensor) -> torch.Tensor:
        batch, count = segments.shape[:2]
        segments = segments.to(self.feature_scale.device, torch.float32)
        # Consecutive segments overlap by a stride: their first halves and the last one's second half
        # are the clip's frames, once each.
        frames = torch.cat([segments[:, :, :SEGMENT_STRIDE].flatten(1, 2), segments[:, -1, SEGMENT_STRIDE:]], 1)
        mass, centre, presence = hue_moments(hue_weights(frames))  # [B, T, H], [B, T, H, 2]
        trusted = torch.minimum(torch.minimum(presence[:, :-2], presence[:, 1:-1]), presence[:, 2:])
        kink = (centre[:, 2:] - 2 * centre[:, 1:-1] + centre[:, :-2]).norm(dim=-1) * trusted
        speed = (centre[:, 2:] - centre[:, :-2]).norm(dim=-1) / 2 * trusted
        kink, speed = F.pad(kink, (0, 0, 1, 1)), F.pad(speed, (0, 0, 1, 1))
        height = (centre[..., 1] - 0.5) * presence
        # Token i is spread by the DiT over audio time (i + 0.5) / tokens * clip, i.e. at this frame position.
        tokens = count * TOKENS_PER_SEGMENT
        frame_count = frames.shape[1]
        position = (torch.arange(tokens, device=frames.device) + 0.5) * (frame_count / tokens)
        kinks = [_at(kink, position + offset) for offset in KINK_OFFSETS]
        features = torch.cat([*kinks, _at(speed, position), _at(mass, position), _at(height, position)], -1)
        return (features * self.feature_scale).unflatten(1, (count, TOKENS_PER_SEGMENT))

    # Synchformer's audio side and offset head, weight-free (demo/sync_audio.py), so DeSync runs on the demo.
    audio_sample_rate = sync_audio.SAMPLE_RATE
    segment_independent = False  # tokens are spread over the span of one call: one call per clip
    offset_segments = 14  # Synchformer's window (4.8 s)
    min_offset_segments = 8  # shorter clips take one window of all their segments, down to this (2.88 s)
    offset_grid = OFFSET_GRID_SECONDS

    def audio_segments(self, audio: torch.Tensor) -> torch.Tensor:
        """Mono 16 kHz audio `[B, samples]` -> raw segments `[B, S, 10240]` (Synchformer's 0.64 s every 0.32 s)."""
        return sync_audio.audio_segments(audio)

    @torch.no_grad()
    def extract_audio(self, segments: torch.Tensor) -> torch.Tensor:
        """`[B, S, 10240]` -> `[B, S, 6, 1]`: onset strength at each audio token's time."""
        return sync_audio.extract_audio(segments)

    @torch.no_grad()
    def offset_logits(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """One window of visual `[B, W, 8, 48]` and audio `[B, W, 6, 1]` tokens -> logits `[B, 21]`
        over `offset_grid`: the cross-correlation of impacts seen and onsets heard at each offset."""
        return sync_audio.offset_logits(visual, audio, KINK_CHANNELS)


def _at(series: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """`series [B, T, C]` linearly interpolated at fractional frame `position [N]` (frame f at f) -> `[B, N, C]`."""
    last = series.shape[1] - 1
    position = position.clamp(0, last)
    low = position.floor().long().clamp(max=max(last - 1, 0))
    frac = (position - low).unsqueeze(-1)
    high = (low + 1).clamp(max=last)
    return series[:, low] * (1 - frac) + series[:, high] * frac


ENCODERS = {TEXT_KIND: DemoTextEncoder, IMAGE_KIND: DemoImageEncoder, SYNC_KIND: DemoSyncEncoder}


def save_demo_encoder(encoder: nn.Module, path: str | os.PathLike) -> Path:
    from safetensors.torch import save_file

    kind = next(k for k, cls in ENCODERS.items() if isinstance(encoder, cls))
    tensors = {name: t.detach().contiguous().cpu() for name, t in encoder.state_dict().items()}
    save_file(tensors, str(path), metadata={KIND_KEY: kind, "config": json.dumps(encoder.config())})
    return Path(path)


def demo_encoder_kind(path: str | os.PathLike) -> str | None:
    """The demo encoder kind a file holds, or None for any other file (or folder)."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in (".safetensors", ".sft"):
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            return (handle.metadata() or {}).get(KIND_KEY)
    except Exception:  # not a readable safetensors file: not ours  # noqa: BLE001
        return None


def load_demo_encoder(path: str | os.PathLike, kind: str, device=None) -> nn.Module:
    """Read a demo encoder file of `kind`; a file of another kind raises ValueError naming what it holds."""
    from ..models.checkpoint import CheckpointError, read_checkpoint

    found = demo_encoder_kind(path)
    if found != kind:
        what = f"the demo {found.replace('_', ' ')}" if found else "not a demo encoder"
        raise CheckpointError(f"'{path}' is {what}; expected the demo {kind.replace('_', ' ')}")
    checkpoint = read_checkpoint(path, device="cpu")
    state = checkpoint.state_dict
    config = json.loads(checkpoint.metadata.get("config", "{}"))
    if kind == TEXT_KIND:
        if config.get("words", list(WORLD_WORDS)) != list(WORLD_WORDS) or config.get("hash_buckets") != HASH_BUCKETS:
            raise CheckpointError(f"'{path}' was written for another vocabulary than this version's demo encoder")
        encoder = DemoTextEncoder(state["table"].float())
    else:
        encoder = ENCODERS[kind](state["feature_scale"].float(), int(config.get("size", 64)))
    return encoder.to(device or "cpu").eval()
