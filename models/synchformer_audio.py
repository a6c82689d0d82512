"""The audio side of Synchformer: the log-mel front end and the AST feature extractor.

Front end (the release's test-time transforms, re-implemented with torch ops; torchaudio is not used):
- mono 16 kHz audio cut into 0.64 s segments (10240 samples) every 0.32 s (5120 samples), so audio
  segment i covers the same time as visual segment i (16 frames every 8 at 25 fps);
- `torchaudio.transforms.MelSpectrogram(sample_rate=16000, win_length=400, hop_length=160, n_fft=1024,
  n_mels=128)` with its defaults: periodic Hann window of 400 zero-padded (centred) to 1024, centred
  frames with reflect padding, power 2, HTK mel scale from 0 to 8 kHz, no filter normalisation
  -> 65 frames per segment;
- `log(mel + 1e-6)`, zero-padded (in the log domain) or truncated to 66 frames;
- `(x - (-4.2677393)) / (2 * 4.5689974)` (the AudioSet statistics of AST, half-scaled).

AST (transformers' Audio Spectrogram Transformer layout with the release's key names): 16x16 patches
with stride 10 over (128 mel, 66 frames) -> 12 x 6 patches, plus CLS and distillation tokens; 12 pre-norm
layers with LayerNorm eps 1e-12 and exact GELU; a final LayerNorm. `freq_attn_agg` then pools the 12
frequency tokens of each time step, giving 6 tokens per segment.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mel import mel_filterbank
from .motionformer import ClsPooling, merge_heads, split_heads
from .ops import CastOps, cast_to

SAMPLE_RATE = 16000
SEGMENT_SAMPLES = 10240  # 0.64 s = 16 video frames at 25 fps
SEGMENT_STRIDE_SAMPLES = 5120  # 0.32 s = 8 video frames
N_FFT = 1024
WIN_LENGTH = 400
HOP_LENGTH = 160
N_MELS = 128
SPEC_FRAMES = 66
LOG_EPS = 1e-6
AST_MEAN = -4.2677393
AST_STD = 4.5689974
AST_NORM_EPS = 1e-12


# ----------------------------------------------------------------------------------------------
# Front end
# ----------------------------------------------------------------------------------------------
def htk_mel_filterbank(
    n_freqs: int = N_FFT // 2 + 1, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE,
    f_min: float = 0.0, f_max: float | None = None,
) -> torch.Tensor:
    """Triangular filters on the HTK mel scale, unnormalised: `[n_freqs, n_mels]` (torchaudio's layout)."""
    f_max = float(sample_rate // 2) if f_max is None else f_max
    return mel_filterbank(n_freqs, n_mels, sample_rate, f_min, f_max, scale="htk", norm=None)


def mel_spectrogram(audio: torch.Tensor) -> torch.Tensor:
    """Power mel spectrogram of 16 kHz audio `[..., samples]` -> `[..., 128, 1 + samples // 160]` (fp32)."""
    flat = audio.float().reshape(-1, audio.shape[-1])
    window = torch.hann_window(WIN_LENGTH, periodic=True, device=audio.device)
    spectrum = torch.stft(flat, N_FFT, HOP_LENGTH, WIN_LENGTH, window, center=True, pad_mode="reflect",
                          normalized=False, onesided=True, return_complex=True)
    power = spectrum.real.square() + spectrum.imag.square()  # [M, 513, frames]
    mel = torch.matmul(power.transpose(1, 2), htk_mel_filterbank().to(audio.device)).transpose(1, 2)
    return mel.reshape(*audio.shape[:-1], *mel.shape[1:])


def sample_segments(audio: torch.Tensor) -> torch.Tensor:
    """`[B, samples]` at 16 kHz -> `[B, S, 10240]` raw samples, S = (samples - 10240) // 5120 + 1 (a view)."""
    if audio.shape[-1] < SEGMENT_SAMPLES:
        raise ValueError(f"audio of {audio.shape[-1]} samples is shorter than one 0.64 s segment "
                         f"({SEGMENT_SAMPLES} samples at {SAMPLE_RATE} Hz)")
    return audio.unfold(-1, SEGMENT_SAMPLES, SEGMENT_STRIDE_SAMPLES)


def log_mel_segments(audio: torch.Tensor) -> torch.Tensor:
    """AST input from mono 16 kHz audio: `[B, samples]` -> `[B, S, 128, 66]`, normalised."""
    log_mel = torch.log(mel_spectrogram(sample_segments(audio)) + LOG_EPS)
    missing = SPEC_FRAMES - log_mel.shape[-1]
    log_mel = F.pad(log_mel, (0, missing)) if missing > 0 else log_mel[..., :SPEC_FRAMES]
    return (log_mel - AST_MEAN) / (2 * AST_STD)


# ----------------------------------------------------------------------------------------------
# AST
# ----------------------------------------------------------------------------------------------
class _Dense(nn.Module):
    """The `.dense` level of transformers' key names."""

    def __init__(self, in_dim: int, out_dim: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.dense = operations.Linear(in_dim, out_dim, device=device, dtype=dtype)


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        self.query = operations.Linear(dim, dim, device=device, dtype=dtype)
        self.key = operations.Linear(dim, dim, device=device, dtype=dtype)
        self.value = operations.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(proj(x), self.heads) for proj in (self.query, self.key, self.value))
        return merge_heads(F.scaled_dot_product_attention(q, k, v))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.attention = _SelfAttention(dim, heads, operations, device, dtype)
        self.output = _Dense(dim, dim, operations, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output.dense(self.attention(x))


class ASTLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_hidden: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.attention = _Attention(dim, heads, operations, device, dtype)
        self.intermediate = _Dense(dim, mlp_hidden, operations, device, dtype)
        self.output = _Dense(mlp_hidden, dim, operations, device, dtype)
        self.layernorm_before = operations.LayerNorm(dim, eps=AST_NORM_EPS, device=device, dtype=dtype)
        self.layernorm_after = operations.LayerNorm(dim, eps=AST_NORM_EPS, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class _Embeddings(nn.Module):
    def __init__(self, dim: int, tokens: int, patch: int, stride: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim, **kw))
        self.distillation_token = nn.Parameter(0.02 * torch.randn(1, 1, dim, **kw))
        self.position_embeddings = nn.Parameter(0.02 * torch.randn(1, tokens + 2, dim, **kw))
        self.patch_embeddings = nn.Module()
        self.patch_embeddings.projection = operations.Conv2d(1, dim, patch, stride=stride, **kw)

    def forward(self, spectrogram: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """`[N, mels, frames]` -> (`[N, 2 + f*t, D]`, (f, t)); patches are ordered frequency-major."""
        patches = self.patch_embeddings.projection(spectrogram.unsqueeze(1))  # [N, D, f, t]
        grid = tuple(patches.shape[2:])
        tokens = patches.flatten(2).transpose(1, 2)
        extra = torch.cat([self.cls_token, self.distillation_token], dim=1)
        extra = cast_to(extra, tokens).expand(tokens.shape[0], -1, -1)
        if tokens.shape[1] + 2 != self.position_embeddings.shape[1]:
            raise ValueError(f"AST expects {self.position_embeddings.shape[1] - 2} patches, got {grid}")
        return torch.cat([extra, tokens], dim=1) + cast_to(self.position_embeddings, tokens), grid


class AudioSpectrogramTransformer(nn.Module):
    """transformers' ASTModel (`embeddings`, `encoder.layer.N`, `layernorm`) returning the last hidden state."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_hidden: int, tokens: int, patch: int, stride: int,
                 operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.embeddings = _Embeddings(dim, tokens, patch, stride, operations, device, dtype)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(
            ASTLayer(dim, heads, mlp_hidden, operations, device, dtype) for _ in range(depth))
        self.layernorm = operations.LayerNorm(dim, eps=AST_NORM_EPS, device=device, dtype=dtype)

    def forward(self, spectrogram: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x, grid = self.embeddings(spectrogram)
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x), grid


class ASTFeatureExtractor(nn.Module):
    """Log-mel segments `[N, mels, frames]` -> per-time-step features `[N, t, D]` (t = 6 in the release)."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, mlp_hidden: int = 3072,
                 mels: int = N_MELS, frames: int = SPEC_FRAMES, patch: int = 16, stride: int = 10,
                 operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.mels, self.frames = mels, frames
        tokens = ((mels - patch) // stride + 1) * ((frames - patch) // stride + 1)
        self.ast = AudioSpectrogramTransformer(dim, depth, heads, mlp_hidden, tokens, patch, stride,
                                               operations, device, dtype)
        self.freq_attn_agg = ClsPooling(dim, heads, mlp_hidden, operations, device, dtype)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        if tuple(spectrogram.shape[1:]) != (self.mels, self.frames):
            raise ValueError(f"AST expects log-mel segments [N, {self.mels}, {self.frames}], "
                             f"got {list(spectrogram.shape)}")
        hidden, (freq, steps) = self.ast(spectrogram)
        grid = hidden[:, 2:].unflatten(1, (freq, steps))  # [N, f, t, D]
        pooled = self.freq_attn_agg(grid.transpose(1, 2).flatten(0, 1))  # [N*t, D]
        return pooled.unflatten(0, (spectrogram.shape[0], steps))
