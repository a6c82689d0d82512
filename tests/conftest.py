"""Shared fixtures: where the reference contract lives, and how to rebuild its seeded weights."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
sys.path.insert(0, str(TESTS_DIR))  # helper modules beside the tests (media_fixtures, ...)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _reference_dir() -> Path | None:
    candidates = [os.environ.get("SYNCFOLEY_REFERENCE"), REPO_ROOT.parent / "shared" / "reference",
                  REPO_ROOT / "shared" / "reference"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "README.md").exists():
            return Path(candidate)
    return None


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


@pytest.fixture(scope="session")
def parity(reference_dir, seeded):
    """parity(name) -> (json_config, state_dict, io_tensors)."""
    import json

    from safetensors.torch import load_file

    def load(name: str):
        folder = reference_dir / "parity"
        config = json.loads((folder / f"{name}.json").read_text())
        keys = seeded.read_key_list(folder / f"{name}.keys.txt")
        state_dict = seeded.seeded_state_dict(keys, config["seed"], gain=config.get("gain", 1.0))
        return config, state_dict, load_file(str(folder / f"{name}.io.safetensors"))

    return load


def max_abs_error_ratio(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Max abs error relative to the max abs of the expected output (the issue's parity measure)."""
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())
