"""What ComfyUI installs for the pack (requirements.txt) is what pip installs for the package."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _requirements(lines) -> set[str]:
    return {re.sub(r"\s+", "", line.split("#")[0]) for line in lines if line.split("#")[0].strip()}


def test_requirements_txt_is_the_package_dependencies_without_torch():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    runtime = {r for r in _requirements(declared) if not re.match(r"torch\b", r)}
    listed = _requirements((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    assert listed == runtime, f"requirements.txt differs from pyproject.toml: {sorted(listed ^ runtime)}"


def test_every_subpackage_is_installed_with_the_package():
    """A folder with an __init__.py that pyproject does not list is missing from `pip install .`
    (an editable install hides it)."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {"syncfoley"} | {f"syncfoley.{p.parent.name}" for p in ROOT.glob("*/__init__.py")
                             if p.parent.name not in ("tests", "build")}
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
