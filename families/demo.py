"""The built-in demo model set: a small FoleyDiT trained on the synthetic world (`demo/`), a 16 kHz
DAC-VAE and weight-light stand-in encoders. It is the HunyuanVideo-Foley layout with its own
encoders and the defaults its evaluation chose (`demo/manifest.json`)."""
from __future__ import annotations

from .base import Family, SamplingDefaults

DEMO = Family(
    name="syncfoley-demo",
    title="the SyncFoley demo model",
    # 25 steps as evaluated; SyncCFG: the shift anchor at sync scale 2, the best on the validation clips
    # (3 seeds; `eval-sync --sweep`, manifest "sync_scale_sweep"). The static anchor never beat CFG there.
    defaults=SamplingDefaults(steps=25, cfg_scale=4.5, sync_scale=2.0, anchor="shift", negative_prompt="noisy, harsh"),
    text_encoders=("demo-text",),
    image_encoders=("demo-image",),
    sync_encoders=("demo-sync",),
    loaders_hint="load every part of it as syncfoley-demo",
)
