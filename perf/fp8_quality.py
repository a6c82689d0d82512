"""`syncfoley fp8-quality`: what fp8 weight storage does to the Foley DiT's output, against fp32.

Weights are random at the magnitudes of a trained model: PyTorch's default layer initialisation
(uniform in +-1/sqrt(fan_in), std 1/sqrt(3 fan_in)), which the trained demo model keeps (its
matrix weights sit at 1.0 to 1.3 times that std after 1500 steps). At XL width that puts the MLP
down-projections at std 0.008 and the single blocks' SwiGLU outputs at 0.005, where unscaled e4m3
loses most of its bits. Each precision runs the same network on the same inputs and noise:
velocity at three noise levels, and a 25-step Euler sample with CFG 4.5, each compared to fp32 by
cosine similarity and relative (Frobenius) error. Also: weight memory of the released models in
each precision, from their key lists.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..families.hunyuan import HUNYUAN
from ..media.files import write_report
from ..models import dit_config
from ..models.dit import FoleyDiT
from ..models.ops import CAST_LAYERS, set_precision, stored_bytes
from ..sampling.features import TextFeatures, VisualFeatures
from ..sampling.generate import SamplingOptions, prepare_velocity
from ..sampling.guidance import CFG
from ..sampling.samplers import euler
from ..sampling.schedules import linear_sigmas

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
# name: (compute dtype, weight storage, scaled, layers: "blocks" (the default) or "all")
PRECISIONS = {
    "bf16": (torch.bfloat16, None, True, "blocks"),
    "fp8_e4m3_unscaled": (torch.bfloat16, E4M3, False, "all"),  # the storage before scales
    "fp8_e4m3_scaled_all": (torch.bfloat16, E4M3, True, "all"),
    "fp8_e4m3_unscaled_blocks": (torch.bfloat16, E4M3, False, "blocks"),  # the layer choice without scales
    "fp8_e4m3_scaled": (torch.bfloat16, E4M3, True, "blocks"),  # the default now
    "fp8_e5m2_unscaled": (torch.bfloat16, E5M2, False, "all"),
    "fp8_e5m2_scaled": (torch.bfloat16, E5M2, True, "blocks"),
}


def release_like_state_dict(config: dit_config.FoleyDiTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """fp32 weights of `config` at the default-initialisation magnitudes (see the module notes)."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in FoleyDiT(config).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        weight_key = key[: -len("bias")] + "weight"
        if len(shape) >= 2 and key.endswith(".weight"):
            bound = 1 / math.sqrt(math.prod(shape[1:]))
        elif key.endswith(".bias") and len(shapes.get(weight_key, ())) >= 2:
            bound = 1 / math.sqrt(math.prod(shapes[weight_key][1:]))
        elif key.endswith(".weight"):  # norm scales
            state[key] = torch.ones(shape)
            continue
        else:  # learned tokens and positions
            state[key] = 0.02 * torch.randn(shape, generator=generator)
            continue
        state[key] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
    return state


def build(state: dict[str, torch.Tensor], precision: str | None) -> FoleyDiT:
    if precision is None:
        return FoleyDiT.from_checkpoint(state)
    dtype, storage, scaled, layers = PRECISIONS[precision]
    model = FoleyDiT.from_checkpoint(state)  # fp32, then converted as asked
    chosen = {n for n, m in model.named_modules() if isinstance(m, CAST_LAYERS)} if layers == "all" else None
    return set_precision(model, dtype, storage, scaled=scaled, layers=chosen)


def agreement(value: torch.Tensor, reference: torch.Tensor) -> dict:
    value, reference = value.double().flatten(), reference.double().flatten()
    return {"cosine": float(torch.nn.functional.cosine_similarity(value, reference, dim=0)),
            "rel_error": float((value - reference).norm() / reference.norm())}


def random_conditions(config: dit_config.FoleyDiTConfig, seconds: float, seed: int, text_tokens: int = 77):
    """Unit-variance stand-ins for CLAP, SigLIP2 and Synchformer features of a clip of `seconds`."""
    generator = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randn(1, *shape, generator=generator)  # noqa: E731
    text = TextFeatures(draw(text_tokens, config.text_dim), draw(text_tokens, config.text_dim))
    visual = VisualFeatures(clip=draw(config.clip_length(seconds), config.clip_dim),
                            sync=draw(config.sync_length(seconds), config.sync_dim), duration=seconds)
    return text, visual


@torch.no_grad()
def outputs(model: FoleyDiT, seconds: float, steps: int, seed: int) -> dict[str, torch.Tensor]:
    """Velocity at sigma 1, 0.5, 0.1 (on noisy random latents) and a CFG-guided Euler sample."""
    c = model.config
    length = c.latent_length(seconds)
    text, visual = random_conditions(c, seconds, seed)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, c.latent_dim, length, generator=generator)
    data = torch.randn(1, c.latent_dim, length, generator=generator)
    sigmas = torch.tensor([1.0, 0.5, 0.1])
    x = (1 - sigmas[:, None, None]) * data + sigmas[:, None, None] * noise
    conditions = model.prepare(text.positive, visual.clip, visual.sync, length)
    result = {"velocity": model.velocity(x, 1000 * sigmas, conditions).float()}
    if steps:
        guided, _ = prepare_velocity(model, text, visual, CFG(HUNYUAN.defaults.cfg_scale), SamplingOptions(steps=steps),
                                     length)
        result["sample"] = euler(guided, noise, linear_sigmas(steps)).float()
    return result


def compare(config_name: str = "xl", blocks: str | None = "2,4", seconds: float = 4.0, steps: int = 25,
            precisions=tuple(PRECISIONS), seed: int = 0, log=print) -> list[dict]:
    config = dit_config.named(config_name)
    if blocks:
        triple, single = (int(n) for n in blocks.split(","))
        config = replace(config, triple_blocks=triple, single_blocks=single)
    return compare_state(release_like_state_dict(config, seed), seconds, steps, precisions, seed, log)


def compare_state(state: dict[str, torch.Tensor], seconds: float = 4.0, steps: int = 25,
                  precisions=tuple(PRECISIONS), seed: int = 0, log=print) -> list[dict]:
    """`compare` on given weights (a trained model's, say)."""
    state = {k: v.float() for k, v in state.items()}
    start = time.perf_counter()
    reference_model = build(state, None)
    reference = outputs(reference_model, seconds, steps, seed)
    full_bytes = stored_bytes(reference_model)
    del reference_model
    log(f"fp32 reference: {time.perf_counter() - start:.0f} s")
    rows = []
    for precision in precisions:
        start = time.perf_counter()
        model = build(state, precision)
        result = outputs(model, seconds, steps, seed)
        row = {"precision": precision, "weights_vs_fp32": stored_bytes(model) / full_bytes}
        for name in result:  # velocity, and the sample when steps > 0
            row.update({f"{name}_{k}": v for k, v in agreement(result[name], reference[name]).items()})
        rows.append(row)
        log(f"{precision}: {time.perf_counter() - start:.0f} s  " + "  ".join(
            f"{k} {v:.5f}" for k, v in row.items() if k != "precision"))
        del model
    return rows


# ----------------------------------------------------------------------------------------------
# Weight memory of the released models, from their key lists
# ----------------------------------------------------------------------------------------------
def read_key_list(path: str | Path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, shape = line.split("\t")[:2]
            shapes[name] = tuple(int(s) for s in shape.strip().strip("()").split(",") if s.strip())
    return shapes


def memory_by_precision(shapes: dict[str, tuple[int, ...]], block_prefixes: tuple[str, ...]) -> dict[str, float]:
    """GiB of weights: fp32, bf16, fp8 unscaled (every matrix weight in fp8) and fp8 scaled (matrix
    weights of the repeated blocks in fp8 plus a 4-byte scale each, the rest bf16)."""
    matrix = {k: math.prod(s) for k, s in shapes.items() if k.endswith(".weight") and len(s) >= 2}
    in_blocks = {k: n for k, n in matrix.items() if k.startswith(block_prefixes)}
    total = sum(math.prod(s) for s in shapes.values())
    gib = 2**30
    return {"params": total, "fp32": 4 * total / gib, "bf16": 2 * total / gib,
            "fp8_unscaled": (2 * total - sum(matrix.values())) / gib,
            "fp8_scaled": (2 * total - sum(in_blocks.values()) + 4 * len(in_blocks)) / gib}


RELEASED = {  # key list (relative to the reference folder), repeated-block prefixes
    "HunyuanVideo-Foley XXL": ("keys/hunyuanvideo_foley_xxl.keys.txt", ("triple_blocks.", "single_blocks.")),
    "HunyuanVideo-Foley XL": ("keys/hunyuanvideo_foley_xl.keys.txt", ("triple_blocks.", "single_blocks.")),
    "MMAudio large_44k_v2": ("mmaudio/keys/mmaudio_large_44k_v2.keys.txt", ("joint_blocks.", "fused_blocks.")),
}


def memory_table(reference_dir: str | Path) -> list[dict]:
    return [{"model": name, **memory_by_precision(read_key_list(Path(reference_dir) / path), prefixes)}
            for name, (path, prefixes) in RELEASED.items()]


def run(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    rows = []
    if args.reference:
        for row in memory_table(args.reference):
            print(f"{row['model']:24s} {row['params'] / 1e9:5.2f} B params  " + "  ".join(
                f"{k} {row[k]:.2f} GiB" for k in ("fp32", "bf16", "fp8_unscaled", "fp8_scaled")))
            rows.append(row)
    if not args.memory_only:
        rows += compare(args.config, args.blocks, args.seconds, args.steps, tuple(args.precisions.split(",")),
                        args.seed)
    if args.json:
        write_report(args.json, json.dumps(rows, indent=1), overwrite=args.overwrite)
    return rows


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("fp8-quality", description="fp8 weight storage against fp32: the velocity and a "
                              "sampled latent of a DiT, and the weight memory of the released models per precision.")
    p.add_argument("--config", default="xl", choices=sorted(dit_config.NAMED_CONFIGS))
    p.add_argument("--blocks", default="2,4", help="triple,single block counts ('' for the full depth)")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=25, help="sampling steps (0: velocity only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precisions", default=",".join(PRECISIONS), help=f"comma-separated, of: {', '.join(PRECISIONS)}")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--reference", help="the reference folder: also print the weight memory of the released models")
    p.add_argument("--memory-only", action="store_true", help="only the weight-memory table (needs --reference)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    p.set_defaults(func=run)

