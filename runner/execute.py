"""Running a validated prompt: dependency order, and a cache of node outputs between runs.

Each node's cache key hashes its class, its constant inputs, the keys of the nodes it reads from and
its IS_CHANGED value, so a second run in the same process re-executes only the nodes whose inputs
changed and what depends on them (in a batch, the model loaders run once). The cache keeps one entry
per node id, so memory stays bounded by the graph, not by the number of runs.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import LOCAL_HINT, NodeExecutionError, RunInterrupted
from . import spec
from .spec import input_specs
from .validate import Plan, validate
from .workflow import Workflow


@dataclass
class RunResult:
    """What one run did: the nodes executed or taken from the cache, the output nodes' `ui` dicts and
    the files they report."""
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    ui: dict[str, dict] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"executed": self.executed, "cached": self.cached, "files": [str(f) for f in self.files],
                "ui": _jsonable(self.ui), "seconds": round(self.seconds, 3)}


class Listener:
    """Hooks for progress displays (the CLI's tqdm bars); every method is optional."""

    def run_started(self, plan: Plan, to_execute: list[str]) -> None: ...
    def node_started(self, node_id: str, class_type: str) -> None: ...
    def node_finished(self, node_id: str, class_type: str, cached: bool) -> None: ...
    def run_finished(self) -> None: ...


class Executor:
    """Validates and runs API-format prompts with the node classes of `registry`, keeping outputs."""

    def __init__(self, registry: Mapping[str, type] | None = None, listener: Listener | None = None,
                 unknown_hint: str = LOCAL_HINT):
        self.registry = dict(spec.pack_nodes() if registry is None else registry)
        self.listener = listener or Listener()
        self.unknown_hint = unknown_hint
        self._cache: dict[str, tuple[str, tuple, dict | None]] = {}  # node id -> (key, outputs, ui)
        self._instances: dict[str, Any] = {}

    def validate(self, workflow: Workflow | Mapping) -> Plan:
        prompt, source = (workflow.prompt, workflow.source) if isinstance(workflow, Workflow) else (workflow, None)
        return validate(prompt, self.registry, source, self.unknown_hint)

    def run(self, workflow: Workflow | Mapping, extra_pnginfo: dict | None = None) -> RunResult:
        """Validate, then execute what changed since the last run. Raises WorkflowError (nothing ran),
        NodeExecutionError or RunInterrupted (nodes already done stay cached)."""
        from ..nodes.host import Interrupted, host

        started = time.perf_counter()
        plan = self.validate(workflow)
        if extra_pnginfo is None and isinstance(workflow, Workflow) and workflow.ui is not None:
            extra_pnginfo = {"workflow": workflow.ui}
        keys = self._cache_keys(plan)
        for stale in set(self._cache) - set(plan.order):  # nodes of another graph: free what they hold
            del self._cache[stale]
        to_execute = [i for i in plan.order if self._cache.get(i, ("",))[0] != keys[i]]
        result, outputs = RunResult(), {}
        interrupt = host().interrupt_event
        self.listener.run_started(plan, to_execute)
        try:
            for node_id in plan.order:
                class_type = plan.prompt[node_id]["class_type"]
                if node_id not in to_execute:
                    outputs[node_id] = self._cache[node_id][1]
                    result.cached.append(node_id)
                    self._collect_ui(node_id, self._cache[node_id][2], result)
                    self.listener.node_finished(node_id, class_type, cached=True)
                    continue
                if interrupt.is_set():
                    raise RunInterrupted(node_id, class_type)
                self.listener.node_started(node_id, class_type)
                try:
                    values, ui = self._execute(node_id, plan, outputs, extra_pnginfo)
                except (Interrupted, KeyboardInterrupt):
                    raise RunInterrupted(node_id, class_type) from None
                except NodeExecutionError:
                    raise
                except Exception as e:
                    self._cache.pop(node_id, None)
                    raise NodeExecutionError(node_id, class_type, e) from e
                outputs[node_id] = values
                self._cache[node_id] = (keys[node_id], values, ui)
                result.executed.append(node_id)
                self._collect_ui(node_id, ui, result)
                self.listener.node_finished(node_id, class_type, cached=False)
        except RunInterrupted:
            interrupt.clear()  # consumed: the next run starts afresh
            raise
        finally:
            self.listener.run_finished()
        result.seconds = time.perf_counter() - started
        return result

    def clear_cache(self) -> None:
        self._cache.clear()
        self._instances.clear()

    # Keys ---------------------------------------------------------------------------------------
    def _cache_keys(self, plan: Plan) -> dict[str, str]:
        keys: dict[str, str] = {}
        for node_id in plan.order:
            node = plan.prompt[node_id]
            cls = self.registry[node["class_type"]]
            inputs = {name: (["link", keys[str(v[0])], v[1]] if isinstance(v, list) else ["value", v])
                      for name, v in sorted(node["inputs"].items())}
            changed = self._is_changed(cls, node)
            if isinstance(changed, float) and math.isnan(changed):
                changed = ["always", time.time_ns(), node_id]  # NaN: never equal, always re-run
            identity = node_id if getattr(cls, "NOT_IDEMPOTENT", False) else None
            blob = json.dumps([node["class_type"], inputs, changed, identity], sort_keys=True, default=repr)
            keys[node_id] = hashlib.sha256(blob.encode()).hexdigest()
        return keys

    def _is_changed(self, cls: type, node: dict) -> Any:
        """IS_CHANGED sees constants only (linked values as None), as in ComfyUI; raising means changed."""
        hook = getattr(cls, "IS_CHANGED", None)
        if hook is None:
            return None
        try:
            kwargs = _call_arguments(hook, {n: (None if isinstance(v, list) else v) for n, v in node["inputs"].items()})
            return hook(**kwargs) if inspect.ismethod(hook) else getattr(cls(), "IS_CHANGED")(**kwargs)
        except Exception:
            return float("nan")

    # Execution ----------------------------------------------------------------------------------
    def _execute(self, node_id: str, plan: Plan, outputs: dict, extra_pnginfo: dict | None) -> tuple[tuple, dict | None]:
        node = plan.prompt[node_id]
        class_type = node["class_type"]
        cls = self.registry[class_type]
        kwargs = {}
        for name, declared in input_specs(cls).items():
            if declared.category == "hidden":
                kwargs[name] = {"UNIQUE_ID": node_id, "PROMPT": plan.prompt, "EXTRA_PNGINFO": extra_pnginfo}.get(declared.type)
            elif name in node["inputs"]:
                value = node["inputs"][name]
                kwargs[name] = outputs[str(value[0])][value[1]] if isinstance(value, list) else value
        instance = self._instances.get(node_id)
        if not isinstance(instance, cls):
            instance = self._instances[node_id] = cls()
        function = getattr(instance, getattr(cls, "FUNCTION", ""), None)
        if function is None:
            raise NodeExecutionError(node_id, class_type, f"the node class has no method FUNCTION = "
                                     f"{getattr(cls, 'FUNCTION', None)!r}", "NodeDefinitionError")
        with torch.inference_mode():  # as ComfyUI runs every node: nodes that train must opt out themselves
            returned = function(**kwargs)
        return _split_return(node_id, class_type, cls, returned)

    def _collect_ui(self, node_id: str, ui: dict | None, result: RunResult) -> None:
        if not ui:
            return
        from ..nodes.host import host

        result.ui[node_id] = ui
        for items in ui.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item:
                    result.files.append(file_location(item, host()))


def _split_return(node_id: str, class_type: str, cls: type, returned: Any) -> tuple[tuple, dict | None]:
    ui = None
    if isinstance(returned, dict):
        ui = returned.get("ui")
        returned = returned.get("result", ())
    if returned is None:
        returned = ()
    if not isinstance(returned, (tuple, list)):
        raise NodeExecutionError(node_id, class_type, f"returned {type(returned).__name__}; a node returns a tuple "
                                 "with one value per RETURN_TYPES entry", "NodeDefinitionError")
    expected = len(getattr(cls, "RETURN_TYPES", ()))
    if len(returned) != expected and not (ui is not None and len(returned) == 0):
        raise NodeExecutionError(node_id, class_type, f"returned {len(returned)} values for {expected} RETURN_TYPES",
                                 "NodeDefinitionError")
    return tuple(returned), ui


def file_location(item: dict, host) -> Path:
    """Where a ui entry {"filename", "subfolder", "type"} lies on this machine (temp files, which
    ComfyUI keeps in its own folder, go to the output folder here)."""
    base = host.get_input_dir() if item.get("type") == "input" else host.get_output_dir()
    return Path(base) / (item.get("subfolder") or "") / item["filename"]


def _call_arguments(function, available: dict) -> dict:
    """The inputs a hook names (all of them if it takes **kwargs); absent ones keep its defaults."""
    params = inspect.signature(function).parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return dict(available)
    return {p.name: available[p.name] for p in params if p.name in available
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: repr(o)))
