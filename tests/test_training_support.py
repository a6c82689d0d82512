"""Shared material of the training tests: a folder of generated clips and its feature cache, built
once per session (the helpers memoise by folder), and small models."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from media_fixtures import make_video

from syncfoley.models.dit import FoleyDiT

CLIP_SECONDS = 1.0
_BUILT: dict[str, dict] = {}


def make_dataset(folder: Path, videos: int = 3) -> Path:
    """`videos` 2 s clips with a tone track; captions from a CSV for the first, a sidecar for the second."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(videos):
        make_video(folder / f"clip{i}.mp4", fps=25, count=50, size=(32, 32), audio_seconds=2.0)
    (folder / "captions.csv").write_text("file,caption\nclip0.mp4,a dog barks\n", encoding="utf-8")
    (folder / "clip1.txt").write_text("glass shatters\n", encoding="utf-8")
    return folder


def tiny_encoders(tiny_models):
    from syncfoley.pipeline import loaders
    from syncfoley.training.audio_features import LogMelFrames
    from syncfoley.training.data import FeatureEncoders

    return FeatureEncoders(
        vae=loaders.load_vae(tiny_models["vae"]),
        text_encoder=loaders.load_text_encoder(tiny_models["clap"]),
        image_encoder=loaders.load_image_encoder(tiny_models["siglip"]),
        sync_encoder=loaders.load_synchformer(tiny_models["synchformer"], "fp32"),
        audio_encoder=LogMelFrames(),
    )


def prepared(tiny_models, root: Path) -> dict:
    """{"videos", "cache", "index", "encoders"}: the shared dataset (clips of 1 s every 0.5 s)."""
    key = str(tiny_models["dit"])
    if key not in _BUILT:
        from syncfoley.training.data import discover_videos, prepare_cache

        videos = make_dataset(root / "videos")
        encoders = tiny_encoders(tiny_models)
        index = prepare_cache(discover_videos(videos), encoders, root / "cache", CLIP_SECONDS, stride=0.5)
        _BUILT[key] = {"videos": videos, "cache": root / "cache", "index": index, "encoders": encoders}
    return _BUILT[key]


def small_dit(single_blocks: int = 3, seed: int = 0, **overrides) -> FoleyDiT:
    """A random DiT of the tiny set's widths with more single blocks (REPA needs some above its layer)."""
    from tiny_models import tiny_dit_config

    config = replace(tiny_dit_config(), single_blocks=single_blocks, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FoleyDiT(config)
        with torch.no_grad():
            model.empty_clip_feat.normal_(0, 0.5)
            model.empty_sync_feat.normal_(0, 0.5)
    return model

