"""Options several commands share: where the models are and how they are placed in memory."""
from __future__ import annotations

import argparse


def add_model_arguments(p: argparse.ArgumentParser, default: str | None = "demo") -> None:
    p.add_argument("--models", default=default,
                   help="'demo' (the built-in model) or a folder holding a model set (HunyuanVideo-Foley or MMAudio)")
    p.add_argument("--model", help="the network file in --models where it holds several (e.g. mmaudio_small_16k.pth)")
    p.add_argument("--family", help="hunyuanvideo-foley or mmaudio, where --models holds a set of each")


def guidance_from(name: str, defaults, cfg_scale: float | None = None, sync_scale: float | None = None,
                  anchor: str | None = None):
    """CFG or SyncCFG by name, with the model's defaults for the scales and anchor not given."""
    from ..sampling.guidance import CFG, SyncCFG

    scale = defaults.cfg_scale if cfg_scale is None else cfg_scale
    if name == "cfg":
        return CFG(scale)
    return SyncCFG(scale, defaults.sync_scale if sync_scale is None else sync_scale,
                   defaults.anchor if anchor is None else anchor)


def add_memory_arguments(p: argparse.ArgumentParser) -> None:
    memory = p.add_argument_group("low memory (GPU)")
    memory.add_argument("--offload", action="store_true",
                        help="keep every model in CPU memory and move each to the GPU only for its stage")
    memory.add_argument("--gpu-blocks", type=int, default=None, metavar="N",
                        help="sample with only N DiT blocks on the GPU, streaming the others one block ahead "
                             "(XXL has 54 blocks, XL 36; 0 streams all); implies --offload for the DiT")


def load_models(args: argparse.Namespace, compile_backend: str | None = "inductor"):
    """The models of `--models`, `--precision` and `--device`; with `--offload` or `--gpu-blocks` in
    CPU memory (in the GPU's precision) until each stage needs them; `--compile` compiles the DiT."""
    from ..pipeline import FoleyModels
    from ..pipeline.loaders import default_device

    choice = dict(family=getattr(args, "family", None), model=getattr(args, "model", None))
    if args.offload or args.gpu_blocks is not None:
        models = FoleyModels.from_folder(args.models, precision=args.precision, device="cpu",
                                         compute_device=args.device or default_device(), **choice)
    else:
        models = FoleyModels.from_folder(args.models, precision=args.precision, device=args.device, **choice)
    if args.compile:
        models.model.network.compile_blocks(backend=compile_backend)
    return models
