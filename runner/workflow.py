"""Workflow files: read them, tell the two formats apart, and convert the UI format to the API format.

The API format is what ComfyUI executes: `{id: {"class_type", "inputs": {name: value | [src_id, slot]}}}`.
The UI format is what the browser saves (nodes, links, `widgets_values`); ComfyUI converts it in the
browser only, so the runner repeats that conversion with the node classes' input declarations.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import LOCAL_HINT, WorkflowError, problem, unknown_node
from .spec import CONTROL_VALUES, FRONTEND_ONLY, InputSpec, input_specs

MUTED, BYPASSED = 2, 4


@dataclass
class Workflow:
    """A workflow ready for validation: the API-format prompt, plus the UI graph it came from."""
    prompt: dict[str, dict]
    ui: dict | None = None
    source: str | None = None
    format: str = "api"
    extra: dict = field(default_factory=dict)


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; malformed JSON is a WorkflowError naming the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise WorkflowError([problem("file_not_readable", f"cannot read the workflow: {e.strerror or e}")], str(path)) from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise WorkflowError([problem("malformed_json", f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}")],
                            str(path)) from e


def detect_format(data: Any) -> str:
    """'ui', 'api' or 'wrapped' (the {"prompt": {...}} body of POST /prompt); else a WorkflowError."""
    if isinstance(data, dict):
        if isinstance(data.get("nodes"), list):
            return "ui"
        if isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
            return "wrapped"
        if data and any(isinstance(v, dict) and "class_type" in v for v in data.values()):
            return "api"
    raise WorkflowError([problem(
        "invalid_prompt", "not a ComfyUI workflow: expected the API format {id: {class_type, inputs}} "
        "or the UI format {nodes: [...], links: [...]}")])


def load_workflow(source: str | Path | Mapping, registry: Mapping[str, type] | None = None,
                  unknown_hint: str = LOCAL_HINT) -> Workflow:
    """A workflow file (or its parsed JSON) as an API-format prompt; UI files are converted."""
    name = None if isinstance(source, Mapping) else str(source)
    data = source if isinstance(source, Mapping) else read_json(source)
    try:
        kind = detect_format(data)
    except WorkflowError as e:
        raise WorkflowError(e.errors, name) from None
    if kind == "ui":
        if registry is None:
            from .spec import pack_nodes
            registry = pack_nodes()
        return Workflow(ui_to_api(data, registry, name, unknown_hint), dict(data), name, "ui")
    prompt = data["prompt"] if kind == "wrapped" else data
    return Workflow(normalize_api(prompt), None, name, "api")


def normalize_api(prompt: Mapping) -> dict[str, dict]:
    """String node ids everywhere (links too), copied so later edits leave the caller's dict alone."""
    out = {}
    for node_id, node in prompt.items():
        node = json.loads(json.dumps(node)) if isinstance(node, dict) else node
        if isinstance(node, dict) and isinstance(node.get("inputs"), dict):
            for name, value in node["inputs"].items():
                if is_link(value):
                    node["inputs"][name] = [str(value[0]), value[1]]
        out[str(node_id)] = node
    return out


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) and isinstance(value[1], int) \
        and not isinstance(value[1], bool)


def strip_meta(prompt: Mapping[str, dict]) -> dict[str, dict]:
    """The prompt without the browser's `_meta` titles (what two exports must agree on)."""
    return {k: {"class_type": v.get("class_type"), "inputs": v.get("inputs", {})} for k, v in prompt.items()}


# UI -> API ---------------------------------------------------------------------------------------
@dataclass
class _Link:
    origin: str
    slot: int
    target: str
    type: Any


def _links(ui: dict) -> dict[Any, _Link]:
    links = {}
    for entry in ui.get("links") or []:
        if isinstance(entry, dict):
            link_id, origin, slot, target, _, typ = (entry.get(k) for k in
                                                     ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"))
        else:
            link_id, origin, slot, target, _, typ = (list(entry) + [None] * 6)[:6]
        links[link_id] = _Link(str(origin), int(slot or 0), str(target), typ)
    return links


class _Converter:
    def __init__(self, ui: dict, registry: Mapping[str, type], unknown_hint: str):
        self.nodes = {str(n.get("id")): n for n in ui["nodes"] if isinstance(n, dict)}
        self.links = _links(ui)
        self.registry = registry
        self.unknown_hint = unknown_hint
        self.errors: list[dict] = []

    def convert(self) -> dict[str, dict]:
        prompt = {}
        for node_id, node in self.nodes.items():
            class_type = node.get("type")
            if class_type in FRONTEND_ONLY or node.get("mode", 0) in (MUTED, BYPASSED):
                continue
            cls = self.registry.get(class_type)
            if cls is None:
                self.errors.append(unknown_node(node_id, class_type, self.unknown_hint))
                continue
            specs = input_specs(cls)
            inputs = self._widget_values(node, specs)
            self._link_inputs(node_id, class_type, node, specs, inputs)
            prompt[node_id] = {"inputs": inputs, "class_type": class_type,
                               "_meta": {"title": node.get("title") or class_type}}
        return prompt

    def _widget_values(self, node: dict, specs: dict[str, InputSpec]) -> dict:
        """widgets_values follow the widget inputs in declaration order; seed-like widgets are followed
        by their "control after generate" value, and upload buttons (after the required inputs) by theirs."""
        widgets = [s for s in specs.values() if s.is_widget]
        values = node.get("widgets_values")
        if isinstance(values, dict):
            return {s.name: _wrap(values[s.name]) for s in widgets if s.name in values}
        values = list(values or [])
        upload_pending = any(s.has_upload_button for s in specs.values())
        inputs, i = {}, 0
        for spec in widgets:
            if upload_pending and spec.category != "required":
                i, upload_pending = _skip_upload(values, i), False
            if i < len(values):
                inputs[spec.name] = _wrap(values[i])
                i += 1
            if spec.has_control_value and i < len(values) and values[i] in CONTROL_VALUES:
                i += 1
        return inputs

    def _link_inputs(self, node_id: str, class_type: str, node: dict, specs: dict[str, InputSpec], inputs: dict) -> None:
        for entry in node.get("inputs") or []:
            if entry.get("link") is None:
                continue
            name = entry.get("name") if entry.get("name") in specs else (entry.get("widget") or {}).get("name", entry.get("name"))
            kind, value = self._resolve(entry["link"], set())
            if kind == "missing":
                spec = specs.get(name)
                if spec is not None and spec.category == "required" and name not in inputs:
                    self.errors.append(problem("required_input_missing", f"Required input is missing: {value}",
                                               node_id=node_id, class_type=class_type, input_name=name, details=name))
                continue
            inputs[name] = value if kind == "link" else _wrap(value)

    def _resolve(self, link_id: Any, seen: set) -> tuple[str, Any]:
        """Follow a link through reroutes, primitives and bypassed nodes to (kind, value):
        ("link", [id, slot]), ("value", constant) or ("missing", why)."""
        link = self.links.get(link_id)
        if link is None:
            return "missing", f"link {link_id} is not in the workflow's links"
        origin = self.nodes.get(link.origin)
        if origin is None:  # left for validation, which names the missing node
            return "link", [link.origin, link.slot]
        if link.origin in seen:
            return "missing", f"reroutes/bypassed nodes loop through node {link.origin}"
        seen = seen | {link.origin}
        kind, mode = origin.get("type"), origin.get("mode", 0)
        label = f"node {link.origin} ({kind})"
        if kind == "PrimitiveNode":
            values = origin.get("widgets_values") or []
            return ("value", values[0]) if values else ("missing", f"primitive {label} has no value")
        if mode == MUTED:
            return "missing", f"its source {label} is muted"
        if kind == "Reroute" or mode == BYPASSED:
            passed = self._passthrough_input(origin, link)
            if passed is None or passed.get("link") is None:
                return "missing", f"{'reroute' if kind == 'Reroute' else 'bypassed'} {label} passes nothing on"
            return self._resolve(passed["link"], seen)
        return "link", [link.origin, link.slot]

    def _passthrough_input(self, node: dict, link: _Link) -> dict | None:
        """The input a reroute or bypassed node passes to `link`: the same slot when its type matches,
        else the first input of the link's type (what the browser does)."""
        inputs = node.get("inputs") or []
        if node.get("type") == "Reroute":
            return inputs[0] if inputs else None
        outputs = node.get("outputs") or []
        wanted = link.type if link.type not in (None, "*") else (
            outputs[link.slot].get("type") if link.slot < len(outputs) else None)
        if link.slot < len(inputs) and inputs[link.slot].get("type") == wanted:
            return inputs[link.slot]
        return next((entry for entry in inputs if entry.get("type") == wanted), None)


def _wrap(value: Any) -> Any:
    """A list widget value would read as a link: ComfyUI's API format wraps it in {"__value__": ...}."""
    return {"__value__": value} if isinstance(value, list) else value


def _skip_upload(values: list, i: int) -> int:
    return i + 1 if i < len(values) and values[i] in ("image", "video", "audio", None) else i


def ui_to_api(ui: dict, registry: Mapping[str, type], source: str | None = None,
              unknown_hint: str = LOCAL_HINT) -> dict[str, dict]:
    """Convert a UI-format workflow with the node classes of `registry` (muted and bypassed nodes,
    reroutes and primitives resolved as the browser does). Raises WorkflowError for what it cannot map."""
    if (ui.get("definitions") or {}).get("subgraphs"):
        raise WorkflowError([problem("unsupported_subgraph", "the workflow uses subgraphs, which the runner does not "
                                     "expand; unpack them in ComfyUI, or export the workflow in the API format")], source)
    try:
        converter = _Converter(ui, registry, unknown_hint)
        prompt = converter.convert()
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise WorkflowError([problem("invalid_prompt", f"malformed UI-format workflow ({type(e).__name__}: {e}); "
                                     "re-save it from ComfyUI")], source) from e
    if converter.errors:
        raise WorkflowError(converter.errors, source)
    return prompt
