"""Shared fixtures: where the reference contract lives, and how to rebuild its seeded weights."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
sys.path.insert(0, str(TESTS_DIR))  # helper modules beside the tests (media_fixtures, ...)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_host():
    """Every test starts with the host settings it found and leaves them so: commands such as
    `syncfoley run` configure the process-wide host, and a test's folders must not leak into the next."""
    from dataclasses import fields

    from syncfoley.nodes.host import host

    current = host()
    saved = {f.name: getattr(current, f.name) for f in fields(current) if f.name != "interrupt_event"}
    yield
    for name, value in saved.items():
        setattr(current, name, value)
    current.interrupt_event.clear()


def _reference_dir() -> Path | None:
    candidates = [os.environ.get("SYNCFOLEY_REFERENCE"), REPO_ROOT.parent / "shared" / "reference",
                  REPO_ROOT / "shared" / "reference"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "README.md").exists():
            return Path(candidate)
    return None


def mmaudio_vectors(kind: str, *defaults: str) -> list[str]:
    """Names of the MMAudio parity vectors whose JSON says `kind`, held-back ones dropped into the
    folder included; `defaults` when the contract is absent (their tests then skip)."""
    found = _reference_dir()
    folder = found / "mmaudio" / "parity" if found else None
    names = []
    for path in sorted(folder.glob("*.json")) if folder else []:
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("kind") == kind:
                names.append(path.stem)
        except (OSError, ValueError):
            continue
    return names or list(defaults)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    found = _reference_dir()
    if found is None:
        message = "reference contract not found: set SYNCFOLEY_REFERENCE or place shared/reference beside the repo"
        if os.environ.get("SYNCFOLEY_REQUIRE_REFERENCE"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def seeded(reference_dir):
    """The reference's `seeded.py`, which rebuilds parity weights from a key list and a seed."""
    spec = importlib.util.spec_from_file_location("reference_seeded", reference_dir / "parity" / "seeded.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parity_loader(folder: Path, seeded):
    import json

    from safetensors.torch import load_file

    def load(name: str):
        config = json.loads((folder / f"{name}.json").read_text())
        keys = seeded.read_key_list(folder / f"{name}.keys.txt")
        state_dict = seeded.seeded_state_dict(keys, config["seed"], gain=config.get("gain", 1.0))
        return config, state_dict, load_file(str(folder / f"{name}.io.safetensors"))

    return load


@pytest.fixture(scope="session")
def parity(reference_dir, seeded):
    """parity(name) -> (json_config, state_dict, io_tensors) of `reference/parity/NAME*`."""
    return _parity_loader(reference_dir / "parity", seeded)


@pytest.fixture(scope="session")
def mmaudio_parity(reference_dir, seeded):
    """The same for `reference/mmaudio/parity/NAME*` (cases whose exceptions, such as 0-d gains, the
    test fills in itself)."""
    return _parity_loader(reference_dir / "mmaudio" / "parity", seeded)


def max_abs_error_ratio(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Max abs error relative to the max abs of the expected output (the issue's parity measure)."""
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())


@pytest.fixture(scope="session")
def parity_dit(parity):
    """The reference's tiny parity DiT (hidden 256, 2+2 blocks) with its seeded weights, fp32."""
    from syncfoley.models.dit import FoleyDiT

    _, state_dict, _ = parity("hvf_tiny")
    return FoleyDiT.from_checkpoint(state_dict)


def random_visual_features(seconds: float, seed: int = 0, dim: int = 768):
    """VisualFeatures of the release's rates for a clip of `seconds`, random but reproducible."""
    from syncfoley.sampling.features import VisualFeatures

    g = torch.Generator().manual_seed(seed)
    frames = int(round(seconds * 25))
    segments = (frames - 16) // 8 + 1
    return VisualFeatures(
        clip=torch.randn(1, int(seconds * 8), dim, generator=g),
        sync=torch.randn(1, segments * 8, dim, generator=g),
        duration=seconds,
        static_clip=torch.randn(1, 1, dim, generator=g),
        static_sync=torch.randn(1, 8, dim, generator=g),
    )


def random_text_features(tokens: int = 12, seed: int = 1, dim: int = 768):
    from syncfoley.sampling.features import TextFeatures

    g = torch.Generator().manual_seed(seed)
    return TextFeatures(torch.randn(1, tokens, dim, generator=g), torch.randn(1, tokens, dim, generator=g))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Paths of a tiny model set under `<models>/foley` (see tests/tiny_models.py)."""
    from tiny_models import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("models"))
