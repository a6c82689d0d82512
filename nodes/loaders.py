"""Loader nodes: the Foley MM-DiT, DAC-VAE, Synchformer, CLAP and SigLIP2, and LoRA on top of a model.

Every file and folder is chosen from the `foley` models folder (ComfyUI's `models/foley`, or the
runner's `--models DIR/foley`). Models are loaded for the compute device and parked on the offload
device; each stage node moves what it needs onto the compute device and back.
"""
from __future__ import annotations

import torch

from ..pipeline import PRECISIONS, load_foley_model, load_image_encoder, load_synchformer, load_text_encoder, load_vae
from .common import LOADERS, blame, file_choices, load_model, model_combo, model_path

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


def describe_model(model: torch.nn.Module) -> str:
    """'XXL, 5.13 B params, weights bf16, compute bf16' for the loader's info output."""
    by_dtype: dict[torch.dtype, int] = {}
    for parameter in model.parameters():
        by_dtype[parameter.dtype] = by_dtype.get(parameter.dtype, 0) + parameter.numel()
    stored = max(by_dtype, key=by_dtype.get)
    variant = getattr(getattr(model, "config", None), "variant", type(model).__name__)
    return (f"{variant}, {_count(sum(by_dtype.values()))} params, weights {_SHORT_DTYPES.get(stored, str(stored))}, "
            f"compute {_SHORT_DTYPES.get(model.dtype, str(model.dtype))}")


class SyncFoleyModelLoader:
    DESCRIPTION = ("Loads a HunyuanVideo-Foley diffusion model (XXL, XL or a fine-tuned one of the same layout) "
                   "from models/foley, .pth or .safetensors. The info output says which size it is.")
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = ("FOLEY_MODEL", "STRING")
    RETURN_NAMES = ("model", "info")
    OUTPUT_TOOLTIPS = ("The Foley MM-DiT, for Foley Sampler or Apply Foley LoRA.",
                       "What was loaded: size (XXL/XL), parameter count, weight and compute precision.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": model_combo("Checkpoint file in models/foley, e.g. hunyuanvideo_foley.pth (XXL) or "
                                      "hunyuanvideo_foley_xl.pth (XL)."),
            "precision": (list(PRECISIONS), {"default": "auto", "tooltip": PRECISION_TOOLTIP}),
        }}

    def load(self, model_name: str, precision: str):
        model = load_model(load_foley_model, model_path(model_name, "model_name"), precision, "model_name")
        return model, describe_model(model)


class SyncFoleyVAELoader:
    DESCRIPTION = "Loads the DAC-VAE (vae_128d_48k.pth) that turns Foley latents into 48 kHz audio and back."
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = ("FOLEY_VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The DAC-VAE, for Foley VAE Decode and Foley VAE Encode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": model_combo("DAC-VAE checkpoint in models/foley (vae_128d_48k.pth)."),
            "precision": (list(PLAIN_PRECISIONS), {"default": "fp32", "tooltip": "fp32 is recommended: the decoder "
                                                   "amplifies low-precision error block by block."}),
        }}

    def load(self, vae_name: str, precision: str):
        return (load_model(load_vae, model_path(vae_name, "vae_name"), precision, "vae_name"),)


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
        path = model_path(synchformer_name, "synchformer_name")
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
        return (load_model(load_text_encoder, model_path(folder, "folder", "model folder"), precision, "folder"),)


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
        return (load_model(load_image_encoder, model_path(folder, "folder", "model folder"), precision, "folder"),)


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
        path = model_path(lora_name, "lora_name")
        try:
            from ..models.lora import apply_lora
        except ImportError as error:
            raise RuntimeError(f"lora_name: LoRA support is missing from this installation ({error})") from error
        with blame("lora_name"):
            return (apply_lora(model, path, strength),)


NODES = {
    "SyncFoleyModelLoader": (SyncFoleyModelLoader, "Load Foley Model"),
    "SyncFoleyVAELoader": (SyncFoleyVAELoader, "Load Foley DAC-VAE"),
    "SyncFoleySynchformerLoader": (SyncFoleySynchformerLoader, "Load Synchformer"),
    "SyncFoleyTextEncoderLoader": (SyncFoleyTextEncoderLoader, "Load CLAP Text Encoder"),
    "SyncFoleyImageEncoderLoader": (SyncFoleyImageEncoderLoader, "Load SigLIP2 Image Encoder"),
    "SyncFoleyLoRA": (SyncFoleyLoRA, "Apply Foley LoRA"),
}
