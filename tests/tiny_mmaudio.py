"""A tiny MMAudio set, randomly initialised and written the way users store the released files:
`<models>/foley/` holding the network, the 16 kHz mel VAE, a BigVGAN folder (generator + config.json),
open_clip's CLIP file with its config beside it, and the Synchformer.

The widths chain like the release's (CLIP text width -> text_dim, CLIP embedding -> clip_dim,
Synchformer width -> sync_dim, VAE latent -> the network's latent) at a size that runs in well under a
second per step.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from syncfoley.models.bigvgan import BigVGAN
from syncfoley.models.bigvgan_config import BigVGANConfig
from syncfoley.models.clip import MMAudioClip
from syncfoley.models.clip_config import ClipConfig
from syncfoley.models.mel_vae import MelVae, MelVaeConfig
from syncfoley.models.mmaudio import MMAudioNet
from syncfoley.models.mmaudio_config import sized
from syncfoley.models.synchformer import Synchformer
from syncfoley.models.synchformer import tiny as tiny_synchformer_config

TINY_CLIP = ClipConfig(embed_dim=32, image_size=64, patch_size=16, vision_width=64, vision_layers=1,
                       vision_head_width=32, text_width=48, text_heads=2, text_layers=1)
# Per mode: the VAE's mel and latent widths, and the vocoder's hop (16 kHz: 256, 44.1 kHz: 512) and
# final layer (v1: tanh and a bias; v2: a clamp, no bias), in narrow channels.
TINY_VAE = {"16k": MelVaeConfig(data_dim=80, embed_dim=20, hidden_dim=32),
            "44k": MelVaeConfig(data_dim=128, embed_dim=40, hidden_dim=32)}
TINY_VOCODER = {
    "16k": BigVGANConfig(num_mels=80, upsample_rates=(4, 4, 2, 2, 2, 2), upsample_kernel_sizes=(8, 8, 4, 4, 4, 4),
                         upsample_initial_channel=64, resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),),
                         sampling_rate=16000),
    "44k": BigVGANConfig(num_mels=128, upsample_rates=(8, 4, 2, 2, 2, 2), upsample_kernel_sizes=(16, 8, 4, 4, 4, 4),
                         upsample_initial_channel=64, resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),),
                         use_tanh_at_final=False, use_bias_at_final=False, sampling_rate=44100),
}
RELEASE_NAMES = {  # what the shipped workflows name
    "16k": {"model": "mmaudio_small_16k.pth", "vae": "v1-16.pth", "vocoder": "best_netG"},
    "44k": {"model": "mmaudio_large_44k_v2.pth", "vae": "v1-44.pth", "vocoder": "bigvgan_v2_44khz_128band_512x"},
}
SHARED = {"synchformer": "synchformer_state_dict.pth", "clip": "open_clip_pytorch_model.bin"}


def tiny_network_config(mode: str = "16k"):
    return sized(TINY_VAE[mode].embed_dim, 2, 2, 1, clip_dim=TINY_CLIP.embed_dim, text_dim=TINY_CLIP.text_width,
                 sync_dim=tiny_synchformer_config().dim)


def write_tiny_mmaudio(models_dir: str | Path, seed: int = 0, mode: str = "16k") -> dict[str, Path]:
    """Write the tiny set of a mode under `models_dir/foley`, under the release's names (the vocoder as
    a folder with its config.json, as NVIDIA publishes BigVGAN-v2); returns the path of each part."""
    files = {**RELEASE_NAMES[mode], **SHARED}
    foley = Path(models_dir) / "foley"
    foley.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = MMAudioNet(tiny_network_config(mode))
        with torch.no_grad():  # statistics and empty features that change what they touch
            network.latent_mean.normal_(0, 0.3)
            network.latent_std.uniform_(0.5, 1.5)
            for empty in (network.empty_clip_feat, network.empty_sync_feat, network.empty_string_feat):
                empty.normal_(0, 0.5)
        torch.save(network.state_dict(), foley / files["model"])
        torch.save(MelVae(TINY_VAE[mode]).state_dict(), foley / files["vae"])
        vocoder = foley / files["vocoder"]
        vocoder.mkdir(exist_ok=True)
        torch.save({"generator": BigVGAN(TINY_VOCODER[mode]).state_dict()}, vocoder / "bigvgan_generator.pt")
        (vocoder / "config.json").write_text(json.dumps(asdict(TINY_VOCODER[mode])))
        torch.save(Synchformer(tiny_synchformer_config()).state_dict(), foley / files["synchformer"])
        clip = MMAudioClip(TINY_CLIP)
        torch.save(clip.state_dict(), foley / files["clip"])
        (foley / "open_clip_config.json").write_text(json.dumps({"model_cfg": clip_model_cfg(TINY_CLIP)}))
    return {name: foley / file for name, file in files.items()}


def clip_model_cfg(config: ClipConfig) -> dict:
    """The open_clip `model_cfg` of a ClipConfig, as open_clip_config.json holds it."""
    return {"embed_dim": config.embed_dim, "quick_gelu": config.quick_gelu,
            "vision_cfg": {"image_size": config.image_size, "layers": config.vision_layers,
                           "width": config.vision_width, "head_width": config.vision_head_width,
                           "patch_size": config.patch_size},
            "text_cfg": {"context_length": config.context_length, "vocab_size": config.vocab_size,
                         "width": config.text_width, "heads": config.text_heads, "layers": config.text_layers}}


def nominal_seconds(config, latent_length: int) -> float:
    """The shortest clip length (in 0.01 s) whose latents number `latent_length` at `config`'s rate:
    parity vectors give their lengths, not the duration the release derived them from."""
    for hundredths in range(1, 100_000):
        if config.latent_length(hundredths / 100) == latent_length:
            return hundredths / 100
    raise ValueError(f"no clip length gives {latent_length} latents at {config.sample_rate} Hz")
