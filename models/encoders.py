"""Text and image encoders over `transformers`: the CLAP text tower and the SigLIP2 image tower.

Both load from local folders only (never the hub) and reproduce the reference preprocessing:
- CLAP (`laion/larger_clap_general`): negative and positive prompts are tokenised together with
  padding (so they share one length; the DiT later sees the padding tokens too), the text tower gets
  the attention mask, and `last_hidden_state` is cut to the first 77 tokens *after* encoding.
- SigLIP2 (`google/siglip2-base-patch16-512`): frames arrive resized and normalised to [-1, 1] by the
  media package; the encoder runs `get_image_features` in chunks and keeps the pooled 768-d vector.

`transformers` is imported on first load, so importing this module (for `FrameSpec`) stays cheap.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError

CLAP_REPO = "laion/larger_clap_general"
SIGLIP2_REPO = "google/siglip2-base-patch16-512"
CLAP_MODEL_TYPES = ("clap", "clap_text_model")
SIGLIP_MODEL_TYPES = ("siglip", "siglip2")
TEXT_TOKENS = 77  # the DiT's text length: features past it are dropped

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_KNOWN_MODEL_TYPES = {
    "clap": f"a CLAP audio-text model (like {CLAP_REPO})",
    "clap_text_model": "a CLAP text tower",
    "clap_audio_model": "a CLAP audio tower",
    "siglip": f"a SigLIP image-text model (like {SIGLIP2_REPO})",
    "siglip2": "a SigLIP2 NaFlex image-text model",
    "siglip_vision_model": "a SigLIP vision tower alone",
    "siglip2_vision_model": "a SigLIP2 vision tower alone",
    "clip": "a CLIP image-text model",
    "roberta": "a RoBERTa text model",
}


class EncoderLoadError(CheckpointError):
    """A model folder that cannot be used as an encoder; the message says what is wrong and the fix.

    Subclasses `CheckpointError` (itself a `ValueError`), so callers catch every loading problem at once.
    """


@dataclass(frozen=True)
class FrameSpec:
    """What frames a visual encoder wants from the media package."""

    fps: float
    size: int
    resize: str  # "stretch": to size x size; "short_side_center_crop": short side to size, then centre crop
    interpolation: str  # "bilinear" | "bicubic"

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.size <= 0:
            raise ValueError(f"FrameSpec needs a positive fps and size, got fps={self.fps}, size={self.size}")
        if self.resize not in ("stretch", "short_side_center_crop"):
            raise ValueError(f"FrameSpec.resize must be 'stretch' or 'short_side_center_crop', got {self.resize!r}")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"FrameSpec.interpolation must be 'bilinear' or 'bicubic', got {self.interpolation!r}")


SIGLIP2_FRAME_SPEC = FrameSpec(fps=8, size=512, resize="stretch", interpolation="bilinear")
SYNCHFORMER_FRAME_SPEC = FrameSpec(fps=25, size=224, resize="short_side_center_crop", interpolation="bicubic")


# ----------------------------------------------------------------------------------------------
# Folder checks shared by both loaders


def _read_model_type(folder: str | os.PathLike, what: str, repo: str, needs: str) -> tuple[Path, str]:
    """Check the folder exists and holds config.json + weights; return (folder, model_type)."""
    folder = Path(folder).expanduser()
    fix = f"download {repo} into {folder}: it must contain {needs}"
    if not folder.exists():
        raise EncoderLoadError(f"{what} folder not found: '{folder}'. Fix: {fix}.")
    if not folder.is_dir():
        raise EncoderLoadError(f"{what}: '{folder}' is a file, not a folder. Pass the folder that holds "
                               f"config.json and the weights (from {repo}).")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise EncoderLoadError(f"{what} folder '{folder}' has no config.json. Fix: {fix}.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EncoderLoadError(f"{what}: cannot read '{config_path}' ({exc}). Download it again from {repo}.") from exc
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not model_type:
        raise EncoderLoadError(f"{what}: '{config_path}' has no model_type, so it is not a transformers model "
                               f"config. Fix: {fix}.")
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        raise EncoderLoadError(f"{what} folder '{folder}' has config.json but no model weights "
                               f"({' or '.join(_WEIGHT_FILES[::2])}). Fix: {fix}.")
    return folder, model_type


def _wrong_model(what: str, folder: Path, model_type: str, expected: tuple[str, ...], repo: str) -> EncoderLoadError:
    found = _KNOWN_MODEL_TYPES.get(model_type, "a model this loader does not know")
    wanted = " or ".join(repr(t) for t in expected)
    return EncoderLoadError(f"{what}: '{folder}' holds {found} (config.json model_type {model_type!r}), but this "
                            f"loader expects {repo} (model_type {wanted}). Point it at the {repo} folder.")


@contextlib.contextmanager
def _quiet_transformers():
    """Hide the load report that lists the towers we skip on purpose (e.g. CLAP's audio tower)."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def _load_pretrained(model_class, folder: Path, dtype: torch.dtype, what: str, required_prefix: str = ""):
    """`from_pretrained` offline in `dtype`; fail if any needed parameter was missing from the files."""
    import transformers

    # transformers 5 renamed `torch_dtype` to `dtype` (4.56+ accept both; 4.5x before only the old one).
    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    dtype_kwarg = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    try:
        with _quiet_transformers():
            model, info = model_class.from_pretrained(folder, local_files_only=True, output_loading_info=True,
                                                      **{dtype_kwarg: dtype})
    except OSError as exc:
        raise EncoderLoadError(f"{what}: transformers could not load '{folder}': {exc}") from exc
    parameter_names = {name for name, _ in model.named_parameters()}
    missing = sorted(key for key in info.get("missing_keys", ())
                     if key in parameter_names and key.startswith(required_prefix))
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise EncoderLoadError(f"{what}: the weights in '{folder}' lack {len(missing)} tensors the model needs "
                               f"({shown}); the download is incomplete or the folder holds another model.")
    return model.eval().requires_grad_(False)


def _as_pooled(output) -> torch.Tensor:
    """`get_image_features` gives a tensor on transformers 4.x and an output object on 5.x."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None and isinstance(output, (tuple, list)) and len(output) > 1:
        pooled = output[1]
    if not isinstance(pooled, torch.Tensor):
        raise TypeError(f"get_image_features returned {type(output).__name__} without a pooled tensor")
    return pooled


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ----------------------------------------------------------------------------------------------


class ClapTextEncoder:
    """CLAP text tower: prompts -> per-token features `[B, L<=77, 768]`, prompts padded together."""

    kind = "clap"  # stamped on the features it makes, so a model of another family can refuse them
    max_tokens: int = TEXT_TOKENS

    def __init__(self, model: torch.nn.Module, tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.feature_dim: int = model.config.hidden_size
        self.token_limit = self._token_limit(model.config, tokenizer)

    @staticmethod
    def _token_limit(config, tokenizer) -> int:
        # RoBERTa positions start after the padding index, so the table holds max_positions - pad - 1
        # tokens; the tokenizer's own limit is a huge sentinel when its config does not set one.
        positions = config.max_position_embeddings - (config.pad_token_id or 0) - 1
        return max(2, min(int(tokenizer.model_max_length), positions))

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None) -> "ClapTextEncoder":
        """Load the text tower (and tokenizer) from a full CLAP folder or a text-tower-only folder.

        `dtype` defaults to float32, `device` to CPU. Raises `EncoderLoadError` for a missing folder,
        missing config/weights/tokenizer files, or a folder holding some other model.
        """
        what = "CLAP text encoder"
        needs = "config.json, the model weights and the tokenizer files"
        folder, model_type = _read_model_type(folder, what, CLAP_REPO, needs)
        if model_type not in CLAP_MODEL_TYPES:
            raise _wrong_model(what, folder, model_type, CLAP_MODEL_TYPES, CLAP_REPO)
        has_bpe_files = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
        if not ((folder / "tokenizer.json").is_file() or has_bpe_files):
            raise EncoderLoadError(f"{what} folder '{folder}' has no tokenizer files (tokenizer.json, or vocab.json "
                                   f"+ merges.txt). Fix: download them from {CLAP_REPO} into {folder}.")

        from transformers import AutoTokenizer, ClapTextModelWithProjection

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EncoderLoadError(f"{what}: cannot load the tokenizer in '{folder}': {exc}. "
                                   f"Download the tokenizer files of {CLAP_REPO} again.") from exc
        # On a full ClapModel folder this picks `text_model.*` + `text_projection.*` and skips the audio tower.
        model = _load_pretrained(ClapTextModelWithProjection, folder, dtype or torch.float32, what)
        return cls(model, tokenizer).to(device or "cpu")

    @property
    def device(self) -> torch.device:
        return _model_device(self.model)

    def to(self, device: str | torch.device) -> "ClapTextEncoder":
        """Move the model (for offloading between pipeline stages); returns self."""
        self.model.to(device)
        return self

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Encode prompts in one padded batch -> float32 `[B, min(L, 77), feature_dim]` on the model device.

        Pass the negative and positive prompt together (as the reference does) so both share one length.
        Tokens past the tokenizer/model limit are truncated so an overlong prompt cannot crash.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ValueError("ClapTextEncoder.encode needs at least one prompt")
        tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.token_limit,
                                return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.model(**tokens).last_hidden_state
        return hidden[:, : self.max_tokens].float()


class Siglip2ImageEncoder:
    """SigLIP2 image tower: frames `[T, 3, S, S]` in [-1, 1] -> pooled features `[T, 768]`."""

    kind = "siglip2"

    frame_spec: FrameSpec = SIGLIP2_FRAME_SPEC

    def __init__(self, model: torch.nn.Module, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        vision = model.config.vision_config
        self.feature_dim: int = vision.hidden_size
        self.patch_size: int = vision.patch_size
        # The fixed-resolution (SigLIP-architecture) checkpoints need exactly their image size; the
        # NaFlex (siglip2) ones interpolate their position grid, so any multiple of the patch works.
        self.is_naflex = model.config.model_type == "siglip2"
        if not self.is_naflex:
            self.frame_spec = FrameSpec(SIGLIP2_FRAME_SPEC.fps, vision.image_size, "stretch", "bilinear")

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None, batch_size: int = 64) -> "Siglip2ImageEncoder":
        """Load the SigLIP2 model (model_type 'siglip' for the fixed-resolution checkpoints, 'siglip2'
        for NaFlex ones) with `AutoModel`. `dtype` defaults to float32, `device` to CPU.
        """
        what = "SigLIP2 image encoder"
        folder, model_type = _read_model_type(folder, what, SIGLIP2_REPO, "config.json and the model weights")
        if model_type not in SIGLIP_MODEL_TYPES:
            raise _wrong_model(what, folder, model_type, SIGLIP_MODEL_TYPES, SIGLIP2_REPO)

        from transformers import AutoModel

        model = _load_pretrained(AutoModel, folder, dtype or torch.float32, what, required_prefix="vision_model.")
        return cls(model, batch_size=batch_size).to(device or "cpu")

    @property
    def device(self) -> torch.device:
        return _model_device(self.model)

    def to(self, device: str | torch.device) -> "Siglip2ImageEncoder":
        """Move the model (for offloading between pipeline stages); returns self."""
        self.model.to(device)
        return self

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames `[T, 3, S, S]` (already resized, values in [-1, 1]) -> float32 `[T, feature_dim]`.

        Runs `batch_size` frames at a time; only the current chunk is moved to the model's device,
        so a long clip can stay on the CPU.
        """
        self._check_frames(frames)
        parameter = next(self.model.parameters())
        chunks = []
        with torch.inference_mode():
            for start in range(0, frames.shape[0], self.batch_size):
                chunk = frames[start : start + self.batch_size].to(parameter.device, parameter.dtype)
                chunks.append(_as_pooled(self._image_features(chunk)).float())
        if not chunks:
            return torch.zeros(0, self.feature_dim, device=parameter.device)
        return torch.cat(chunks)

    def _image_features(self, pixels: torch.Tensor):
        if not self.is_naflex:
            return self.model.get_image_features(pixel_values=pixels)
        # NaFlex takes patch sequences: (row, column) order, each patch flattened as (y, x, channel).
        count, channels, height, width = pixels.shape
        rows, columns = height // self.patch_size, width // self.patch_size
        patches = pixels.reshape(count, channels, rows, self.patch_size, columns, self.patch_size)
        patches = patches.permute(0, 2, 4, 3, 5, 1).reshape(count, rows * columns, -1)
        mask = torch.ones(count, rows * columns, dtype=torch.long, device=pixels.device)
        shapes = torch.tensor([[rows, columns]], device=pixels.device).expand(count, 2)
        return self.model.get_image_features(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes)

    def _check_frames(self, frames: torch.Tensor) -> None:
        if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise ValueError(f"SigLIP2 frames must be a [T, 3, S, S] tensor, got {shape}")
        height, width = frames.shape[-2:]
        if self.is_naflex:
            if height % self.patch_size or width % self.patch_size:
                raise ValueError(f"SigLIP2 frames must be a multiple of the patch size {self.patch_size}, "
                                 f"got {height}x{width}")
        elif (height, width) != (self.frame_spec.size, self.frame_spec.size):
            raise ValueError(f"SigLIP2 frames must be {self.frame_spec.size}x{self.frame_spec.size} "
                             f"(resize with encoder.frame_spec first), got {height}x{width}")
