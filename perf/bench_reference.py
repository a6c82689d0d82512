"""`syncfoley bench reference`: the table of our network next to a public implementation, for
HunyuanVideo-Foley (`reference.py`) and MMAudio (`reference_mmaudio.py`, `--e2e`:
`reference_mmaudio_e2e.py`)."""
from __future__ import annotations

import argparse
import os

import torch

from ..models import dit_config
from .bench import DTYPES, _config_label, _report

REFERENCE_CLONES = {"hunyuanvideo-foley": "Tencent-Hunyuan/HunyuanVideo-Foley", "mmaudio": "hkchengrex/MMAudio"}


def run_reference(args: argparse.Namespace) -> list[dict]:
    from .reference import ReferenceError, side_by_side

    family = args.family or "hunyuanvideo-foley"
    if family not in REFERENCE_CLONES:
        raise SystemExit(f"bench reference: --family is {' or '.join(REFERENCE_CLONES)}, not '{family}'")
    if not args.reference_src:
        raise SystemExit(f"bench reference: give --reference-src DIR (a clone of {REFERENCE_CLONES[family]})")
    if family == "mmaudio":
        return run_reference_mmaudio(args)
    if args.config not in dit_config.NAMED_CONFIGS:
        raise SystemExit(f"bench reference: '{args.config}' is not a HunyuanVideo-Foley size "
                         f"({', '.join(dit_config.NAMED_CONFIGS)}); for MMAudio sizes add --family mmaudio")
    try:
        rows = side_by_side(args.config, args.blocks, args.seconds, DTYPES[args.dtype], args.device, args.repeats,
                            args.reference_src, compile_backend=args.compile)
    except ReferenceError as error:
        raise SystemExit(f"bench reference: {error}") from None
    common = {"config": _config_label(args), "dtype": args.dtype,
              "device": args.device, "compile": args.compile, "seconds": args.seconds,
              "threads": torch.get_num_threads()}
    rows = [{**common, **row} for row in rows]
    columns = ["implementation", "config", "dtype", "device", "compile", "seconds", "threads", "forward_s", "steps_per_s",
               "speedup", "peak_mib", "rel_diff"]
    _report(rows, columns, args.json, overwrite=args.overwrite)
    return rows


def run_reference_mmaudio(args: argparse.Namespace) -> list[dict]:
    from .reference import ReferenceError
    from .reference_mmaudio import SIZES, side_by_side

    if args.config not in SIZES:
        raise SystemExit(f"bench reference --family mmaudio: '{args.config}' is not an MMAudio size ({', '.join(SIZES)})")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        if args.e2e:
            from .reference_mmaudio_e2e import end_to_end

            rows = end_to_end(args.config, args.blocks, args.seconds, DTYPES[args.dtype], args.device,
                              args.reference_src, steps=args.steps or 25, cfg_scale=args.cfg_scale or 4.5)
        else:
            rows = side_by_side(args.config, args.blocks, args.seconds, DTYPES[args.dtype], args.device,
                                args.repeats, args.reference_src)
    except ReferenceError as error:
        raise SystemExit(f"bench reference: {error}") from None
    common = {"config": _config_label(args), "dtype": args.dtype, "device": args.device, "seconds": args.seconds,
              "threads": torch.get_num_threads(), "load_before": load,
              "load_after": os.getloadavg()[0] if load is not None else None}
    rows = [{**common, **row} for row in rows]
    if args.e2e:
        columns = ["implementation", "config", "seconds", "steps", "sampling_s", "step_s", "decode_s", "vocode_s",
                   "total_s", "cpu_s", "speedup", "peak_mib", "latent_rel_diff", "rel_diff", "load_before", "load_after"]
    else:
        columns = ["implementation", "config", "dtype", "device", "seconds", "threads", "step_s", "cpu_s",
                   "steps_per_s", "speedup", "peak_mib", "rel_diff", "load_before", "load_after"]
    _report(rows, columns, args.json, REFERENCE_LEGEND, overwrite=args.overwrite)
    return rows


REFERENCE_LEGEND = {
    "step_s, cpu_s": "median wall-clock and process-CPU seconds over interleaved rounds",
    "peak_mib": "working memory the call created (weights and inputs excluded)",
    "rel_diff": "max |output - reference| / max |reference|",
    "load_before, load_after": "the machine's 1-minute load average around the run",
}
