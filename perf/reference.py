"""`syncfoley bench reference`: our DiT and the public HunyuanVideo-Foley implementation, side by side.

Both models run on the same random weights (the reference shares our tensors, so memory holds one
copy), the same inputs, dtype, device and thread count. The reference comes from the user's own
checkout of github.com/Tencent-Hunyuan/HunyuanVideo-Foley (`--reference-src`); nothing of it ships
with this package. Its model class uses diffusers only for config bookkeeping, so when diffusers is
not installed, inert stand-ins are registered for the three names it imports.

One forward at batch 2 is one classifier-free-guidance step, so steps per second = 1 / forward_s.
The reference runs as its pipeline runs it: weights in `dtype` under autocast when `dtype` is not
fp32. Ours runs as our sampler runs it: conditions prepared once, then `velocity` per step; the
"forward" row adds the preparation to every call, for a like-for-like single call.
"""
from __future__ import annotations

import importlib
import sys
import types
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from ..models.dit import FoleyDiT
from .bench import random_dit, random_features, time_call
from .memory import track_peak_memory

MODULE = "hunyuanvideo_foley.models.hifi_foley"


class ReferenceError(RuntimeError):
    pass


def _install_diffusers_stand_ins() -> None:
    try:
        importlib.import_module("diffusers")
        return
    except ImportError:
        pass

    def register_to_config(init):
        return init

    package = types.ModuleType("diffusers")
    models = types.ModuleType("diffusers.models")
    configuration = types.ModuleType("diffusers.configuration_utils")
    models.ModelMixin = type("ModelMixin", (nn.Module,), {})
    configuration.ConfigMixin = type("ConfigMixin", (), {})
    configuration.register_to_config = register_to_config
    package.models, package.configuration_utils = models, configuration
    sys.modules.update({"diffusers": package, "diffusers.models": models, "diffusers.configuration_utils": configuration})


def reference_class(source: str | Path):
    """The reference's `HunyuanVideoFoley` class, imported from a source checkout."""
    source = Path(source).expanduser().resolve()
    if not (source / "hunyuanvideo_foley" / "models" / "hifi_foley.py").is_file():
        raise ReferenceError(
            f"{source} is not a HunyuanVideo-Foley source checkout (no hunyuanvideo_foley/models/hifi_foley.py); "
            "clone github.com/Tencent-Hunyuan/HunyuanVideo-Foley and pass its folder as --reference-src"
        )
    _install_diffusers_stand_ins()
    if str(source) not in sys.path:
        sys.path.insert(0, str(source))
    try:
        return importlib.import_module(MODULE).HunyuanVideoFoley
    except ImportError as error:
        raise ReferenceError(f"could not import the reference from {source}: {error}; install what it names") from error


class _Config(dict):
    __getattr__ = dict.get


def reference_kwargs(model: FoleyDiT, seconds: float) -> dict:
    """The release's `model_kwargs` (configs/hunyuanvideo-foley-*.yaml) for a model of our size."""
    c = model.config
    return dict(
        depth_triple_blocks=c.triple_blocks, depth_single_blocks=c.single_blocks, hidden_size=c.hidden,
        num_heads=c.heads, mlp_ratio=4, mlp_act_type="gelu_tanh", qkv_bias=True, qk_norm=True, qk_norm_type="rms",
        attn_mode="torch", interleaved_audio_visual_rope=True, sync_modulation=False, add_sync_feat_to_audio=True,
        condition_projection="linear", sync_feat_dim=c.sync_dim, condition_dim=c.text_dim, clip_dim=c.clip_dim,
        audio_vae_latent_dim=c.latent_dim, patch_size=1, clip_length=c.clip_length(seconds),
        sync_length=c.sync_length(seconds),
    )


def build_reference(model: FoleyDiT, seconds: float, source: str | Path) -> nn.Module:
    """The reference model of `model`'s size holding `model`'s own tensors (no second copy)."""
    cls = reference_class(source)
    with torch.device("meta"):
        reference = cls(_Config(model_config=_Config(model_kwargs=reference_kwargs(model, seconds))))
    try:
        reference.load_state_dict(model.state_dict(), strict=True, assign=True)
    except RuntimeError as error:
        raise ReferenceError(f"the reference's parameters do not match ours: {error}") from error
    left = [name for name, t in [*reference.named_parameters(), *reference.named_buffers()] if t.is_meta]
    if left:
        raise ReferenceError(f"the reference has tensors our checkpoint lacks: {left[:5]}")
    return reference.eval().requires_grad_(False)


@torch.no_grad()
def side_by_side(config: str, blocks: str | None, seconds: float, dtype: torch.dtype, device: str,
                 repeats: int, source: str | Path, compile_backend: str | None = None) -> list[dict]:
    ours = random_dit(config, blocks, dtype, device)
    reference = build_reference(ours, seconds, source)
    text, visual = random_features(ours, seconds)
    batch, length = 2, ours.config.latent_length(seconds)
    inputs = dict(
        x=torch.randn(batch, ours.config.latent_dim, length, device=device, dtype=dtype),
        t=torch.full((batch,), 500.0, device=device),
        text=text.positive.expand(batch, -1, -1).to(device, dtype),
        clip=visual.clip.expand(batch, -1, -1).to(device, dtype),
        sync=visual.sync.expand(batch, -1, -1).to(device, dtype),
    )
    autocast = (torch.autocast(torch.device(device).type, dtype=dtype) if dtype != torch.float32 else nullcontext())
    conditions = ours.prepare(inputs["text"], inputs["clip"], inputs["sync"], length)
    if compile_backend:  # after the reference took our tensors: it runs uncompiled, as released
        ours.compile_blocks(backend=compile_backend)

    def reference_forward():
        with autocast:
            return reference(x=inputs["x"], t=inputs["t"], cond=inputs["text"], clip_feat=inputs["clip"],
                             sync_feat=inputs["sync"], return_dict=False)

    calls = {
        "reference": reference_forward,
        "syncfoley step": lambda: ours.velocity(inputs["x"], inputs["t"], conditions),
        "syncfoley forward": lambda: ours(inputs["x"], inputs["t"], inputs["text"], inputs["clip"], inputs["sync"]),
    }
    expected = reference_forward()
    expected = (expected[0] if isinstance(expected, (tuple, list)) else expected).float()
    rows = []
    for name, call in calls.items():
        with track_peak_memory(device) as peak:
            output = call()
        output = (output[0] if isinstance(output, (tuple, list)) else output).float()
        rows.append({"implementation": name, "peak_mib": peak.peak_mib,
                     "rel_diff": ((output - expected).abs().max() / expected.abs().max()).item()})
    # Interleaved rounds, so that drifting machine load touches every implementation alike.
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(time_call(call, device, repeats=1, warmup=0))
    reference_s = sorted(times["reference"])[repeats // 2]
    for row in rows:
        forward_s = sorted(times[row["implementation"]])[repeats // 2]
        row.update(forward_s=forward_s, steps_per_s=1 / forward_s, speedup=reference_s / forward_s)
    return rows
