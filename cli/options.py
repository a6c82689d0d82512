"""Options several commands share: where the models are and how they are placed in memory."""
from __future__ import annotations

import argparse


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

    if args.offload or args.gpu_blocks is not None:
        models = FoleyModels.from_folder(args.models, precision=args.precision, device="cpu",
                                         compute_device=args.device or default_device())
    else:
        models = FoleyModels.from_folder(args.models, precision=args.precision, device=args.device)
    if args.compile:
        models.dit.compile_blocks(backend=compile_backend)
    return models
