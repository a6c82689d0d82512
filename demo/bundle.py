"""The built-in demo model: five small files in `demo/weights/`, chosen by the name "syncfoley-demo";
and the built-in example videos in `demo/examples/`, chosen by their names.

`FoleyModels.from_folder("demo")` finds the set here like any other, the loader nodes list
`DEMO_MODEL` first and load its part's file, and the loaders recognise the demo's files by what they
hold (the DiT's metadata names its family, `families.demo`). Load Video offers
the example clips by name beside the input folder's videos, so the shipped workflows run on a fresh
install. The weights and clips are built by `python -m syncfoley.demo.build` (data, VAE and DiT
training from the recipes in `demo/`; the clips are seeded scenes of the synthetic world).
"""
from __future__ import annotations

from pathlib import Path

DEMO_MODEL = "syncfoley-demo"
WEIGHTS = Path(__file__).resolve().parent / "weights"
FILES = {
    "dit": "demo_dit.safetensors",
    "vae": "demo_vae.safetensors",
    "synchformer": "demo_synchformer.safetensors",
    "clap": "demo_clap.safetensors",
    "siglip": "demo_siglip.safetensors",
}


EXAMPLES = Path(__file__).resolve().parent / "examples"
# name -> (world seed, seconds, size): short for the demo workflow, long for windowed sampling
EXAMPLE_VIDEOS = {
    "syncfoley-example.mp4": (3, 3.84, (256, 256)),
    "syncfoley-example-long.mp4": (1, 16.64, (256, 256)),
}


def example_video(name: str) -> Path | None:
    """The shipped example clip called `name`, or None when `name` is not one."""
    if name not in EXAMPLE_VIDEOS:
        return None
    path = EXAMPLES / name
    if not path.is_file():
        raise FileNotFoundError(f"the example video {name} ({path}) is missing from this installation; rebuild it "
                                "with `python -m syncfoley.demo.build --only examples` or reinstall the package")
    return path


def demo_file(part: str) -> Path:
    """The shipped file of a demo part ("dit", "vae", "synchformer", "clap", "siglip")."""
    try:
        path = WEIGHTS / FILES[part]
    except KeyError:
        raise ValueError(f"unknown demo part '{part}'; parts: {', '.join(FILES)}") from None
    if not path.is_file():
        raise FileNotFoundError(f"the demo model's {part} ({path}) is missing from this installation; rebuild it "
                                "with `python -m syncfoley.demo.build` or reinstall the package")
    return path


def demo_models(device=None, precision: str = "auto"):
    """The demo's `FoleyModels` bundle."""
    from ..pipeline.foley import FoleyModels

    return FoleyModels.from_folder(DEMO_MODEL, precision=precision, device=device)
