"""Loader nodes: the diffusion model (HunyuanVideo-Foley's DiT or MMAudio's network), the audio VAE
(DAC-VAE, or MMAudio's mel VAE with its vocoder), Synchformer, the text and image encoders (CLAP and
SigLIP2, or MMAudio's CLIP), and LoRA on top of a model. Each loader says what it loaded; a file of
another part or family gets an error naming what it is.

Every file and folder is chosen from the `foley` models folder (ComfyUI's `models/foley`, or the
runner's `--models DIR/foley`). Models are loaded for the compute device and parked on the offload
device; each stage node moves what it needs onto the compute device and back.
"""
from __future__ import annotations

import torch

from ..pipeline import (PRECISIONS, load_clip, load_foley_model, load_image_encoder, load_synchformer,
                        load_text_encoder, load_vae)
from .common import LOADERS, blame, file_choices, load_model, model_combo, model_path

NO_VOCODER = "none"

PLAIN_PRECISIONS = ("fp32", "bf16", "fp16")
_SHORT_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
                 torch.float8_e4m3fn: "fp8_e4m3fn", torch.float8_e5m2: "fp8_e5m2"}
PRECISION_TOOLTIP = ("auto: bf16 on GPUs that have it, fp16 on other GPUs, fp32 on CPU. fp8_*: matrix weights "
                     "stored in fp8 (half the memory of bf16), computed in bf16 on GPUs.")


def _count(number: int) -> str:
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if number >= scale:
            return f"{number / scale:.2f} {unit}"
    return str(number)


def describe_model(model) -> str:
    """'HunyuanVideo-Foley XXL, 5.13 B params, weights bf16, compute bf16' for the loader's info output."""
    network = model.network
    by_dtype: dict[torch.dtype, int] = {}
    for parameter in network.parameters():
        by_dtype[parameter.dtype] = by_dtype.get(parameter.dtype, 0) + parameter.numel()
    stored = max(by_dtype, key=by_dtype.get)
    return (f"{model.variant}, {_count(sum(by_dtype.values()))} params, weights "
            f"{_SHORT_DTYPES.get(stored, str(stored))}, compute {_SHORT_DTYPES.get(model.dtype, str(model.dtype))}")


class SyncFoleyModelLoader:
    DESCRIPTION = ("Loads a diffusion model from models/foley, .pth or .safetensors: HunyuanVideo-Foley (XXL, XL or a "
                   "fine-tuned one of the same layout) or MMAudio (small_16k ... large_44k_v2). The info output says "
                   "which family and size it is.")
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = ("FOLEY_MODEL", "STRING")
    RETURN_NAMES = ("model", "info")
    OUTPUT_TOOLTIPS = ("The diffusion model, for Foley Sampler or Apply Foley LoRA.",
                       "What was loaded: family and size, parameter count, weight and compute precision.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": model_combo("Checkpoint file in models/foley, e.g. hunyuanvideo_foley_xl.pth "
                                      "(HunyuanVideo-Foley XL) or mmaudio_large_44k_v2.pth (MMAudio)."),
            "precision": (list(PRECISIONS), {"default": "auto", "tooltip": PRECISION_TOOLTIP}),
        }}

    def load(self, model_name: str, precision: str):
        model = load_model(load_foley_model, model_path(model_name, "model_name", "dit"), precision, "model_name")
        return model, describe_model(model)


class SyncFoleyVAELoader:
    DESCRIPTION = ("Loads the audio VAE that turns latents into sound and back: HunyuanVideo-Foley's DAC-VAE "
                   "(vae_128d_48k.pth, 48 kHz), or MMAudio's mel VAE (v1-16.pth / v1-44.pth) with its vocoder "
                   "(best_netG.pt for 16 kHz, BigVGAN-v2 44 kHz for 44.1 kHz).")
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = ("FOLEY_VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The VAE, for Foley VAE Decode and Foley VAE Encode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": model_combo("VAE checkpoint in models/foley: vae_128d_48k.pth, or MMAudio's v1-16.pth / "
                                    "v1-44.pth."),
            "precision": (list(PLAIN_PRECISIONS), {"default": "fp32", "tooltip": "fp32 is recommended: the decoder "
                                                   "amplifies low-precision error block by block."}),
        }, "optional": {
            "vocoder_name": ([NO_VOCODER, *file_choices(), *file_choices(folders=True)],
                             {"default": NO_VOCODER, "tooltip": "MMAudio's mel VAE only: its vocoder in models/foley "
                              "(best_netG.pt, or the BigVGAN-v2 44 kHz file or folder). none for the DAC-VAE."}),
        }}

    def load(self, vae_name: str, precision: str, vocoder_name: str = NO_VOCODER):
        vocoder = None if vocoder_name in (NO_VOCODER, "") else model_path(vocoder_name, "vocoder_name", "vocoder")
        return (load_model(load_vae, model_path(vae_name, "vae_name", "vae"), precision, "vae_name", vocoder=vocoder),)


class SyncFoleySynchformerLoader:
    DESCRIPTION = "Loads Synchformer (synchformer_state_dict.pth), the visual encoder that carries timing (25 fps)."
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = ("FOLEY_SYNCHFORMER",)
    RETURN_NAMES = ("synchformer",)
    OUTPUT_TOOLTIPS = ("Synchformer, for Foley Visual Encode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "synchformer_name": model_combo("Synchformer checkpoint in models/foley (synchformer_state_dict.pth, "
                                            "the same file MMAudio uses)."),
            "precision": (list(PRECISIONS), {"default": "fp32", "tooltip": PRECISION_TOOLTIP}),
        }}

    def load(self, synchformer_name: str, precision: str):
        path = model_path(synchformer_name, "synchformer_name", "synchformer")
        return (load_model(load_synchformer, path, precision, "synchformer_name"),)


class SyncFoleyTextEncoderLoader:
    DESCRIPTION = ("Loads the CLAP text encoder from a folder in models/foley holding a transformers model "
                   "(config.json, weights, tokenizer), e.g. laion/larger_clap_general.")
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = ("FOLEY_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("CLAP, for Foley Text Encode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "folder": model_combo("Folder in models/foley with the CLAP model.", folders=True),
            "precision": (list(PLAIN_PRECISIONS), {"default": "fp32", "tooltip": "CLAP is small: fp32 costs little."}),
        }}

    def load(self, folder: str, precision: str):
        return (load_model(load_text_encoder, model_path(folder, "folder", "clap", "model folder"), precision, "folder"),)


class SyncFoleyImageEncoderLoader:
    DESCRIPTION = ("Loads the SigLIP2 image encoder (8 fps frame features) from a folder in models/foley holding "
                   "a transformers model, e.g. google/siglip2-base-patch16-512.")
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = ("FOLEY_IMAGE_ENCODER",)
    RETURN_NAMES = ("image_encoder",)
    OUTPUT_TOOLTIPS = ("SigLIP2, for Foley Visual Encode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "folder": model_combo("Folder in models/foley with the SigLIP2 model.", folders=True),
            "precision": (list(PLAIN_PRECISIONS), {"default": "fp32", "tooltip": "SigLIP2 is small: fp32 costs little."}),
        }}

    def load(self, folder: str, precision: str):
        return (load_model(load_image_encoder, model_path(folder, "folder", "siglip", "model folder"), precision,
                           "folder"),)


class SyncFoleyClipLoader:
    DESCRIPTION = ("Loads MMAudio's CLIP (apple/DFN5B-CLIP-ViT-H-14-384: open_clip_pytorch_model.bin or a safetensors "
                   "conversion) from models/foley: one model that encodes both the prompt and the frames (8 fps).")
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = ("FOLEY_TEXT_ENCODER", "FOLEY_IMAGE_ENCODER")
    RETURN_NAMES = ("text_encoder", "image_encoder")
    OUTPUT_TOOLTIPS = ("CLIP's text tower, for Foley Text Encode.", "CLIP's image tower, for Foley Visual Encode.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_name": (file_choices(), {"tooltip": "CLIP checkpoint in models/foley, e.g. "
                                                      "open_clip_pytorch_model.bin of DFN5B-CLIP-ViT-H-14-384."}),
            "precision": (list(PLAIN_PRECISIONS), {"default": "fp32", "tooltip": "fp16/bf16 halve its 4 GB; MMAudio "
                                                   "runs it in bf16."}),
        }}

    def load(self, clip_name: str, precision: str):
        clip = load_model(load_clip, model_path(clip_name, "clip_name", "clip"), precision, "clip_name")
        return clip.text_encoder(), clip.image_encoder()


class SyncFoleyLoRA:
    DESCRIPTION = ("Applies a LoRA fine-tune (trained with syncfoley's trainer) to a Foley model at a strength. "
                   "The LoRA file lives in models/foley (a sub-folder such as loras/ is fine).")
    CATEGORY = LOADERS
    FUNCTION = "apply"
    RETURN_TYPES = ("FOLEY_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the LoRA applied.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("FOLEY_MODEL", {"tooltip": "The base model the LoRA was trained on."}),
            "lora_name": (file_choices(), {"tooltip": "LoRA file in models/foley."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05,
                                   "tooltip": "Scale of the LoRA update: 0 is the base model, 1 as trained."}),
        }}

    def apply(self, model, lora_name: str, strength: float):
        path = model_path(lora_name, "lora_name", "lora")
        try:
            from ..models.lora import apply_lora
        except ImportError as error:
            raise RuntimeError(f"lora_name: LoRA support is missing from this installation ({error})") from error
        with blame("lora_name"):
            return (model.with_network(apply_lora(model.network, path, strength)),)


NODES = {
    "SyncFoleyModelLoader": (SyncFoleyModelLoader, "Load Foley Model"),
    "SyncFoleyVAELoader": (SyncFoleyVAELoader, "Load Foley DAC-VAE"),
    "SyncFoleySynchformerLoader": (SyncFoleySynchformerLoader, "Load Synchformer"),
    "SyncFoleyTextEncoderLoader": (SyncFoleyTextEncoderLoader, "Load CLAP Text Encoder"),
    "SyncFoleyImageEncoderLoader": (SyncFoleyImageEncoderLoader, "Load SigLIP2 Image Encoder"),
    "SyncFoleyClipLoader": (SyncFoleyClipLoader, "Load MMAudio CLIP"),
    "SyncFoleyLoRA": (SyncFoleyLoRA, "Apply Foley LoRA"),
}
