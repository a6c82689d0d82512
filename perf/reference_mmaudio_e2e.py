"""`syncfoley bench reference --family mmaudio --e2e`: a whole clip, ours against the reference's loop.

From the same random features and noise, both sample with CFG (25 Euler steps by default) and turn
the latents into sound with the mel VAE and the BigVGAN vocoder, all at the release's sizes with
random weights, shared between the two (the reference takes our tensors). Ours runs as the package
runs it: `generate_latents` through the family's `FlowModel` (guidance branches batched), then the
codec. The reference runs as its `eval_utils.generate` does after encoding: `preprocess_conditions`,
`get_empty_conditions`, `FlowMatching.to_data` over `ode_wrapper` (its two branches one after the
other), `unnormalize`, the VAE's `decode` and the vocoder. The encoders are left out: the features
are given.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import torch

from ..families import as_flow
from ..models.bigvgan import BigVGAN
from ..models.bigvgan_config import BigVGANConfig
from ..models.mel_vae import MelVae, MelVaeConfig
from ..sampling.features import TextFeatures, VisualFeatures
from ..sampling.generate import SamplingOptions, generate_latents
from ..sampling.guidance import CFG
from .memory import track_peak_memory
from .reference import ReferenceError
from .reference_mmaudio import (build_reference_network, measure, mmaudio_size, random_features, random_network,
                                random_state_dict, reference_module, relative_difference)

CODEC_SIZES = {"16k": (MelVaeConfig.release_16k, BigVGANConfig.release_16k),
               "44k": (MelVaeConfig.release_44k, BigVGANConfig.release_v2_44k)}


def random_codec(mode: str, seed: int = 2) -> tuple[MelVae, BigVGAN]:
    """The release-size mel VAE decoder and vocoder of `mode` with random weights, through our loaders."""
    vae_config, vocoder_config = (make() for make in CODEC_SIZES[mode])
    with torch.device("meta"):
        vae_shapes, vocoder_shapes = MelVae(vae_config, with_encoder=False), BigVGAN(vocoder_config)
    vae = MelVae.from_checkpoint(random_state_dict(vae_shapes, seed, skip=("data_mean", "data_std")),
                                 with_encoder=False)
    weights = random_state_dict(vocoder_shapes, seed + 1, skip=(".filter",))
    for name in [n for n in weights if n.endswith(".weight_g")]:  # gains = norms: the weight is weight_v
        v = weights[name[:-1] + "v"]
        weights[name] = torch.linalg.vector_norm(v, dim=tuple(range(1, v.ndim)), keepdim=True)
    return vae, BigVGAN.from_checkpoint(weights, config=vocoder_config)


def reference_codec(vae: MelVae, vocoder: BigVGAN, mode: str, source: str | Path):
    """The reference's VAE (decoder) and vocoder holding our tensors (weight norms already folded)."""
    vae_module = reference_module(source, "mmaudio.ext.autoencoder.vae")
    with torch.device("meta"):
        their_vae = vae_module.get_my_vae(mode)
    del their_vae.encoder  # as the release's AutoEncoderModule does for decoding only
    _assign(their_vae, vae.state_dict(), "VAE")
    for layer in their_vae.modules():  # our tensors are normalised as its remove_weight_norm() leaves them
        if hasattr(layer, "weight_norm_removed"):
            layer.weight_norm_removed = True
    package = "mmaudio.ext.bigvgan" if mode == "16k" else "mmaudio.ext.bigvgan_v2"
    settings = reference_module(source, f"{package}.env").AttrDict(dataclasses.asdict(vocoder.config))
    with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):  # it prints as it goes
        if mode == "16k":
            their_vocoder = reference_module(source, f"{package}.models").BigVGANVocoder(settings)
        else:
            their_vocoder = reference_module(source, f"{package}.bigvgan").BigVGAN(settings, use_cuda_kernel=False)
        their_vocoder.remove_weight_norm()
    ours = {name.replace(".weight_v", ".weight"): t for name, t in vocoder.state_dict().items()
            if not name.endswith(".weight_g")}  # fused: weight_v holds the normalised weight
    _assign(their_vocoder, ours, "vocoder")
    return their_vae.eval().requires_grad_(False), their_vocoder.eval().requires_grad_(False)


def _assign(module: torch.nn.Module, state_dict: dict, what: str) -> None:
    try:
        module.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as error:
        raise ReferenceError(f"the reference {what}'s parameters do not match ours: {error}") from error
    left = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise ReferenceError(f"the reference {what} has tensors ours lacks: {left[:5]}")


def _run_clip(sample, decode, vocode, device) -> dict:
    """Each stage timed on the previous one's output; the working memory of the whole clip."""
    out, cpu = {}, 0.0
    stages = (("sampling_s", "latents", sample, None), ("decode_s", "mel", decode, "latents"),
              ("vocode_s", "wav", vocode, "mel"))
    with track_peak_memory(device) as peak:
        for timing, result, stage, source in stages:
            def call(stage=stage, result=result, source=source):
                out[result] = stage() if source is None else stage(out[source])
            out[timing], seconds = measure(call, device)
            cpu += seconds
    return {**out, "peak_mib": peak.peak_mib, "cpu_s": cpu}


@torch.no_grad()
def end_to_end(config: str, blocks: str | None, seconds: float, dtype: torch.dtype, device: str, source: str | Path,
               steps: int = 25, cfg_scale: float = 4.5) -> list[dict]:
    net = random_network(mmaudio_size(config, blocks), dtype, device)
    vae, vocoder = (m.to(device) for m in random_codec(net.config.mode))
    reference = build_reference_network(net, seconds, source)
    their_vae, their_vocoder = reference_codec(vae, vocoder, net.config.mode, source)
    flow_matching = reference_module(source, "mmaudio.model.flow_matching").FlowMatching(
        min_sigma=0, inference_mode="euler", num_steps=steps)
    clip, sync, text, noise = random_features(net.config, seconds, device=device, dtype=dtype)
    results = {}

    def ours():
        flow = as_flow(net)
        features = TextFeatures(text, net.empty_string_feat.unsqueeze(0))  # the release's empty negative
        visual = VisualFeatures(clip=clip, sync=sync, duration=seconds)
        options = SamplingOptions(steps=steps, window_seconds=0)
        return lambda: generate_latents(flow, features, visual, CFG(cfg_scale), options, seconds,
                                        noise=noise.transpose(1, 2)), vae.decode, vocoder

    def theirs():
        def sample():
            conditions = reference.preprocess_conditions(clip, sync, text)
            empty = reference.get_empty_conditions(1)
            wrapper = lambda t, x: reference.ode_wrapper(t, x, conditions, empty, cfg_scale)  # noqa: E731
            return reference.unnormalize(flow_matching.to_data(wrapper, noise.clone())).transpose(1, 2)
        return sample, their_vae.decode, their_vocoder

    for name, stages in (("reference", theirs), ("syncfoley", ours)):
        results[name] = _run_clip(*stages(), device)
    rows = []
    for name, result in results.items():
        total = result["sampling_s"] + result["decode_s"] + result["vocode_s"]
        rows.append({
            "implementation": name, "steps": steps, "sampling_s": result["sampling_s"],
            "step_s": result["sampling_s"] / steps, "decode_s": result["decode_s"], "vocode_s": result["vocode_s"],
            "total_s": total, "cpu_s": result["cpu_s"], "peak_mib": result["peak_mib"],
            "latent_rel_diff": relative_difference(result["latents"], results["reference"]["latents"]),
            "rel_diff": relative_difference(result["wav"], results["reference"]["wav"]),
        })
    reference_total = rows[0]["total_s"]
    for row in rows:
        row["speedup"] = reference_total / row["total_s"]
    return rows

