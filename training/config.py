"""The training recipe: a TOML file (JSON also accepted) read into a validated `TrainConfig`.

Every section and key is optional except `data.videos`; unknown keys, wrong types and out-of-range
values are refused with the file, the section and the fix. Relative paths are relative to the recipe
file. A complete recipe with every default:

    name = "foley_lora"            # output file stem: <output>/<name>.safetensors
    output = "runs/foley_lora"     # run folder (default runs/<name>): outputs, checkpoints/, train_log.jsonl
    mode = "lora"                  # "lora" (peft adapters on the attention/MLP layers) or "full"

    [data]
    videos = "my_videos"           # folder of videos (searched recursively)
    captions = ""                  # CSV/JSONL (file|path|video, caption|text|prompt); default: captions.csv,
                                   # captions.jsonl, metadata.csv or metadata.jsonl in the folder, then <video>.txt
    cache = ""                     # feature cache; default <output>/cache
    clip_seconds = 8.0             # fixed clip length (HunyuanVideo-Foley: a multiple of 0.02 s, one audio
                                   # latent; MMAudio: at least 0.64 s, its latents are rounded up as released)
    clip_stride = 0.0              # seconds between clip starts; 0 = clip_seconds (no overlap)
    max_clips_per_video = 0        # 0 = all
    cache_dtype = "float32"        # or "float16" / "bfloat16" to halve the cache
    latent = "mean"                # "mean" of the VAE posterior, or a fresh "sample" each step
    batch_size = 1
    num_workers = 0

    [model]
    family = "hunyuanvideo-foley"  # or "mmaudio": the layout of the network and the encoders it reads
    models = ""                    # a model folder: every part left empty below is found there by name
                                   # (the file names pipeline.find_model_files knows)
    checkpoint = ""                # the network (.pth/.safetensors); "" = from scratch with `config`
                                   # (HunyuanVideo-Foley's layout only: MMAudio fine-tunes a release)
    config = "xl"                  # from scratch: "xxl", "xl", "tiny" or {hidden, heads, triple_blocks, single_blocks}
    base_dtype = "fp32"            # storage of the base weights ("bf16" halves a frozen LoRA base)
    gradient_checkpointing = false
    vae = ""                       # the encoders below are read by the preparation step only:
                                   # DAC-VAE (HunyuanVideo-Foley) or mel VAE v1-16.pth / v1-44.pth (MMAudio)
    synchformer = ""               # both families
    clap = ""                      # HunyuanVideo-Foley: CLAP folder (text)
    siglip = ""                    # HunyuanVideo-Foley: SigLIP2 folder (frames)
    clip = ""                      # MMAudio: open_clip_pytorch_model.bin of DFN5B CLIP (text and frames)
    vocoder = ""                   # MMAudio: the mel VAE's vocoder (best_netG.pt, or the BigVGAN-v2 folder)

    [lora]
    rank = 16
    alpha = 0.0                    # 0 = rank (scale 1)
    dropout = 0.0
    targets = []                   # regexes over module names; [] = attention and MLP layers of every block

    [objective]
    timestep_mean = 0.0            # logit-normal sampling of s: sigmoid(N(mean, std))
    timestep_std = 1.0
    drop_visual = 0.1              # per-sample probability of the learned null video features
    drop_text = 0.1                # per-sample probability of the empty prompt (MMAudio: its stored empty text)
                                   # repa_weight: unset = the family's: 0.5 for HunyuanVideo-Foley (the
                                   # paper), 0 for MMAudio (its release trains without REPA); 0 disables it
    repa_depth = 8                 # align the hidden states after this many single-stream blocks (the
                                   # release config's depth_single_ssl_encoder); MMAudio: fused blocks
    repa_encoder = "logmel"        # or "package.module:factory" returning an AudioFeatureEncoder
    repa_projector_hidden = 1024

    [optim]
    learning_rate = 1e-4
    weight_decay = 0.0
    betas = [0.9, 0.999]
    eps = 1e-8
    max_grad_norm = 1.0            # 0 = no clipping
    warmup_steps = 0
    schedule = "constant"          # or "cosine" (to min_lr_ratio * learning_rate at max_steps)
    min_lr_ratio = 0.0

    [train]
    max_steps = 1000
    gradient_accumulation = 1
    mixed_precision = "no"         # "bf16" or "fp16" (accelerate autocast)
    seed = 0
    ema_decay = 0.0                # 0 = no EMA; else the exported weights are the EMA's
    checkpoint_every = 500
    keep_checkpoints = 2
    log_every = 10
    cpu = false                    # force the CPU even with a GPU
    save_dtype = "bf16"            # full-model export ("fp32", "bf16", "fp16"); LoRA files are fp32
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .recipe import ConfigError, _check, _path, read_recipe, recipe_from_dict  # noqa: F401 (their home for importers)

DTYPE_NAMES = ("fp32", "bf16", "fp16")
CACHE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class DataConfig:
    videos: str = _path()
    captions: str = _path()
    cache: str = _path()
    clip_seconds: float = 8.0
    clip_stride: float = 0.0
    max_clips_per_video: int = 0
    cache_dtype: str = "float32"
    latent: str = "mean"
    batch_size: int = 1
    num_workers: int = 0

    def validate(self) -> None:
        _check(bool(self.videos), "[data] videos", "is required: the folder of training videos")
        _check(self.clip_seconds > 0, "[data] clip_seconds", f"must be > 0, got {self.clip_seconds}")
        _check(self.clip_stride >= 0, "[data] clip_stride", f"must be >= 0 (0 = clip_seconds), got {self.clip_stride}")
        _check(self.max_clips_per_video >= 0, "[data] max_clips_per_video", "must be >= 0 (0 = all)")
        _check(self.cache_dtype in CACHE_DTYPES, "[data] cache_dtype", f"must be one of {CACHE_DTYPES}")
        _check(self.latent in ("mean", "sample"), "[data] latent", "must be 'mean' or 'sample'")
        _check(self.batch_size >= 1, "[data] batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.num_workers >= 0, "[data] num_workers", "must be >= 0")

    @property
    def stride(self) -> float:
        return self.clip_stride or self.clip_seconds

    def check_length(self, family: str) -> None:
        """The clip length the family's latents and Synchformer segments allow."""
        if family == "mmaudio":
            _check(self.clip_seconds * 25 >= 16 - 1e-6, "[data] clip_seconds",
                   f"must be at least 0.64 s (one Synchformer segment) for MMAudio, got {self.clip_seconds}")
            return
        latents = self.clip_seconds * 50
        _check(abs(latents - round(latents)) < 1e-6, "[data] clip_seconds",
               f"must be a whole number of 20 ms audio latents (e.g. 8.0 or 5.12), got {self.clip_seconds}")


# A model folder's parts (`pipeline.find_model_files`) -> the [model] keys that name them.
FOLDER_PARTS = {"model": "checkpoint", "text_encoder": "clap", "image_encoder": "siglip"}


@dataclass
class ModelConfig:
    checkpoint: str = _path()
    config: str | dict = "xl"
    base_dtype: str = "fp32"
    gradient_checkpointing: bool = False
    vae: str = _path()
    synchformer: str = _path()
    clap: str = _path()
    siglip: str = _path()
    family: str = "hunyuanvideo-foley"
    models: str = _path()
    clip: str = _path()
    vocoder: str = _path()

    def validate(self) -> None:
        from .layouts import LAYOUTS

        _check(self.base_dtype in DTYPE_NAMES, "[model] base_dtype", f"must be one of {DTYPE_NAMES}")
        _check(self.family in LAYOUTS, "[model] family", f"must be one of {', '.join(LAYOUTS)}, got {self.family!r}")
        if self.models:
            self._fill_from_folder()
        layout = LAYOUTS[self.family]
        foreign = [key for key in layout.foreign_parts if getattr(self, key)]
        if foreign:
            other = next(other.family for other in LAYOUTS.values() if foreign[0] in other.encoder_parts)
            raise ConfigError(f"[model] {' and '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} part of "
                              f"{other} sets, not of {self.family}: set [model] family = \"{other}\", or remove "
                              f"{'it' if len(foreign) == 1 else 'them'}")
        if not self.checkpoint and self.family == "hunyuanvideo-foley":
            self.dit_config()  # raises for an unknown name or bad sizes

    def _fill_from_folder(self) -> None:
        """Every part the recipe leaves empty, from the `models` folder by its file name."""
        from ..pipeline.files import find_model_files

        try:
            found = find_model_files(self.models, self.family, self.checkpoint or None)
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(f"[model] models: {exc}. Check [model] family (\"{self.family}\"), name the "
                              "network in [model] checkpoint, or give each part's path instead") from None
        for part, path in found.paths.items():
            key = FOLDER_PARTS.get(part, part)
            if not getattr(self, key):
                setattr(self, key, str(path))

    def require_start(self) -> None:
        """ConfigError when there is nothing to start from (MMAudio fine-tunes a released network)."""
        _check(bool(self.checkpoint) or self.family != "mmaudio", "[model] checkpoint",
               "is required for MMAudio: training starts from a released network (mmaudio_*.pth), or set "
               "[model] models to the folder that holds it")

    def dit_config(self):
        from ..models import dit_config

        try:
            if isinstance(self.config, dict):
                return dit_config.sized(**self.config)
            return dit_config.named(self.config)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[model] config {self.config!r} is not usable: {exc}. Use 'xxl', 'xl', 'tiny' or "
                              "{hidden=..., heads=..., triple_blocks=..., single_blocks=...}") from exc


@dataclass
class LoraSettings:
    rank: int = 16
    alpha: float = 0.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ()

    def validate(self) -> None:
        _check(self.rank >= 1, "[lora] rank", f"must be >= 1, got {self.rank}")
        _check(self.alpha >= 0, "[lora] alpha", "must be >= 0 (0 = rank)")
        _check(0 <= self.dropout < 1, "[lora] dropout", "must be in [0, 1)")

    @property
    def scale_alpha(self) -> float:
        return self.alpha or float(self.rank)


@dataclass
class ObjectiveConfig:
    timestep_mean: float = 0.0
    timestep_std: float = 1.0
    drop_visual: float = 0.1
    drop_text: float = 0.1
    repa_weight: float | None = None  # None: the family's (`layouts.Layout.repa_weight`)
    repa_depth: int = 8
    repa_encoder: str = "logmel"
    repa_projector_hidden: int = 1024

    def validate(self) -> None:
        _check(self.timestep_std > 0, "[objective] timestep_std", "must be > 0")
        for key in ("drop_visual", "drop_text"):
            _check(0 <= getattr(self, key) <= 1, f"[objective] {key}", "must be a probability in [0, 1]")
        _check(self.repa_weight is None or self.repa_weight >= 0, "[objective] repa_weight",
               "must be >= 0 (0 disables REPA)")
        _check(self.repa_depth >= 1, "[objective] repa_depth", "must be >= 1 (a count of single-stream blocks)")
        _check(self.repa_projector_hidden >= 1, "[objective] repa_projector_hidden", "must be >= 1")


@dataclass
class OptimConfig:
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    schedule: str = "constant"
    min_lr_ratio: float = 0.0

    def validate(self) -> None:
        _check(self.learning_rate > 0, "[optim] learning_rate", f"must be > 0, got {self.learning_rate}")
        _check(self.weight_decay >= 0 and self.eps > 0 and self.max_grad_norm >= 0, "[optim]",
               "weight_decay and max_grad_norm must be >= 0 and eps > 0")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "[optim] betas",
               "must be two numbers in [0, 1)")
        _check(self.warmup_steps >= 0, "[optim] warmup_steps", "must be >= 0")
        _check(self.schedule in ("constant", "cosine"), "[optim] schedule", "must be 'constant' or 'cosine'")
        _check(0 <= self.min_lr_ratio <= 1, "[optim] min_lr_ratio", "must be in [0, 1]")

    def lr_factor(self, step: int, max_steps: int) -> float:
        """Multiplier of the learning rate for optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, max_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class RunConfig:
    max_steps: int = 1000
    gradient_accumulation: int = 1
    mixed_precision: str = "no"
    seed: int = 0
    ema_decay: float = 0.0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    cpu: bool = False
    save_dtype: str = "bf16"

    def validate(self) -> None:
        _check(self.max_steps >= 1, "[train] max_steps", f"must be >= 1, got {self.max_steps}")
        _check(self.gradient_accumulation >= 1, "[train] gradient_accumulation", "must be >= 1")
        _check(self.mixed_precision in ("no", "bf16", "fp16"), "[train] mixed_precision",
               "must be 'no', 'bf16' or 'fp16'")
        _check(0 <= self.ema_decay < 1, "[train] ema_decay", "must be in [0, 1) (0 = no EMA)")
        _check(self.checkpoint_every >= 0 and self.keep_checkpoints >= 1 and self.log_every >= 1, "[train]",
               "checkpoint_every must be >= 0 (0 = only at the end), keep_checkpoints and log_every >= 1")
        _check(self.save_dtype in DTYPE_NAMES, "[train] save_dtype", f"must be one of {DTYPE_NAMES}")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "lora": LoraSettings, "objective": ObjectiveConfig,
            "optim": OptimConfig, "train": RunConfig}


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)
    name: str = "foley_lora"
    output: str = "runs/foley_lora"
    mode: str = "lora"

    def validate(self) -> "TrainConfig":
        _check(self.mode in ("lora", "full"), "mode", f"must be 'lora' or 'full', got {self.mode!r}")
        _check(bool(self.name) and "/" not in self.name and "\\" not in self.name, "name",
               f"must be a plain file stem, got {self.name!r}")
        _check(bool(self.output), "output", "must name the run folder")
        for section in SECTIONS:
            getattr(self, section).validate()
        self.data.check_length(self.model.family)
        return self

    @property
    def layout(self):
        """What training knows of the network's layout (`layouts.Layout`)."""
        from .layouts import layout_named

        return layout_named(self.model.family)

    @property
    def repa_weight(self) -> float:
        """`[objective] repa_weight`, or the family's when the recipe leaves it unset."""
        weight = self.objective.repa_weight
        return self.layout.repa_weight if weight is None else weight

    @property
    def output_dir(self) -> Path:
        return Path(self.output)

    @property
    def cache_dir(self) -> Path:
        return Path(self.data.cache) if self.data.cache else self.output_dir / "cache"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, table: dict, base_dir: str | os.PathLike | None = None, source: str = "recipe") -> "TrainConfig":
        """Build from a parsed recipe; relative paths are resolved against `base_dir`."""
        return recipe_from_dict(cls, SECTIONS, ("name", "output", "mode"), table, base_dir, source)


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
    """Read a training recipe; `overrides` are merged per section."""
    table, base_dir = read_recipe(path, overrides)
    return TrainConfig.from_dict(table, base_dir=base_dir, source=str(path))
