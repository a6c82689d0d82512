"""`syncfoley bench`: speed and memory of the DiT and of sampling, as a table and as JSON.

Models are built at the requested size with random weights (no download needed): `--blocks T,S`
keeps the width of a config but fewer blocks, so XL- or XXL-sized blocks can be timed on a CPU.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..models import dit_config
from ..models.dit import FoleyDiT, parameter_count
from ..cli.options import add_memory_arguments, load_models
from ..models.offload import BlockOffloader
from ..models.fp8 import FP8_DTYPES, SCALE, quantize
from ..models.ops import set_precision, stored_bytes
from ..sampling.features import TextFeatures, VisualFeatures
from ..sampling.generate import SamplingOptions, prepare_velocity
from ..sampling.guidance import CFG, SyncCFG
from ..families import as_flow
from ..media.files import write_report
from .memory import track_peak_memory

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FP8 = {"fp8_e4m3fn": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}


def random_dit(config_name: str, blocks: str | None = None, dtype=torch.float32, device="cpu",
               weight_dtype: str | None = None, seed: int = 0) -> FoleyDiT:
    """A FoleyDiT of a named size with small random weights, allocated once in its final dtypes
    (an XXL model in bf16 never passes through fp32, so it builds wherever it will run)."""
    config = dit_config.named(config_name)
    if blocks:
        triple, single = (int(n) for n in blocks.split(","))
        config = replace(config, triple_blocks=triple, single_blocks=single)
    with torch.device("meta"):
        model = FoleyDiT(config)
    set_precision(model, dtype, getattr(torch, FP8[weight_dtype]) if weight_dtype else None)
    model.to_empty(device=device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for layer_name, layer in model.named_modules():
            for name, param in layer.named_parameters(recurse=False):
                if param.ndim <= 1:
                    param.fill_(1.0 if "norm" in f"{layer_name}.{name}" else 0.0)
                    continue
                weight = torch.randn(param.shape, generator=generator).mul_(0.02)  # fp32 on the CPU, one at a time
                if param.dtype in FP8_DTYPES:  # stored scaled, as the loaders store fp8
                    weight, scale = quantize(weight, param.dtype)
                    layer.register_buffer(SCALE, scale.to(param.device))
                param.copy_(weight)
    return model.eval().requires_grad_(False)


def random_features(model: FoleyDiT, seconds: float, text_tokens: int = 77, seed: int = 0):
    c = model.config
    g = torch.Generator().manual_seed(seed)
    text = TextFeatures(torch.randn(1, text_tokens, c.text_dim, generator=g),
                        torch.randn(1, text_tokens, c.text_dim, generator=g))
    segments = c.sync_length(seconds) // c.sync_tokens_per_segment
    visual = VisualFeatures(
        clip=torch.randn(1, c.clip_length(seconds), c.clip_dim, generator=g),
        sync=torch.randn(1, segments * c.sync_tokens_per_segment, c.sync_dim, generator=g),
        duration=seconds,
        static_clip=torch.randn(1, 1, c.clip_dim, generator=g),
        static_sync=torch.randn(1, c.sync_tokens_per_segment, c.sync_dim, generator=g),
    )
    return text, visual


def _synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def bench_dit(model: FoleyDiT, seconds: float, batch: int, repeats: int) -> dict:
    """Forward time and working memory of one DiT evaluation (conditions prepared beforehand)."""
    text, visual = random_features(model, seconds)
    length = model.config.latent_length(seconds)
    conditions = model.prepare(text.positive.expand(batch, -1, -1), visual.clip.expand(batch, -1, -1),
                               visual.sync.expand(batch, -1, -1), length)
    x = torch.randn(batch, model.config.latent_dim, length, device=model.device)
    t = torch.full((batch,), 500.0, device=model.device)
    seconds_per_forward = time_call(lambda: model.velocity(x, t, conditions), model.device, repeats)
    with track_peak_memory(model.device) as peak:
        model.velocity(x, t, conditions)
    return {"forward_s": seconds_per_forward, "peak_mib": peak.peak_mib, "tokens": length + visual.clip.shape[1]}


@torch.no_grad()
def bench_step(model: FoleyDiT, seconds: float, guidance, batched: bool, repeats: int, takes: int = 1) -> dict:
    """Seconds per sampling step (all guidance branches) and its working memory."""
    text, visual = random_features(model, seconds)
    length = model.config.latent_length(seconds)
    options = SamplingOptions(takes=takes, batched_guidance=batched)
    velocity, _ = prepare_velocity(model, text, visual, guidance, options, length)
    x = torch.randn(takes, model.config.latent_dim, length, device=model.device)
    sigma = torch.tensor(0.5, device=model.device)
    step_s = time_call(lambda: velocity(x, sigma), model.device, repeats)
    with track_peak_memory(model.device) as peak:
        velocity(x, sigma)
    return {"step_s": step_s, "peak_mib": peak.peak_mib}


def _table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line([_fmt(r.get(c)) for c in columns]) for r in rows])


def _report(rows: list[dict], columns: list[str], json_path: str | None, legend: dict[str, str] | None = None,
            overwrite: bool = False) -> None:
    print(_table(rows, columns))
    for column, meaning in (legend or {}).items():
        print(f"  {column}: {meaning}")
    if json_path:
        write_report(json_path, json.dumps(rows, indent=2), overwrite=overwrite)


def _config_label(args: argparse.Namespace) -> str:
    return args.config + (f"[{args.blocks}]" if args.blocks else "")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def run(args: argparse.Namespace) -> list[dict]:
    if args.json and Path(args.json).exists() and not args.overwrite:
        raise SystemExit(f"bench: --json '{args.json}' already exists; pass --overwrite to replace it")
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "e2e":
        return run_end_to_end(args)
    if args.what == "reference":
        from .bench_reference import run_reference

        return run_reference(args)
    if args.config not in dit_config.NAMED_CONFIGS:
        raise SystemExit(f"bench {args.what}: unknown DiT config '{args.config}'; known: {', '.join(dit_config.NAMED_CONFIGS)}")
    if args.offload:
        raise SystemExit("bench: --offload moves whole models between stages, so it applies to e2e; "
                         "for the DiT alone use --gpu-blocks N")
    streaming = args.gpu_blocks is not None
    model = random_dit(args.config, args.blocks, DTYPES[args.dtype], "cpu" if streaming else args.device,
                       args.weight_dtype)
    weights = stored_bytes(model)
    if streaming:  # the streamed blocks' weights stay in CPU memory; staged copies count as working memory
        weights -= BlockOffloader(model, args.device, args.gpu_blocks).attach().streamed_bytes()
    if args.compile:
        model.compile_blocks(backend=args.compile)
    common = {"config": _config_label(args), "params_m":
              parameter_count(model) / 1e6, "dtype": args.dtype + (f"/{args.weight_dtype}" if args.weight_dtype else ""),
              "device": args.device, "gpu_blocks": args.gpu_blocks, "compile": args.compile, "seconds": args.seconds,
              "weights_mib": weights / 2**20}
    rows = []
    if args.what in ("dit", "all"):
        rows.append({**common, "measure": "dit forward", **bench_dit(model, args.seconds, args.batch, args.repeats)})
    if args.what in ("sampling", "all"):
        defaults = as_flow(model).defaults
        for name, guidance in (("cfg", CFG(defaults.cfg_scale)),
                               ("synccfg", SyncCFG(defaults.cfg_scale, defaults.sync_scale))):
            for batched in (True, False):
                result = bench_step(model, args.seconds, guidance, batched, args.repeats)
                rows.append({**common, "measure": f"step {name} {'batched' if batched else 'sequential'}", **result})
    for row in rows:  # what the device must hold: the stored weights plus the step's working memory
        row["total_mib"] = row["weights_mib"] + row["peak_mib"]
    columns = ["measure", "config", "params_m", "dtype", "device", "gpu_blocks", "compile", "seconds", "forward_s", "step_s",
               "weights_mib", "peak_mib", "total_mib"]
    _report(rows, columns, args.json, overwrite=args.overwrite)
    return rows


E2E_LEGEND = {
    "rtf": "real-time factor, total_s / audio_s: below 1 is faster than real time",
    "working_mib": "tensors the run created (weights and inputs excluded; libraries' own scratch not seen)",
    "rss_peak_mib": "the process's resident-memory high-water mark (weights, libraries, everything)",
    "device_peak_mib": "GPU allocator high-water mark, weights included (CUDA only)",
}


def run_end_to_end(args: argparse.Namespace) -> list[dict]:
    from .e2e import run_e2e

    if not args.models:
        raise SystemExit("bench e2e: give --models DIR (a folder with a model set, or demo)")
    models = load_models(args, compile_backend=args.compile)
    result = run_e2e(models, args)
    row = {"measure": f"e2e {args.guidance} {'sequential' if args.sequential else 'batched'}"
                      + (" offload" if args.offload else "") + (f" gpu_blocks={args.gpu_blocks}" if args.gpu_blocks is not None else ""),
           "config": models.model.variant, "params_m": parameter_count(models.model.network) / 1e6,
           "dtype": args.precision, "device": args.device, **result}
    columns = ["measure", "config", "params_m", "dtype", "device", "steps", "audio_s", "text_s", "video_s",
               "sampling_s", "step_s", "decode_s", "mux_s", "total_s", "rtf", "working_mib", "rss_peak_mib",
               "device_peak_mib"]
    _report([row], columns, args.json, E2E_LEGEND, overwrite=args.overwrite)
    return [row]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", description="Time the DiT, sampling steps, whole clips or the reference side by side.")
    p.add_argument("what", nargs="?", choices=["dit", "sampling", "all", "e2e", "reference"],
                   default="all", help="dit: one forward; sampling: one guided step; e2e: a whole clip with real "
                   "models; reference: our DiT next to the public implementation (--reference-src)")
    p.add_argument("--config", default="tiny", help="model size: tiny, xl, xxl (HunyuanVideo-Foley) or with "
                   "--family mmaudio tiny, small_16k, small_44k, medium_44k, large_44k, large_44k_v2")
    p.add_argument("--blocks", help="triple,single block counts (e.g. 1,1 for one XL-sized block each; "
                   "MMAudio: joint,fused)")
    p.add_argument("--seconds", type=float, default=8.0, help="clip duration (default 8)")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--weight-dtype", choices=sorted(FP8), help="store matrix weights in fp8")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=2, help="batch of the plain forward (2 = CFG's pair)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    add_memory_arguments(p)
    p.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                   help="torch.compile our DiT's blocks (backend: inductor when given bare)")
    p.add_argument("--reference-src", help="reference: a clone of github.com/Tencent-Hunyuan/HunyuanVideo-Foley "
                   "(or with --family mmaudio of github.com/hkchengrex/MMAudio)")
    p.add_argument("--e2e", action="store_true", help="reference --family mmaudio: a whole clip (sampling, VAE, "
                   "vocoder) against the reference's own sampling loop")
    e2e = p.add_argument_group("e2e (a whole clip through the pipeline)")
    e2e.add_argument("--models", help="model folder (a HunyuanVideo-Foley or MMAudio set), or demo")
    e2e.add_argument("--model", help="the network file in --models where it holds several")
    e2e.add_argument("--family", help="hunyuanvideo-foley or mmaudio: where --models holds a set of each, and "
                     "the reference to compare with (default hunyuanvideo-foley)")
    e2e.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16, fp8_e4m3fn, fp8_e5m2")
    e2e.add_argument("--video", help="video to run on (default: a generated clip of --seconds)")
    e2e.add_argument("--prompt", default="")
    e2e.add_argument("--guidance", default="cfg", choices=["cfg", "synccfg"])
    e2e.add_argument("--cfg-scale", type=float, default=None, help="default: the model's")
    e2e.add_argument("--sync-scale", type=float, default=None, help="default: the model's")
    e2e.add_argument("--steps", type=int, default=None, help="default: the model's")
    e2e.add_argument("--sampler", default="euler")
    e2e.add_argument("--sequential", action="store_true", help="guidance branches one after another")
    p.set_defaults(func=run)
