"""Loading every model of a run with one notion of precision.

precision: "auto" (bf16 on GPUs that have it, fp16 on other GPUs, fp32 on CPU), "fp32", "bf16",
"fp16", or "fp8_e4m3fn" / "fp8_e5m2": the matrix weights of the repeated blocks stored in fp8 with a
per-tensor scale (half of bf16) and computed in bf16 on GPUs, fp32 on CPU. "fp8_e4m3fn_fast" also
multiplies on fp8 matrix units where the GPU has them (compute capability 8.9 and up), the same
result within fp8 rounding; elsewhere it is "fp8_e4m3fn".

Every loader places the model on `device` but chooses its precision for `compute_device` (default:
the same), so a model can be loaded straight onto the CPU for a GPU that will run it later.

Loaders recognise what a file holds from its tensors (and metadata) and load it for its family:
the network loader takes HunyuanVideo-Foley's DiT or MMAudio's network, the VAE loader the DAC-VAE
or MMAudio's mel VAE with its vocoder, the encoder loaders CLAP and SigLIP2 folders or MMAudio's
CLIP file; the demo model's files (`demo/weights`) are one more such set.
"""
from __future__ import annotations

import os

import torch

from pathlib import Path

from ..families import FAMILY_KEY, FlowModel, as_flow, family_named
from ..models.checkpoint import Checkpoint, CheckpointError, describe, read_checkpoint, strip_wrapper_prefix
from ..models.ops import enable_fp8_compute

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
_PLAIN = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, device: str | torch.device | None) -> tuple[torch.dtype, torch.dtype | None]:
    """(compute dtype, storage dtype or None) for a precision name on a device."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    on_gpu = torch.device(device or "cpu").type == "cuda"
    best_half = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float16
    if precision == "auto":
        return (best_half if on_gpu else torch.float32), None
    if precision.startswith("fp8"):
        storage = getattr(torch, precision.removesuffix("_fast").replace("fp8_", "float8_"))
        return (torch.bfloat16 if on_gpu else torch.float32), storage
    return _PLAIN[precision], None


def read_model_file(path: str | os.PathLike) -> tuple[Checkpoint, str | None]:
    """The checkpoint and what it holds (`models.checkpoint.identify`)."""
    checkpoint = read_checkpoint(path)
    checkpoint.state_dict = strip_wrapper_prefix(checkpoint.state_dict)
    return checkpoint, checkpoint.kind


def _wrong_file(path, checkpoint: Checkpoint, loader: str, expected: str) -> CheckpointError:
    return CheckpointError(f"'{path}' is {describe(checkpoint.state_dict)}, but the {loader} takes {expected}.")


def load_foley_model(path: str | os.PathLike, precision: str = "auto", device=None, compute_device=None) -> FlowModel:
    """A family's diffusion network, `.pth` or `.safetensors`: HunyuanVideo-Foley's DiT (XXL, XL or
    any size of the layout) or MMAudio's network (every released size). Returns its `FlowModel`."""
    from ..models.dit import FoleyDiT
    from ..models.mmaudio import MMAudioNet

    dtype, storage = resolve_precision(precision, compute_device or device)
    checkpoint, kind = read_model_file(path)
    networks = {"foley_dit": FoleyDiT, "mmaudio_net": MMAudioNet}
    if kind not in networks:
        raise _wrong_file(path, checkpoint, "model loader", "a HunyuanVideo-Foley or MMAudio diffusion model "
                          "(use the VAE, Synchformer or encoder loaders for those files)")
    network = networks[kind].from_checkpoint(checkpoint, dtype=dtype, device=device, weight_dtype=storage)
    if precision.endswith("_fast"):
        enable_fp8_compute(network, compute_device or device)
    return as_flow(network, family_named(checkpoint.metadata.get(FAMILY_KEY)))


def load_vae(path: str | os.PathLike, precision: str = "fp32", device=None, compute_device=None,
             vocoder: str | os.PathLike | None = None, vocoder_config: str | os.PathLike | dict | None = None):
    """The audio VAE: HunyuanVideo-Foley's DAC-VAE, or MMAudio's mel VAE with its BigVGAN `vocoder`
    (a mel VAE decodes to spectrograms; the vocoder makes them sound). fp32 by default: decoders
    amplify low-precision error block by block."""
    from ..models.dac_vae import DacVae

    dtype, _ = resolve_precision(precision, compute_device or device)
    checkpoint, kind = read_model_file(path)
    if kind == "dac_vae":
        return DacVae.from_checkpoint(checkpoint, dtype=dtype, device=device)
    if kind != "mmaudio_vae":
        raise _wrong_file(path, checkpoint, "VAE loader", "a DAC-VAE (HunyuanVideo-Foley) or an MMAudio mel VAE")
    from ..models.bigvgan import BigVGAN
    from ..models.mel_codec import MelCodec
    from ..models.mel_vae import MelVae

    vae = MelVae.from_checkpoint(checkpoint, dtype=dtype, device=device)
    if vocoder is None:
        raise CheckpointError(f"'{path}' is an MMAudio mel VAE, which decodes to mel spectrograms: give it its "
                              "vocoder too (best_netG.pt for the 16 kHz VAE, BigVGAN-v2 44 kHz "
                              "bigvgan_generator.pt for the 44.1 kHz one)")
    vocoder, vocoder_config = _vocoder_files(Path(vocoder), vocoder_config)
    return MelCodec(vae, BigVGAN.from_checkpoint(vocoder, config=vocoder_config, dtype=dtype, device=device))


def _vocoder_files(vocoder: Path, config) -> tuple[Path, dict | None]:
    """The generator file and its config: a folder as NVIDIA publishes BigVGAN (the generator and its
    config.json), or a file, with the BigVGAN config.json beside it if there is one; else None, the
    release's config of the size the shapes show."""
    import json

    if vocoder.is_dir():
        weights = sorted(p for p in vocoder.iterdir() if p.suffix.lower() in (".pt", ".pth", ".safetensors", ".bin"))
        if len(weights) != 1:
            raise CheckpointError(f"vocoder folder '{vocoder}' should hold one generator file "
                                  f"(bigvgan_generator.pt), found {len(weights) or 'none'}")
        vocoder = weights[0]
    if config is None and (vocoder.parent / "config.json").is_file():
        beside = json.loads((vocoder.parent / "config.json").read_text(encoding="utf-8"))
        config = beside if isinstance(beside, dict) and "upsample_rates" in beside else None
    if isinstance(config, (str, os.PathLike)):
        config = json.loads(Path(config).read_text(encoding="utf-8"))
    return vocoder, config


def load_synchformer(path: str | os.PathLike, precision: str = "auto", device=None, compute_device=None):
    """Synchformer (the same file for both families), or the demo's sync encoder."""
    from ..demo.encoders import SYNC_KIND, demo_encoder_kind, load_demo_encoder
    from ..models.synchformer import Synchformer

    dtype, storage = resolve_precision(precision, compute_device or device)
    if demo_encoder_kind(path):
        return load_demo_encoder(path, SYNC_KIND, device)
    return Synchformer.from_checkpoint(path, dtype=dtype, device=device, weight_dtype=storage)


def load_clip(path: str | os.PathLike, precision: str = "fp32", device=None, compute_device=None, config=None):
    """MMAudio's CLIP (DFN5B ViT-H/14-384, open_clip's file or a safetensors conversion): one model
    for the text and the image encoder (`.text_encoder()`, `.image_encoder()`)."""
    from ..models.clip import MMAudioClip

    dtype, _ = resolve_precision(precision, compute_device or device)
    return MMAudioClip.from_checkpoint(path, config=config, dtype=dtype, device=device)


def load_text_encoder(source: str | os.PathLike, precision: str = "fp32", device=None, compute_device=None):
    """CLAP from its transformers folder (HunyuanVideo-Foley), MMAudio's CLIP file, or the demo's."""
    from ..demo.encoders import TEXT_KIND, demo_encoder_kind, load_demo_encoder
    from ..models.encoders import ClapTextEncoder

    dtype, _ = resolve_precision(precision, compute_device or device)
    if demo_encoder_kind(source):
        return load_demo_encoder(source, TEXT_KIND, device)
    if Path(source).is_file():
        return load_clip(source, precision, device, compute_device).text_encoder()
    return ClapTextEncoder.from_folder(source, device=device, dtype=dtype)


def load_image_encoder(source: str | os.PathLike, precision: str = "fp32", device=None, compute_device=None):
    """SigLIP2 from its transformers folder (HunyuanVideo-Foley), MMAudio's CLIP file, or the demo's."""
    from ..demo.encoders import IMAGE_KIND, demo_encoder_kind, load_demo_encoder
    from ..models.encoders import Siglip2ImageEncoder

    dtype, _ = resolve_precision(precision, compute_device or device)
    if demo_encoder_kind(source):
        return load_demo_encoder(source, IMAGE_KIND, device)
    if Path(source).is_file():
        return load_clip(source, precision, device, compute_device).image_encoder()
    return Siglip2ImageEncoder.from_folder(source, device=device, dtype=dtype)
