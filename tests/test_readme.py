"""README's examples stay true: the Python example runs as written, and every file its commands name exists."""
from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_python_example_runs_as_written(tmp_path, monkeypatch):
    (example,) = _blocks("python")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.waveform.shape[:2] == (2, 1) and result.sample_rate > 0
    assert result.waveform.shape[-1] == round(result.duration * result.sample_rate)
    assert not torch.equal(result.waveform[0], result.waveform[1])  # two takes, two seeds


def test_files_named_by_the_commands_exist():
    root = README.parent
    named = set()
    for block in _blocks("bash"):
        named |= set(re.findall(r"\b((?:workflows|demo)/[\w./-]+\.(?:json|mp4|toml))", block))
    assert {"workflows/demo.json", "demo/examples/syncfoley-example.mp4"} <= named
    assert [name for name in sorted(named) if not (root / name).is_file()] == []
