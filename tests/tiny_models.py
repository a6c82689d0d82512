"""A complete set of tiny, randomly initialised models written the way users store the real ones:
`<models>/foley/` holding the DiT, DAC-VAE and Synchformer files and the CLAP and SigLIP folders.

The dimensions chain like the release's (CLAP width -> DiT text_dim, SigLIP width -> clip_dim,
Synchformer width -> sync_dim, VAE latent -> DiT latent) at a size that runs in milliseconds.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from tiny_encoders import TINY_HIDDEN, write_tiny_clap, write_tiny_siglip

from syncfoley.models import dit_config
from syncfoley.models.dac_vae import DacVae, DacVaeConfig
from syncfoley.models.dit import FoleyDiT
from syncfoley.models.synchformer import Synchformer
from syncfoley.models.synchformer import tiny as tiny_synchformer_config

TINY_VAE = DacVaeConfig(encoder_dim=8, encoder_rates=(2, 3, 4, 5, 8), latent_dim=16, decoder_dim=32,
                        decoder_rates=(8, 5, 4, 3, 2))
FILES = {"dit": "tiny_dit.safetensors", "vae": "tiny_vae.safetensors", "synchformer": "tiny_synchformer.pth",
         "clap": "clap", "siglip": "siglip"}


def tiny_dit_config():
    return dit_config.sized(64, 2, 1, 1, latent_dim=TINY_VAE.latent_dim, text_dim=TINY_HIDDEN,
                            clip_dim=TINY_HIDDEN, sync_dim=tiny_synchformer_config().dim)


def write_tiny_models(models_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the tiny set under `models_dir/foley`; returns the path of each part."""
    foley = Path(models_dir) / "foley"
    foley.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        dit = FoleyDiT(tiny_dit_config())
        with torch.no_grad():  # non-zero learned null features, so dropping the video changes the output
            dit.empty_clip_feat.normal_(0, 0.5)
            dit.empty_sync_feat.normal_(0, 0.5)
        save_file({k: v.contiguous() for k, v in dit.state_dict().items()}, str(foley / FILES["dit"]))
        DacVae(TINY_VAE).save_safetensors(foley / FILES["vae"])
        torch.save(Synchformer(tiny_synchformer_config()).state_dict(), foley / FILES["synchformer"])
    write_tiny_clap(foley / FILES["clap"], seed=seed)
    write_tiny_siglip(foley / FILES["siglip"], image_size=32, seed=seed)
    return {name: foley / file for name, file in FILES.items()}


def write_tiny_lora(path: str | Path, base: str | Path) -> None:
    """A rank-2 LoRA on the tiny model's first two matrix layers, written by the training side's writer."""
    from syncfoley.models.lora import save_lora

    model = FoleyDiT.from_checkpoint(base)
    generator = torch.Generator().manual_seed(0)
    factors = {}
    for module_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim == 2 and len(factors) < 2:
            factors[module_name] = (torch.randn(2, weight.shape[1], generator=generator) * 0.1,
                                    torch.randn(weight.shape[0], 2, generator=generator) * 0.1)
    save_lora(path, factors, alpha=2.0)


def write_user_layout(root: str | Path, tiny_models: dict[str, Path]) -> Path:
    """What the workflows expect to find: `models/foley` holding the tiny sets of both families under the
    release's file names (plus a LoRA), and `input/` holding the example videos. Returns `root`."""
    from media_fixtures import make_video
    from safetensors.torch import load_file
    from tiny_mmaudio import write_tiny_mmaudio

    root = Path(root)
    foley = root / "models" / "foley"
    foley.mkdir(parents=True)
    torch.save(load_file(str(tiny_models["dit"])), foley / "hunyuanvideo_foley_xl.pth")
    torch.save(load_file(str(tiny_models["vae"])), foley / "vae_128d_48k.pth")
    shutil.copy(tiny_models["synchformer"], foley / "synchformer_state_dict.pth")
    shutil.copytree(tiny_models["clap"], foley / "clap")
    shutil.copytree(tiny_models["siglip"], foley / "siglip2")
    write_tiny_lora(foley / "foley_lora.safetensors", foley / "hunyuanvideo_foley_xl.pth")
    write_tiny_mmaudio(root / "models", mode="44k")  # mmaudio_large_44k_v2.pth, v1-44.pth, ... beside them
    (root / "input").mkdir()
    # Small clips under the names of the pack's built-in examples (a file in the input folder wins), so
    # the workflows run quickly here.
    make_video(root / "input" / "syncfoley-example.mp4", fps=25, count=50, size=(64, 48), audio_seconds=2.0)
    make_video(root / "input" / "syncfoley-example-long.mp4", fps=25, count=100, size=(64, 48))
    return root
