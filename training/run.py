"""From a recipe to a trained model: make sure the feature cache is current, then train and export.

The command line and the ComfyUI node both go through `ensure_cache` and `Trainer`, so a recipe run
from either place gives the same files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from .audio_features import resolve_audio_encoder
from .config import ConfigError, TrainConfig
from .data import FeatureEncoders, cache_fingerprint, cached_index, discover_videos, prepare_cache

CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ENCODER_HINTS = {"hunyuanvideo-foley": "DAC-VAE and Synchformer files, CLAP and SigLIP2 folders",
                 "mmaudio": "the mel VAE, its vocoder, the Synchformer and the CLIP file; or [model] models"}


def _file_identity(path: str) -> list:
    if not path:
        return [""]
    target = Path(path)
    stat = target.stat() if target.exists() else None
    return [str(target), stat.st_size if stat else None, stat.st_mtime_ns if stat else None]


def load_encoders(config: TrainConfig, device: str | torch.device | None = None) -> FeatureEncoders:
    """The preparation step's encoders of the recipe's family from its `[model]` paths (fp32):
    HunyuanVideo-Foley's DAC-VAE, CLAP, SigLIP2 and Synchformer; MMAudio's mel VAE (with its vocoder,
    as the loaders want it), CLIP for text and frames (loaded once) and Synchformer."""
    from ..pipeline import loaders

    m = config.model
    missing = [name for name in config.layout.encoder_parts if not getattr(m, name)]
    if missing:
        raise ConfigError(f"preparing the feature cache needs the encoders: set [model] {', '.join(missing)} "
                          f"({ENCODER_HINTS[config.layout.family]})")
    sync = loaders.load_synchformer(m.synchformer, "fp32", device)
    if config.layout.family == "mmaudio":
        clip = loaders.load_clip(m.clip, "fp32", device)
        return FeatureEncoders(vae=loaders.load_vae(m.vae, "fp32", device, vocoder=m.vocoder),
                               text_encoder=clip.text_encoder(), image_encoder=clip.image_encoder(), sync_encoder=sync)
    return FeatureEncoders(
        vae=loaders.load_vae(m.vae, "fp32", device),
        text_encoder=loaders.load_text_encoder(m.clap, "fp32", device),
        image_encoder=loaders.load_image_encoder(m.siglip, "fp32", device),
        sync_encoder=sync,
    )


def ensure_cache(
    config: TrainConfig,
    encoders: FeatureEncoders | Callable[[], FeatureEncoders] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """The cache index, building the cache first when it is missing or was built from other videos,
    captions, clip settings or encoders. `encoders` (or a factory) default to the recipe's files and
    are only loaded when the cache must be built."""
    data, layout = config.data, config.layout
    videos = discover_videos(data.videos, data.captions or None)
    identities = [_file_identity(getattr(config.model, part)) for part in layout.encoder_parts]
    settings = {"clip_seconds": data.clip_seconds, "stride": data.stride, "max_clips": data.max_clips_per_video,
                "dtype": data.cache_dtype, "encoders": identities}
    if layout.family != "hunyuanvideo-foley":  # (the first family's caches keep their fingerprints)
        settings["family"] = layout.family
    fingerprint = cache_fingerprint(videos, settings)
    audio_encoder = resolve_audio_encoder(config.objective.repa_encoder) if config.repa_weight > 0 else None
    index = cached_index(config.cache_dir, fingerprint)
    wanted_repa = getattr(audio_encoder, "name", None)
    if index is not None and (wanted_repa is None or index.get("repa_encoder") == wanted_repa):
        log(f"feature cache is current: {len(index['clips'])} clips in {config.cache_dir}")
        return index
    log(f"preparing the feature cache of {len(videos)} video(s) in {config.cache_dir}")
    if encoders is None:
        device = "cuda" if torch.cuda.is_available() and not config.train.cpu else "cpu"
        encoders = load_encoders(config, device)
    elif callable(encoders):
        encoders = encoders()
    encoders.audio_encoder = audio_encoder
    index = prepare_cache(videos, encoders, config.cache_dir, data.clip_seconds, data.stride,
                          data.max_clips_per_video, CACHE_DTYPES[data.cache_dtype], fingerprint, progress=progress)
    for skipped in index["skipped"]:
        log(f"skipped {os.path.basename(skipped['video'])}: {skipped['reason']}")
    log(f"cached {len(index['clips'])} clips")
    return index
