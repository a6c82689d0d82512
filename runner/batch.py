"""Batches: one workflow over a folder or a CSV of videos, resumable, split across processes.

Every item runs the same graph with its own overrides through one executor, whose cache keeps the
nodes whose inputs did not change (the model loaders), so models load once. Each item's outcome is
appended to a ledger (`ledger-<rank>.jsonl` in the output folder, one JSON line per item, written
with a single append and fsync); a re-run skips the items that a ledger marks done with the same
result key and whose output files still exist. The key digests what decides an item's result: the
graph with every override applied (output names aside) and the size and time of every file it
names (the video, the model files), so changed settings or a replaced model regenerate. `force`
re-runs everything. One item failing is recorded and the batch goes on.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from .errors import NodeExecutionError, RunInterrupted, WorkflowError, problem
from .overrides import Override, apply_overrides, parse_set
from .workflow import Workflow

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".gif")


@dataclass(frozen=True)
class BatchItem:
    id: str  # stable across runs: the video's absolute path (+ a hash of the item's other overrides)
    video: str | None
    overrides: tuple[Override, ...]


@dataclass
class BatchSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # done by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # item id -> error
    outputs: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict:
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed, "outputs": self.outputs}


class ItemRunner(Protocol):
    def run(self, workflow: Workflow): ...


def batch_items(source: str | Path, video_input: str = "video") -> list[BatchItem]:
    """Items of a folder (its video files, sorted) or of a CSV (column `video`, optional `prompt`,
    any other column an override by input name or NODE_ID.input; relative paths are read from the
    CSV's folder; empty cells leave the workflow's value)."""
    source = Path(source)
    if source.is_dir():
        videos = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise WorkflowError([problem("empty_batch", f"no video files ({', '.join(VIDEO_SUFFIXES)}) in {source}")])
        return [_item(str(p.resolve()), [Override(video_input, str(p.resolve()))]) for p in videos]
    if not source.is_file():
        raise WorkflowError([problem("empty_batch", f"batch source {source} is neither a folder nor a CSV file")])
    with open(source, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows or "video" not in rows[0]:
        raise WorkflowError([problem("bad_batch_csv", f"{source}: expected a header row with a 'video' column "
                                     "(and optionally 'prompt' or other input names)")])
    items, seen = [], {}
    for row in rows:
        video, overrides = (row.get("video") or "").strip(), []
        if video:
            video = str((source.parent / video).resolve()) if not Path(video).is_absolute() else video
            overrides.append(Override(video_input, video))
        for column, cell in row.items():
            if column and column != "video" and cell not in (None, ""):
                overrides.append(parse_set(f"{column.strip()}={cell}"))
        item = _item(video, overrides)
        seen[item.id] = seen.get(item.id, 0) + 1
        items.append(item if seen[item.id] == 1 else BatchItem(f"{item.id}#{seen[item.id]}", item.video, item.overrides))
    return items


def _item(video: str | None, overrides: list[Override]) -> BatchItem:
    others = sorted((o.node_id or "", o.input, str(o.value)) for o in overrides if o.value != video)
    suffix = "?" + hashlib.sha1(json.dumps(others).encode()).hexdigest()[:10] if others else ""
    return BatchItem((video or "(no video)") + suffix, video, tuple(overrides))


class Ledger:
    """Outcomes of items, one JSON line each, in `folder/ledger-<rank>.jsonl`."""

    def __init__(self, folder: str | Path, rank: int = 0):
        self.folder = Path(folder)
        self.path = self.folder / f"ledger-{rank}.jsonl"
        self.rank = rank

    def append(self, entry: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = (json.dumps({**entry, "rank": self.rank, "time": time.time()}) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of a whole line: a crash leaves whole lines or a torn last one
            os.fsync(fd)
        finally:
            os.close(fd)

    def finished(self) -> dict[str, dict]:
        """Items some ledger (any rank) marks done whose outputs are all still there (the last entry
        of an item wins)."""
        done = {}
        for path in sorted(self.folder.glob("ledger-*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash
                if entry.get("status") == "done" and all(Path(p).exists() for p in entry.get("outputs", [])):
                    done[entry["id"]] = entry
        return done


def split_for_process(items: list) -> tuple[list, int, int]:
    """This process's share of `items`, its rank and the process count. Under `accelerate launch`
    (or any launcher setting WORLD_SIZE/RANK) each process takes a contiguous slice."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return list(items), 0, 1
    try:
        from accelerate import PartialState
    except ImportError:
        rank = int(os.environ.get("RANK", "0"))
        per, extra = divmod(len(items), world)
        start = rank * per + min(rank, extra)
        return list(items[start:start + per + (rank < extra)]), rank, world
    state = PartialState()
    from ..nodes.host import configure, host

    if host().device is None:  # one accelerator per process
        configure(device=str(state.device))
    with state.split_between_processes(list(items)) as mine:
        return list(mine), state.process_index, state.num_processes


OUTPUT_NAMING = ("filename_prefix",)  # inputs that name the files, not what is in them


def result_key(prompt: dict, locate: Callable[[str], Path | None]) -> str:
    """A digest of what decides a run's result: each node's class and inputs (output naming aside),
    and the size and modification time of every file an input names (`locate` finds them)."""
    nodes = []
    for node_id in sorted(prompt):
        node = prompt[node_id]
        inputs = {k: v for k, v in node.get("inputs", {}).items() if k not in OUTPUT_NAMING}
        files = {}
        for name, value in inputs.items():
            path = locate(value) if isinstance(value, str) and value else None
            if path is not None:
                stat = path.stat()
                files[name] = [str(path), stat.st_size, stat.st_mtime_ns]
        nodes.append([node_id, node.get("class_type"), inputs, files])
    return hashlib.sha256(json.dumps(nodes, sort_keys=True, default=str).encode()).hexdigest()[:20]


def locate_local_file(value: str) -> Path | None:
    """The file an input value names here: a path, a name in the input folder, or a model file or
    encoder folder's config in the model folders; None when it names no file."""
    from ..nodes.host import host

    candidates = [Path(value).expanduser(), host().get_input_dir() / value]
    candidates += [folder / value for folder in host().model_dirs()]
    for candidate in candidates:
        try:
            if candidate.is_file():
                return candidate.resolve()
            if candidate.is_dir() and (candidate / "config.json").is_file():
                return (candidate / "config.json").resolve()
        except OSError:  # a value too long or odd to be a path
            continue
    return None


def run_batch(workflow: Workflow, items: list[BatchItem], runner: ItemRunner, output_dir: str | Path,
              registry=None, overrides: list[Override] = (), log: Callable[[str], None] = print,
              force: bool = False, locate: Callable[[str], Path | None] = locate_local_file) -> BatchSummary:
    """Run every item not done yet with the same result key (every item with `force`); record each
    outcome; stop early only when interrupted."""
    mine, rank, world = split_for_process(items)
    ledger = Ledger(output_dir, rank)
    finished = {} if force else ledger.finished()
    summary = BatchSummary()
    where = f"[rank {rank}/{world}] " if world > 1 else ""
    for index, item in enumerate(mine, 1):
        label = f"{where}[{index}/{len(mine)}] {Path(item.video).name if item.video else item.id}"
        started = time.perf_counter()
        try:
            prompt = apply_overrides(workflow.prompt, [*overrides, *_prefix_overrides(workflow.prompt, item), *item.overrides],
                                     registry)
            key = result_key(prompt, locate)
            if finished.get(item.id, {}).get("key") == key:
                summary.skipped.append(item.id)
                summary.outputs[item.id] = finished[item.id].get("outputs", [])
                continue
            result = runner.run(Workflow(prompt, workflow.ui, workflow.source, workflow.format))
        except RunInterrupted:
            log(f"{label}: interrupted")
            raise
        except Exception as e:  # any failure of one item is that item's, not the batch's
            message = str(e) if isinstance(e, (WorkflowError, NodeExecutionError)) else f"{type(e).__name__}: {e}"
            ledger.append({"id": item.id, "video": item.video, "status": "failed", "error": message,
                           "seconds": round(time.perf_counter() - started, 3)})
            summary.failed[item.id] = message
            log(f"{label}: FAILED: {message}")
            continue
        files = [str(Path(f).resolve()) for f in result.files]
        ledger.append({"id": item.id, "key": key, "video": item.video, "status": "done", "outputs": files,
                       "seconds": round(time.perf_counter() - started, 3)})
        summary.done.append(item.id)
        summary.outputs[item.id] = files
        log(f"{label}: done in {time.perf_counter() - started:.1f} s" + (f" -> {', '.join(files)}" if files else ""))
    return summary


def _prefix_overrides(prompt: dict, item: BatchItem) -> list[Override]:
    """Name each item's files after its video: `filename_prefix` gets `_<video stem>` appended
    (unless the item sets the prefix itself)."""
    if not item.video or any(o.input == "filename_prefix" for o in item.overrides):
        return []
    stem = Path(item.video).stem
    return [Override("filename_prefix", f"{node['inputs']['filename_prefix']}_{stem}", node_id)
            for node_id, node in prompt.items()
            if isinstance(node.get("inputs", {}).get("filename_prefix"), str)]
