"""`syncfoley convert SRC OUT.safetensors`: a model checkpoint in another precision (scaled fp8 for small
GPUs, in ComfyUI's scaled-fp8 layout), or a release `.pth` as safetensors."""
from __future__ import annotations

import sys


def add_parser(subparsers) -> None:
    from ..models.convert import PRECISIONS

    p = subparsers.add_parser("convert", description=__doc__)
    p.add_argument("source", help="checkpoint (.pth or .safetensors): HunyuanVideo-Foley's DiT, MMAudio's network "
                                  "or the Synchformer")
    p.add_argument("output", help="the .safetensors file to write")
    p.add_argument("--precision", default="fp8_e4m3fn", choices=sorted(PRECISIONS))
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"],
                   help="storage of what fp8 leaves out (biases, norms, embedders, output layers)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..models.checkpoint import CheckpointError
    from ..models.convert import convert_checkpoint

    try:
        summary = convert_checkpoint(args.source, args.output, args.precision, args.dtype, args.overwrite)
    except (CheckpointError, FileExistsError, ValueError) as error:
        print(f"convert: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {summary['kind']} in {summary['precision']}, {summary['tensors']} tensors, "
          f"{summary['scaled_layers']} scaled fp8 layers, {summary['bytes'] / 2**30:.2f} GiB")
    return 0
