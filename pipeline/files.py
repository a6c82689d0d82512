"""Finding a model set in a folder by its file names: the parts of one family (`families`), the
built-in demo set by its name."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..families import Family, families

WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".bin")
DEMO_NAMES = ("demo", "syncfoley-demo")


@dataclass(frozen=True)
class ModelFiles:
    family: Family
    paths: dict[str, Path]  # part -> file or folder


def model_folder(folder: str | os.PathLike) -> Path:
    """`folder`, or the demo set's folder for "demo" / "syncfoley-demo"."""
    if str(folder) in DEMO_NAMES:
        from ..demo.bundle import WEIGHTS

        return WEIGHTS
    return Path(folder)


def find_model_files(folder: str | os.PathLike, family: str | None = None, model: str | None = None) -> ModelFiles:
    """The files of one family's set in `folder` (or `folder/foley`), recognised by name: the first
    family whose every part is there once. `family` picks one family; `model` picks the network file
    (a name in the folder or a path) where there are several. FileNotFoundError says what is missing
    or ambiguous for each family."""
    root = model_folder(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"model folder '{folder}' does not exist")
    roots = [root] + ([root / "foley"] if (root / "foley").is_dir() else [])
    entries = [p for r in roots for p in sorted(r.iterdir()) if p.is_dir() or p.suffix.lower() in WEIGHT_SUFFIXES]
    known = families()
    if family is not None and family not in known:
        raise ValueError(f"unknown model family '{family}'; choose one of {', '.join(known)}")
    candidates = [known[family]] if family else list(known.values())
    found, problems = [], []
    for fam in candidates:
        if not fam.files:
            continue
        try:
            found.append(ModelFiles(fam, _find_set(fam, entries, model)))
        except FileNotFoundError as error:
            problems.append(f"{fam.title}: {error}")
    if len(found) == 1:
        return found[0]
    if found:
        raise FileNotFoundError(f"model folder '{folder}' holds a complete set of {' and of '.join(f.family.title for f in found)}; "
                                f"choose one with family= ({', '.join(f.family.name for f in found)}) or model=")
    raise FileNotFoundError(f"model folder '{folder}' holds no complete model set: " + "; ".join(problems))


def _find_set(family: Family, entries: list[Path], model: str | None) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for part in family.files:
        matches = [p for p in entries if _kind_ok(p, part.kind) and part.matches(p.name.lower())]
        if part.part == "model" and model is not None:
            wanted = Path(model)
            matches = [wanted] if wanted.is_file() and part.matches(wanted.name.lower()) else \
                [p for p in matches if p.name == wanted.name]
        if family.narrow is not None:
            matches = family.narrow(part.part, matches, found)
        if len(matches) != 1:
            what = "nothing" if not matches else ", ".join(p.name for p in matches)
            hint = " (choose one with model=)" if part.part == "model" and len(matches) > 1 else ""
            raise FileNotFoundError(f"found {what} for the {part.part} ({part.what}){hint}")
        found[part.part] = matches[0]
    return found


def _kind_ok(path: Path, kind: str) -> bool:
    return kind == "any" or (path.is_dir() if kind == "folder" else path.is_file())
