"""The demo sync encoder's audio side and offset head: weight-free, with Synchformer's API.

Synchformer measures sync (DeSync) by classifying a 14-segment window of visual and audio tokens into
21 offsets on the -2..2 s grid. The demo world's stand-in does the same by hand:

- audio: mono 16 kHz cut into Synchformer's segments (0.64 s every 0.32 s); the audio tokens are the
  onset strength (`media.analysis`, positive spectral flux) at 6 token times per segment, each the
  peak over its span;
- visual: the impact curve is the centroid kinks at each visual token's own time (`DemoSyncEncoder`'s
  offset-0 kink channels, summed over hues);
- offset logits: the normalised cross-correlation of the two curves at each grid lag (plus a small
  preference for small offsets, so a window with nothing to go on says 0).

Token times: `DemoSyncEncoder.extract_visual` spreads its 8 S tokens evenly over the span its S
segments cover ((S + 1) x 0.32 s, where the DiT puts them), not at Synchformer's segment times. The audio
tokens are spread the same way over the same span, so inside any window both streams share one time
axis (0.32 (S + 1) / S s per segment: offsets read up to 1/S small, far less than the 0.2 s grid step).
Both must therefore come from the same span, one call each (`segment_independent = False`).

Class k means what the release's class k means: the sound is EARLY by `OFFSET_GRID_SECONDS[k]`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..models.synchformer_audio import SAMPLE_RATE, SEGMENT_SAMPLES, SEGMENT_STRIDE_SAMPLES, sample_segments
from ..models.synchformer_head import OFFSET_GRID_SECONDS

AUDIO_TOKENS_PER_SEGMENT = 6
VISUAL_TOKENS_PER_SEGMENT = 8
SEGMENT_SECONDS = SEGMENT_STRIDE_SAMPLES / SAMPLE_RATE  # 0.32 s
FINE_STEPS = 24  # per segment: both token rates (8 and 6) divide it, and 0.2 s is 15 steps
SMOOTHING_SECONDS = 0.03  # both curves are blurred so a lag between grid points still scores
LOGIT_SCALE = 20.0  # correlation (0..1) -> logits
SMALL_OFFSET_PREFERENCE = 0.5  # logits per second of |offset|: ties and empty windows go to 0


def audio_segments(audio: torch.Tensor) -> torch.Tensor:
    """Mono 16 kHz audio `[B, samples]` -> raw segments `[B, S, 10240]` (0.64 s every 0.32 s)."""
    return sample_segments(audio.float())


def rebuild_audio(segments: torch.Tensor) -> torch.Tensor:
    """`[B, S, 10240]` -> the `(S + 1) x 5120` samples they cover, once each: the first halves of
    every segment and the second half of the last."""
    half = SEGMENT_SAMPLES - SEGMENT_STRIDE_SAMPLES
    return torch.cat([segments[:, :, :SEGMENT_STRIDE_SAMPLES].flatten(1), segments[:, -1, half:]], dim=1)


def extract_audio(segments: torch.Tensor) -> torch.Tensor:
    """Raw segments `[B, S, 10240]` -> audio tokens `[B, S, 6, 1]`: the onset-strength peak at each token."""
    from ..media.analysis import onset_strength  # the evaluation's onset curve (numpy)

    count = segments.shape[1]
    waveform = rebuild_audio(segments).cpu().numpy()
    curves = torch.from_numpy(np.stack([onset_strength(row, SAMPLE_RATE)[0] for row in waveform])).float()
    tokens = F.adaptive_max_pool1d(curves[:, None], count * AUDIO_TOKENS_PER_SEGMENT)[:, 0]
    return tokens.unflatten(1, (count, AUDIO_TOKENS_PER_SEGMENT)).unsqueeze(-1).to(segments.device)


def impact_curve(visual: torch.Tensor, kink_channels: slice) -> torch.Tensor:
    """Visual tokens `[B, W, 8, D]` -> `[B, W * 8]`: centroid kinks at each token's time, all hues."""
    return visual[..., kink_channels].float().sum(-1).flatten(1)


def _fine(curve: torch.Tensor, tokens_per_segment: int) -> torch.Tensor:
    """`[B, W * tokens]` -> `[B, W * FINE_STEPS]`, baseline removed, blurred."""
    curve = curve.repeat_interleave(FINE_STEPS // tokens_per_segment, dim=1)
    curve = (curve - curve.median(dim=1, keepdim=True).values).clamp(min=0)
    sigma = SMOOTHING_SECONDS / SEGMENT_SECONDS * FINE_STEPS
    radius = int(3 * sigma)
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    return F.conv1d(curve[:, None], (kernel / kernel.sum())[None, None], padding=radius)[:, 0]


def offset_logits(visual: torch.Tensor, audio: torch.Tensor, kink_channels: slice) -> torch.Tensor:
    """Visual `[B, W, 8, D]` and audio `[B, W, 6, 1]` tokens of one window -> logits `[B, 21]` over
    `OFFSET_GRID_SECONDS` (class k: the sound is early by grid[k], i.e. late by -grid[k])."""
    if visual.shape[:2] != audio.shape[:2]:
        raise ValueError(f"visual and audio windows differ: {tuple(visual.shape[:2])} vs {tuple(audio.shape[:2])} "
                         "(batch, segments)")
    seen = _fine(impact_curve(visual, kink_channels), VISUAL_TOKENS_PER_SEGMENT)
    heard = _fine(audio[..., 0].float().flatten(1), AUDIO_TOKENS_PER_SEGMENT)
    steps_per_second = FINE_STEPS / SEGMENT_SECONDS
    delays = (-OFFSET_GRID_SECONDS * steps_per_second).round().long()  # the sound's delay per class, in steps
    reach = int(delays.abs().max())
    # correlation[b, l] = sum_t seen[b, t] * heard[b, t + l - reach]: the sound `l - reach` steps late.
    batch = seen.shape[0]
    correlation = F.conv1d(F.pad(heard, (reach, reach))[None], seen[:, None], groups=batch)[0]
    norms = seen.norm(dim=1, keepdim=True) * heard.norm(dim=1, keepdim=True)
    score = correlation[:, delays + reach] / norms.clamp(min=1e-8)
    return LOGIT_SCALE * score - SMALL_OFFSET_PREFERENCE * OFFSET_GRID_SECONDS.abs()
