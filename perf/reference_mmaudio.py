"""`syncfoley bench reference --family mmaudio`: our MMAudio network next to the public MMAudio code.

Both run on the same random weights (the reference takes our tensors, so memory holds one copy), the
same inputs, dtype, device and threads. The reference comes from the user's own clone of
github.com/hkchengrex/MMAudio (`--reference-src`); nothing of it ships with this package. Its model
modules import a few packages only for loading and training (torchdiffeq's adaptive solver,
omegaconf for a config file, huggingface_hub for downloads); where those are not installed, inert
stand-ins are registered for the names imported (`STAND_INS`), and the code that runs never uses them.

One step is one classifier-free-guidance evaluation as sampling runs it: batch 2, the conditional and
the empty branch, both at the same latents and time. The reference runs `predict_flow` on its
`preprocess_conditions` (the conditions cached as its own sampler caches them), ours `velocity` on
its prepared conditions. Rounds are interleaved so that the load of a shared machine touches both
alike; medians are reported, with the process's CPU seconds beside the wall-clock ones.
"""
from __future__ import annotations

import dataclasses
import importlib
import statistics
import sys
import time
import types
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..models import mmaudio_config
from ..models.mmaudio import MMAudioConditions, MMAudioNet
from .memory import track_peak_memory
from .reference import ReferenceError

NETWORK_MODULE = "mmaudio.model.networks"
# Bench-only size for quick checks: the release's layout at hidden 128 with one block of each kind.
SIZES = {**mmaudio_config.NAMED_CONFIGS, "tiny": lambda: mmaudio_config.sized(20, 2, 2, 1)}


def _stand_in(name: str, **attributes) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attributes, __syncfoley_stand_in__=True)
    sys.modules[name] = module


def _refuse(what: str):
    def call(*args, **kwargs):
        raise ReferenceError(f"the benchmark's stand-in for {what} was called; install the real package")
    return call


STAND_INS = {
    "torchdiffeq": lambda: _stand_in("torchdiffeq", odeint=_refuse("torchdiffeq.odeint")),
    "omegaconf": lambda: _stand_in("omegaconf", OmegaConf=type("OmegaConf", (), {"load": staticmethod(_refuse("OmegaConf.load"))})),
    "huggingface_hub": lambda: _stand_in("huggingface_hub", PyTorchModelHubMixin=type("PyTorchModelHubMixin", (), {}),
                                         hf_hub_download=_refuse("huggingface_hub.hf_hub_download")),
}


def install_stand_ins() -> list[str]:
    """Register inert stand-ins for the packages of `STAND_INS` this machine lacks; returns their names."""
    installed = []
    for name, install in STAND_INS.items():
        try:
            importlib.import_module(name)
        except ImportError:
            install()
            installed.append(name)
    return installed


def reference_module(source: str | Path, name: str = NETWORK_MODULE) -> types.ModuleType:
    """A module of the reference (default: its networks), imported from a source checkout."""
    source = Path(source).expanduser().resolve()
    if not (source / "mmaudio" / "model" / "networks.py").is_file():
        raise ReferenceError(
            f"{source} is not an MMAudio source checkout (no mmaudio/model/networks.py); clone "
            "github.com/hkchengrex/MMAudio and pass its folder as --reference-src")
    loaded = sys.modules.get("mmaudio")
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(str(source)):
        for module in [m for m in sys.modules if m == "mmaudio" or m.startswith("mmaudio.")]:
            del sys.modules[module]  # another checkout was imported before: use this one
    install_stand_ins()
    if str(source) not in sys.path:
        sys.path.insert(0, str(source))
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ReferenceError(f"could not import the reference from {source}: {error}; install what it names") from error


def mmaudio_size(name: str, blocks: str | None = None) -> mmaudio_config.MMAudioConfig:
    if name not in SIZES:
        raise ReferenceError(f"unknown MMAudio size '{name}'; known: {', '.join(SIZES)}")
    config = SIZES[name]()
    if blocks:
        joint, fused = (int(n) for n in blocks.split(","))
        config = replace(config, joint_blocks=joint, fused_blocks=fused)
    return config


def random_state_dict(model: nn.Module, seed: int = 0, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Random tensors for every entry of `model`'s state dict (built on the meta device), generated one
    at a time in fp32 on the CPU: matrices scaled by 1/sqrt(fan-in), norm weights 1, the rest small."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, meta in model.state_dict().items():
        if any(part in name for part in skip):
            continue
        if meta.ndim >= 2 and meta.shape[0] > 1 and meta[0].numel() > 1:
            out[name] = torch.randn(meta.shape, generator=generator).mul_(0.5 / meta[0].numel() ** 0.5)
        elif name.endswith("norm.weight"):
            out[name] = torch.ones(meta.shape)
        else:
            out[name] = torch.randn(meta.shape, generator=generator).mul_(0.1)
    return out


def random_network(config: mmaudio_config.MMAudioConfig, dtype=torch.float32, device="cpu", seed: int = 0) -> MMAudioNet:
    """A network of `config` with random weights, loaded through our own loader (real-size tensors)."""
    with torch.device("meta"):
        shapes = MMAudioNet(config)
    state_dict = random_state_dict(shapes, seed)
    state_dict["latent_std"] = state_dict["latent_std"].abs_().add_(0.5)
    return MMAudioNet.from_checkpoint(state_dict, dtype=dtype, device=device)


def build_reference_network(model: MMAudioNet, seconds: float, source: str | Path) -> nn.Module:
    """The reference `MMAudio` of `model`'s size and `seconds`' lengths, holding `model`'s tensors."""
    networks = reference_module(source)
    c = model.config
    latent = c.latent_length(seconds)
    clip, sync = c.condition_lengths(latent)
    with torch.device("meta"):
        reference = networks.MMAudio(
            latent_dim=c.latent_dim, clip_dim=c.clip_dim, sync_dim=c.sync_dim, text_dim=c.text_dim,
            hidden_dim=c.hidden, depth=c.depth, fused_depth=c.fused_blocks, num_heads=c.heads, mlp_ratio=4.0,
            latent_seq_len=latent, clip_seq_len=clip, sync_seq_len=sync, text_seq_len=c.text_length, v2=c.v2)
    try:
        reference.load_state_dict(model.state_dict(), strict=True, assign=True)
    except RuntimeError as error:
        raise ReferenceError(f"the reference's parameters do not match ours: {error}") from error
    # Derived buffers (rotary tables, timestep frequencies) were computed on the meta device: redo them.
    reference.update_seq_lengths(latent, clip, sync)
    embedder = reference.t_embed
    if any(b.is_meta for b in embedder.buffers()):
        with torch.device("cpu"):
            fresh = type(embedder)(embedder.dim, embedder.mlp[0].in_features, embedder.max_period)
        for name, buffer in fresh.named_buffers():
            setattr(embedder, name, buffer.to(model.device))
    left = [name for name, t in [*reference.named_parameters(), *reference.named_buffers()] if t.is_meta]
    if left:
        raise ReferenceError(f"the reference has tensors our checkpoint lacks: {left[:5]}")
    return reference.eval().requires_grad_(False)


def random_features(config: mmaudio_config.MMAudioConfig, seconds: float, seed: int = 1, device="cpu", dtype=torch.float32):
    """(clip, sync, text, noise) of batch 1 at `seconds`' lengths: CLIP features of unit norm as the
    release encodes them, Synchformer features, and channel-last latent noise."""
    g = torch.Generator().manual_seed(seed)
    latent = config.latent_length(seconds)
    clip_length, sync_length = config.condition_lengths(latent)
    clip = nn.functional.normalize(torch.randn(1, clip_length, config.clip_dim, generator=g), dim=-1)
    sync = torch.randn(1, sync_length, config.sync_dim, generator=g)
    text = nn.functional.normalize(torch.randn(1, config.text_length, config.text_dim, generator=g), dim=-1)
    noise = torch.randn(1, latent, config.latent_dim, generator=g)
    return tuple(t.to(device, dtype) for t in (clip, sync, text, noise))


def stack_conditions(parts):
    """The reference's `PreprocessedConditions` of several branches as one batch."""
    return type(parts[0])(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                             for f in dataclasses.fields(parts[0])})


def measure(fn, device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def relative_difference(output: torch.Tensor, expected: torch.Tensor) -> float:
    """max |output - expected| / max |expected|."""
    output, expected = output.float(), expected.float()
    return ((output - expected).abs().max() / expected.abs().max()).item()


@torch.no_grad()
def side_by_side(config: str, blocks: str | None, seconds: float, dtype: torch.dtype, device: str, repeats: int,
                 source: str | Path) -> list[dict]:
    ours = random_network(mmaudio_size(config, blocks), dtype, device)
    reference = build_reference_network(ours, seconds, source)
    clip, sync, text, noise = random_features(ours.config, seconds, device=device, dtype=dtype)
    x, t = noise.repeat(2, 1, 1), torch.full((2,), 0.4, device=device, dtype=dtype)  # both CFG branches
    latent = x.shape[1]
    our_conditions = MMAudioConditions.cat([ours.prepare(clip, sync, text, latent), ours.empty_conditions(1, latent)])
    their_conditions = stack_conditions([reference.preprocess_conditions(clip, sync, text),
                                         reference.get_empty_conditions(1)])
    calls = {
        "reference": lambda: reference.predict_flow(x, t, their_conditions),
        "syncfoley step": lambda: ours.velocity(x, t, our_conditions),
    }
    expected = calls["reference"]()
    rows = []
    for name, call in calls.items():
        with track_peak_memory(device) as peak:
            output = call()
        rows.append({"implementation": name, "peak_mib": peak.peak_mib,
                     "rel_diff": relative_difference(output, expected)})
    # Interleaved rounds, so that drifting machine load touches every implementation alike.
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(measure(call, device))
    reference_s = statistics.median(wall for wall, _ in times["reference"])
    for row in rows:
        walls, cpus = zip(*times[row["implementation"]])
        step_s = statistics.median(walls)
        row.update(step_s=step_s, cpu_s=statistics.median(cpus), steps_per_s=1 / step_s, speedup=reference_s / step_s)
    return rows
