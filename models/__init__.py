"""Plain PyTorch networks of both families and their checkpoint readers (never ComfyUI, never nodes).

The names below import their module on first access, so `import syncfoley.models.dit` stays light.
HunyuanVideo-Foley: `FoleyDiT`, `DacVae`, `Synchformer`. MMAudio: `MMAudioNet`, `MelVae`, `BigVGAN`,
`MelCodec` (VAE + vocoder), `MMAudioClip`, `mel_spectrogram`.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "FoleyDiT": ".dit", "DacVae": ".dac_vae", "Synchformer": ".synchformer",
    "MMAudioNet": ".mmaudio", "MelVae": ".mel_vae", "BigVGAN": ".bigvgan", "MelCodec": ".mel_codec",
    "MMAudioClip": ".clip", "mel_spectrogram": ".mel",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
