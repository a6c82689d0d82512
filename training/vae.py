"""Train a (small) DAC-VAE from scratch on the audio of a folder of videos: `syncfoley train-vae RECIPE`.

The objective is reconstruction (a multi-resolution STFT loss: spectral convergence and L1 of square-root
magnitudes at several window sizes, optionally plus waveform L1) of a posterior sample, plus a small KL to N(0, 1).
Random crops of the clips are read from memory each step with a seeded generator, so a run is
repeatable. The DiT's output is decoded directly (there is no latent scaling), so the export folds a
normalisation into the VAE's 1x1 bottleneck convolutions: the latent means of the training audio
become zero-mean per channel with unit RMS overall, and the decoder undoes it. The recipe (TOML):

    name = "vae"                   # output: <output>/<name>.safetensors
    output = "runs/vae"            # relative to the recipe, as every path
    [data]
    videos = "clips"               # folder of videos with sound (searched recursively)
    max_clips = 0                  # 0 = all
    crop_seconds = 0.64            # a multiple of the hop (one latent)
    edge_crops = 0.25              # share of crops that start at a clip's start or end at its end
    batch_size = 16
    [model]                        # DacVaeConfig
    encoder_dim = 8
    encoder_rates = [4, 8, 10]
    latent_dim = 32
    decoder_dim = 64
    decoder_rates = [10, 8, 4]
    sample_rate = 16000
    [loss]
    stft_windows = [128, 512, 2048]
    magnitude_weight = 10.0        # square-root magnitude L1 beside spectral convergence, per window size
    stft_weight = 1.0
    waveform_weight = 0.0          # waveform L1 (its phase-exact target pulls a young decoder to silence)
    kl_weight = 0.001
    [optim]
    learning_rate = 1e-3
    betas = [0.8, 0.99]
    weight_decay = 0.0
    max_grad_norm = 100.0
    warmup_steps = 50
    min_lr_ratio = 0.1             # cosine decay to this share of the learning rate
    [train]
    max_steps = 1000
    seed = 0
    log_every = 25
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .config import ConfigError, _path, read_recipe, recipe_from_dict


@dataclass
class VaeData:
    videos: str = _path()
    max_clips: int = 0
    crop_seconds: float = 0.64
    edge_crops: float = 0.25
    batch_size: int = 16


@dataclass
class VaeModel:
    encoder_dim: int = 8
    encoder_rates: tuple[int, ...] = (4, 8, 10)
    latent_dim: int = 32
    decoder_dim: int = 64
    decoder_rates: tuple[int, ...] = (10, 8, 4)
    sample_rate: int = 16000

    def dac_config(self):
        from ..models.dac_vae import DacVaeConfig

        try:
            return DacVaeConfig(**asdict(self))
        except ValueError as error:
            raise ConfigError(f"[model] {error}") from None


@dataclass
class VaeLoss:
    stft_windows: tuple[int, ...] = (128, 512, 2048)
    magnitude_weight: float = 10.0
    stft_weight: float = 1.0
    waveform_weight: float = 0.0
    kl_weight: float = 1e-3


@dataclass
class VaeOptim:
    learning_rate: float = 1e-3
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.0
    max_grad_norm: float = 100.0
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1

    def factor(self, step: int, max_steps: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, max_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class VaeRun:
    max_steps: int = 1000
    seed: int = 0
    log_every: int = 25


SECTIONS = {"data": VaeData, "model": VaeModel, "loss": VaeLoss, "optim": VaeOptim, "train": VaeRun}


@dataclass
class VaeTrainConfig:
    data: VaeData = field(default_factory=VaeData)
    model: VaeModel = field(default_factory=VaeModel)
    loss: VaeLoss = field(default_factory=VaeLoss)
    optim: VaeOptim = field(default_factory=VaeOptim)
    train: VaeRun = field(default_factory=VaeRun)
    name: str = "vae"
    output: str = "runs/vae"

    def validate(self) -> "VaeTrainConfig":
        config = self.model.dac_config()
        hop_seconds = config.hop_length / config.sample_rate
        crops = self.data.crop_seconds / hop_seconds
        checks = [
            (bool(self.data.videos), "[data] videos is required: the folder of videos with sound"),
            (self.data.crop_seconds > 0 and abs(crops - round(crops)) < 1e-6,
             f"[data] crop_seconds must be a positive multiple of the hop ({hop_seconds:g} s)"),
            (self.data.batch_size >= 1 and self.data.max_clips >= 0, "[data] batch_size >= 1, max_clips >= 0"),
            (0 <= self.data.edge_crops <= 1, "[data] edge_crops must be a share in [0, 1]"),
            (all(w >= 16 for w in self.loss.stft_windows) and self.loss.stft_windows, "[loss] stft_windows >= 16"),
            (min(self.loss.stft_weight, self.loss.waveform_weight, self.loss.kl_weight, self.loss.magnitude_weight) >= 0, "[loss] weights >= 0"),
            (self.optim.learning_rate > 0 and self.optim.warmup_steps >= 0, "[optim] learning_rate > 0"),
            (self.train.max_steps >= 1 and self.train.log_every >= 1, "[train] max_steps and log_every >= 1"),
            (bool(self.name) and "/" not in self.name, "name must be a plain file stem"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    @property
    def output_path(self) -> Path:
        return Path(self.output) / f"{self.name}.safetensors"


def load_vae_config(path: str | os.PathLike, overrides: dict | None = None) -> VaeTrainConfig:
    """Read a VAE recipe; relative paths are relative to the recipe file."""
    table, base_dir = read_recipe(path, overrides)
    return recipe_from_dict(VaeTrainConfig, SECTIONS, ("name", "output"), table, base_dir, str(path))


# Losses ---------------------------------------------------------------------------------------------
def stft_loss(predicted: torch.Tensor, target: torch.Tensor, windows: tuple[int, ...],
              magnitude_weight: float = 10.0) -> torch.Tensor:
    """Mean over window sizes of spectral convergence + `magnitude_weight` x L1 of square-root
    magnitudes (scaled so a full-scale sine peaks at 1); inputs `[B, T]`.

    Square roots rather than logs: a log distance rewards matching the faint noise floor that fills
    most of a clip of sparse impacts, and from a fresh decoder the quickest way there is silence,
    where training stalls; square roots keep a strong pull towards the sounds themselves."""
    total = predicted.new_zeros(())
    for size in windows:
        window = torch.hann_window(size, device=predicted.device)
        estimate, reference = (torch.stft(x, size, size // 4, window=window, return_complex=True).abs()
                               * (2 / window.sum()) for x in (predicted, target))
        convergence = (reference - estimate).norm() / reference.norm().clamp(min=1e-7)
        compressed = ((estimate + 1e-6).sqrt() - (reference + 1e-6).sqrt()).abs().mean()
        total = total + convergence + magnitude_weight * compressed
    return total / len(windows)


def vae_losses(vae, audio: torch.Tensor, settings: VaeLoss, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Loss terms for a batch of crops `[B, 1, T]`."""
    mean, logvar = vae.encode(audio)
    noise = torch.randn(mean.shape, generator=generator)
    reconstruction = vae.decode(mean + torch.exp(0.5 * logvar) * noise, chunk_latents=None)
    waveform = (reconstruction - audio).abs().mean()
    spectral = stft_loss(reconstruction[:, 0], audio[:, 0], settings.stft_windows, settings.magnitude_weight)
    kl = vae.kl_divergence(mean, logvar).mean()
    loss = settings.stft_weight * spectral + settings.waveform_weight * waveform + settings.kl_weight * kl
    return {"loss": loss, "stft": spectral.detach(), "l1": waveform.detach(), "kl": kl.detach()}


# Data -------------------------------------------------------------------------------------------------
def load_clip_audio(folder: str | os.PathLike, sample_rate: int, max_clips: int = 0) -> list[torch.Tensor]:
    """Mono audio `[T]` of every video under `folder` (sorted), at `sample_rate`."""
    from ..media import MediaError, load_audio
    from .data import discover_videos

    clips = []
    for item in discover_videos(folder)[: max_clips or None]:
        try:
            audio, _ = load_audio(item.path, sample_rate, channels=1)
        except MediaError:
            continue
        clips.append(audio[0])
    if not clips:
        raise ValueError(f"no video with sound under '{folder}'")
    return clips


def random_crops(clips: list[torch.Tensor], count: int, length: int, generator: torch.Generator,
                 edge_share: float = 0.0) -> torch.Tensor:
    """`[count, 1, length]` crops at random places; `edge_share` of them start at a clip's start or end
    at its end, so the convolutions' zero padding at a whole clip's edges is learnt too (else a decoder
    puts a click there)."""
    picks = torch.randint(len(clips), (count,), generator=generator).tolist()
    where = torch.rand(count, generator=generator).tolist()
    crops = []
    for index, draw in zip(picks, where):
        clip = clips[index]
        if clip.shape[0] <= length:
            crops.append(F.pad(clip, (0, length - clip.shape[0])))
            continue
        if draw < edge_share / 2:
            start = 0
        elif draw < edge_share:
            start = clip.shape[0] - length
        else:
            start = int(torch.randint(clip.shape[0] - length + 1, (1,), generator=generator))
        crops.append(clip[start:start + length])
    return torch.stack(crops).unsqueeze(1)


# Training ---------------------------------------------------------------------------------------------
@dataclass
class VaeResult:
    path: Path
    steps: int
    seconds: float
    final: dict[str, float]
    latent_shift: list[float]
    latent_scale: float


def train_vae(config: VaeTrainConfig, log: Callable[[str], None] = print,
              clips: list[torch.Tensor] | None = None) -> VaeResult:
    """Train from scratch, normalise the latents, write `<output>/<name>.safetensors` and a JSON log."""
    from ..models.dac_vae import DacVae

    dac_config = config.model.dac_config()
    clips = clips if clips is not None else load_clip_audio(config.data.videos, dac_config.sample_rate,
                                                            config.data.max_clips)
    log(f"VAE: {len(clips)} clips, {sum(c.shape[0] for c in clips) / dac_config.sample_rate:.0f} s of audio")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        vae = DacVae(dac_config).train()
    generator = torch.Generator().manual_seed(config.train.seed + 1)
    optim = config.optim
    optimizer = torch.optim.AdamW(vae.parameters(), lr=optim.learning_rate, betas=optim.betas,
                                  weight_decay=optim.weight_decay)
    length = round(config.data.crop_seconds * dac_config.sample_rate)
    history, started, window = [], time.perf_counter(), []
    for step in range(config.train.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = optim.learning_rate * optim.factor(step, config.train.max_steps)
        batch = random_crops(clips, config.data.batch_size, length, generator, config.data.edge_crops)
        parts = vae_losses(vae, batch, config.loss, generator)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        if optim.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(vae.parameters(), optim.max_grad_norm)
        optimizer.step()
        window.append({k: float(v.detach()) for k, v in parts.items()})
        if (step + 1) % config.train.log_every == 0 or step + 1 == config.train.max_steps:
            mean = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
            history.append({"step": step + 1, "seconds": round(time.perf_counter() - started, 1), **mean})
            log(f"VAE step {step + 1}/{config.train.max_steps} loss {mean['loss']:.4f} (stft {mean['stft']:.4f}, "
                f"l1 {mean['l1']:.4f}, kl {mean['kl']:.3f})")
            window = []
    seconds = time.perf_counter() - started
    vae.eval()
    shift, scale = normalise_latents(vae, clips)
    path = config.output_path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    vae.save_safetensors(partial)
    os.replace(partial, path)
    result = VaeResult(path, config.train.max_steps, seconds, history[-1], shift.tolist(), scale)
    (path.parent / f"{config.name}_log.json").write_text(json.dumps(
        {"history": history, "seconds": seconds, "latent_shift": result.latent_shift, "latent_scale": scale,
         "config": asdict(config)}, indent=1, default=str) + "\n", encoding="utf-8")
    log(f"VAE written to {path} ({seconds:.0f} s; latents shifted per channel and divided by {scale:.4f})")
    return result


@torch.no_grad()
def normalise_latents(vae, clips: list[torch.Tensor], max_clips: int = 256) -> tuple[torch.Tensor, float]:
    """Fold `z' = (z - shift) / scale` into the bottleneck convs (the decoder sees `z' * scale + shift`):
    shift is the per-channel mean of the posterior means over `clips`, scale their overall RMS about it."""
    means = torch.cat([vae.encode(c.view(1, 1, -1))[0][0].T for c in clips[:max_clips]])  # [frames, C]
    shift = means.mean(0)
    scale = float((means - shift).square().mean().sqrt().clamp(min=1e-6))
    channels = shift.shape[0]
    quant, post = vae.quant_conv, vae.post_quant_conv
    quant.weight[:channels] /= scale
    quant.bias[:channels] = (quant.bias[:channels] - shift) / scale
    quant.bias[channels:] -= 2 * math.log(scale)  # logvar of z / scale
    post.bias += post.weight[..., 0] @ shift
    post.weight *= scale
    return shift, scale


# Command line -----------------------------------------------------------------------------------------
def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train-vae", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="VAE recipe (.toml)")
    p.add_argument("--max-steps", type=int, metavar="N", help="override [train] max_steps")
    p.add_argument("--output", metavar="DIR", help="override the output folder")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> None:
    overrides: dict = {}
    if args.max_steps is not None:
        overrides["train"] = {"max_steps": args.max_steps}
    if args.output:
        overrides["output"] = str(Path(args.output).resolve())
    try:
        train_vae(load_vae_config(args.recipe, overrides))
    except (ConfigError, FileNotFoundError, ValueError) as error:
        raise SystemExit(f"syncfoley train-vae: {error}") from None
