"""Rebuild the built-in demo model from nothing: `python -m syncfoley.demo.build`.

Steps (each can be run alone with `--only`; later steps reuse what earlier ones left in demo/build/):
  data      clips of the synthetic world: train (seed 1), validation (seed 2), test (seed 3)
  encoders  the demo text, image and sync encoders (fixed, weight-light) into demo/weights/
  vae       the DAC-VAE, from demo/vae.toml (`syncfoley train-vae`)
  dit       the MM-DiT from scratch, from demo/dit.toml (`syncfoley train`: feature cache, then training)
  export    the VAE and DiT into demo/weights/, and demo/manifest.json (seeds, losses, times, sizes)
  sweep     SyncCFG's sync_scale and anchor chosen on the validation clips over 3 seeds (never the test clips)
  evaluate  onset F1 / AV-Align of CFG and SyncCFG on the 50 test clips, beside the ground truth and
            the random-onset baseline (`syncfoley eval-sync`); the table goes into the manifest
  examples  the example videos Load Video offers by name (demo/examples/)
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from ..families.demo import DEMO
from . import bundle

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
MANIFEST = HERE / "manifest.json"
DATASETS = {"train": (1000, 1), "val": (30, 2), "test": (50, 3)}  # clips, dataset seed
CLIP = {"duration": 3.84, "fps": 25, "size": (64, 64)}
SYNC_SCALES = (0.5, 1.0, 2.0, 3.0)
STEPS = ("data", "encoders", "vae", "dit", "export", "sweep", "evaluate", "examples")


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8")) if MANIFEST.is_file() else {}


def _update(**entries) -> None:
    manifest = _manifest()
    manifest.update(entries)
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def build_data(log=print) -> dict:
    from .world import GENERATOR_VERSION, write_dataset

    started = time.perf_counter()
    for name, (count, seed) in DATASETS.items():
        folder = BUILD / name
        done = (folder / "manifest.csv").is_file() and len(list(folder.glob("*.mp4"))) == count
        if not done:
            log(f"writing {count} {name} clips (seed {seed})")
            write_dataset(folder, count, seed, overwrite=True, **CLIP)
    return {"datasets": {n: {"clips": c, "seed": s, **CLIP, "size": list(CLIP["size"])} for n, (c, s) in DATASETS.items()},
            "generator_version": GENERATOR_VERSION, "data_seconds": round(time.perf_counter() - started, 1)}


def build_examples(log=print) -> None:
    from ..media import write_video
    from .world import generate_clip

    bundle.EXAMPLES.mkdir(exist_ok=True)
    for name, (seed, seconds, size) in bundle.EXAMPLE_VIDEOS.items():
        clip = generate_clip(seed, duration=seconds, size=size, objects=3 if "long" in name else None)
        write_video(clip.frames, clip.fps, bundle.EXAMPLES / name, audio=clip.audio, sample_rate=clip.sample_rate,
                    overwrite=True)
        log(f"{name}: {clip.caption}")


def build_encoders() -> None:
    from .encoders import DemoImageEncoder, DemoSyncEncoder, DemoTextEncoder, save_demo_encoder

    bundle.WEIGHTS.mkdir(parents=True, exist_ok=True)
    save_demo_encoder(DemoTextEncoder.create(dim=64, seed=0), bundle.WEIGHTS / bundle.FILES["clap"])
    save_demo_encoder(DemoImageEncoder.create(), bundle.WEIGHTS / bundle.FILES["siglip"])
    save_demo_encoder(DemoSyncEncoder.create(), bundle.WEIGHTS / bundle.FILES["synchformer"])


def build_vae(log=print) -> dict:
    from ..training.vae import load_vae_config, train_vae

    result = train_vae(load_vae_config(HERE / "vae.toml"), log=log)
    return {"vae": {"steps": result.steps, "seconds": round(result.seconds, 1),
                    "final": {k: round(v, 4) for k, v in result.final.items() if k != "step"},
                    "latent_scale": round(result.latent_scale, 5)}}


def build_dit(log=print) -> dict:
    from ..training.config import load_config
    from ..training.run import ensure_cache
    from ..training.trainer import Trainer

    config = load_config(HERE / "dit.toml")
    shutil.rmtree(config.output_dir / "checkpoints", ignore_errors=True)  # a rebuild starts from scratch
    started = time.perf_counter()
    index = ensure_cache(config, log=log)
    cache_seconds = time.perf_counter() - started
    trainer = Trainer(config, log=log)
    result = trainer.train()
    held = trainer.evaluate(repeats=2)
    last = result.history[-25:]
    mean = {k: sum(getattr(s, k) for s in last) / len(last) for k in ("loss", "flow", "repa")}
    return {"dit": {"steps": result.steps, "seconds": round(result.seconds, 1), "cache_seconds": round(cache_seconds, 1),
                    "clips": len(index["clips"]), "final_last25": {k: round(v, 4) for k, v in mean.items()},
                    "flow_eval_no_dropout": round(held, 4), "parameters": sum(p.numel() for p in trainer.dit.parameters()),
                    "config": trainer.dit.config.to_dict()}}


def export() -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from ..families import FAMILY_KEY
    from ..families.demo import DEMO

    shutil.copyfile(BUILD / "vae" / "demo_vae.safetensors", bundle.WEIGHTS / bundle.FILES["vae"])
    trained = BUILD / "dit" / "demo_dit.safetensors"
    with safe_open(str(trained), "pt") as handle:  # the file says it is the demo's, so loaders give its defaults
        metadata = {**(handle.metadata() or {}), FAMILY_KEY: DEMO.name}
    save_file(load_file(str(trained)), str(bundle.WEIGHTS / bundle.FILES["dit"]), metadata=metadata)
    sizes = {part: (bundle.WEIGHTS / name).stat().st_size for part, name in bundle.FILES.items()}
    return {"files": bundle.FILES, "bytes": sizes, "total_bytes": sum(sizes.values()),
            "versions": {"torch": torch.__version__, "python": platform.python_version()}}


def _evaluate(data: Path, guidances: dict, clips: int | None = None, ground_truth: bool = True) -> dict:
    """eval-sync's report for the demo model under each named guidance."""
    from ..evaluation.sync_eval import evaluate, ground_truth_source, load_held_out
    from ..pipeline import FoleyPipeline
    from ..sampling.generate import SamplingOptions

    pipeline = FoleyPipeline(bundle.demo_models(device="cpu"), device="cpu")
    options = SamplingOptions(steps=DEMO.defaults.steps, seed=0)
    cache: dict = {}

    def features(clip):
        if clip.stem not in cache:
            cache.clear()
            cache[clip.stem] = (pipeline.encode_text(clip.caption), pipeline.encode_video(str(clip.video)))
        return cache[clip.stem]

    def source(guidance):
        def generate(clip):
            text, visual = features(clip)
            waveform, rate = pipeline.decode(pipeline.sample(text, visual, guidance, options), visual.duration)
            return waveform[0], rate
        return generate

    sources = {"ground truth": ground_truth_source} if ground_truth else {}
    sources.update({name: source(g) for name, g in guidances.items()})
    return evaluate(load_held_out(data, clips), sources)


def sweep(log=print) -> dict:
    """SyncCFG's sync_scale against CFG on the validation clips over 3 seeds (`eval-sync --sweep`)."""
    from ..evaluation.sweep import format_sweep, parse_grid, run_sweep
    from ..evaluation.sync_eval import load_held_out
    from ..pipeline import FoleyPipeline

    grid = "cfg; " + "; ".join(f"sync:sync={s:g}:anchor={a}" for a in ("static", "shift") for s in SYNC_SCALES)
    entries = parse_grid(grid, DEMO.defaults)
    pipeline = FoleyPipeline(bundle.demo_models(device="cpu"), device="cpu")
    report = run_sweep(pipeline, load_held_out(BUILD / "val"), entries, [0, 1, 2], DEMO.defaults.steps,
                       {"draws": 0}, ground_truth=False)
    log(format_sweep(report))
    summary = report["sweep"]["summary"]
    best, anchor = max(((s, a) for a in ("static", "shift") for s in SYNC_SCALES),
                       key=lambda c: summary[f"synccfg {DEMO.defaults.cfg_scale:g}/{c[0]:g} {c[1]}"]["f1"])
    f1 = {name: round(s["f1"], 4) for name, s in summary.items()}
    log(f"validation onset F1: {f1}; sync_scale {best:g} with the {anchor} anchor chosen")
    return {"sync_scale_sweep": {"data": "val (seed 2)", "seeds": [0, 1, 2], "f1": f1, "chosen": best,
                                 "chosen_anchor": anchor,
                                 "table": format_sweep(report).splitlines()}}


def evaluate_test(log=print) -> dict:
    from ..evaluation.sync_eval import format_table
    from ..sampling.guidance import CFG, SyncCFG

    chosen = _manifest().get("sync_scale_sweep", {})
    scale, anchor = chosen.get("chosen", 1.0), chosen.get("chosen_anchor", "static")
    started = time.perf_counter()
    report = _evaluate(BUILD / "test", {"cfg": CFG(DEMO.defaults.cfg_scale),
                                        "synccfg": SyncCFG(DEMO.defaults.cfg_scale, scale, anchor)})
    table = format_table(report)
    log(table)
    (BUILD / "test_eval.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    summary = {name: {"f1": round(s["onset"]["f1"], 4), "precision": round(s["onset"]["precision"], 4),
                      "recall": round(s["onset"]["recall"], 4), "shifted_f1": round(s["shifted"]["f1"], 4),
                      "av_align": round(s["av_align"], 4)} for name, s in report["sources"].items()}
    return {"evaluation": {"data": "test (seed 3)", "clips": report["clips"], "steps": DEMO.defaults.steps, "cfg_scale": DEMO.defaults.cfg_scale,
                           "sync_scale": scale, "anchor": anchor, "summary": summary, "table": table.splitlines(),
                           "seconds": round(time.perf_counter() - started, 1)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m syncfoley.demo.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=STEPS, help="run these steps only (default: all, in order)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    steps = args.only or STEPS
    for step in STEPS:
        if step not in steps:
            continue
        started = time.perf_counter()
        print(f"== {step}", flush=True)
        entries = {"data": build_data, "vae": build_vae, "dit": build_dit, "sweep": sweep,
                   "evaluate": evaluate_test}.get(step)
        if step == "encoders":
            build_encoders()
        elif step == "examples":
            build_examples(log=lambda m: print(m, flush=True))
        elif step == "export":
            _update(**export())
        else:
            _update(**entries(log=lambda m: print(m, flush=True)))
        _update(**{f"{step}_wall_seconds": round(time.perf_counter() - started, 1)})


if __name__ == "__main__":
    main()
