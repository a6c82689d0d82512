"""Changing node inputs from outside the workflow file: `--set 3.seed=7`, `--set seed=7`, `--video`.

A value given as text is parsed by the input's declared type; the result goes through validation
like every other value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .errors import WorkflowError, problem
from .spec import WIDGET_TYPES, input_specs

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class Override:
    """Set `input` to `value` on node `node_id`, or on the one node that has that input (node_id None)."""
    input: str
    value: Any
    node_id: str | None = None


def parse_set(text: str) -> Override:
    """`NODE_ID.input=value` or `input=value` (the value may contain '=')."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise WorkflowError([problem("bad_override", f"--set '{text}': expected NODE_ID.input=value or input=value")])
    node_id, dot, name = key.strip().partition(".")
    return Override(name, value, node_id) if dot and name else Override(key.strip(), value)


def apply_overrides(prompt: Mapping[str, dict], overrides: Iterable[Override],
                    registry: Mapping[str, type] | None = None) -> dict[str, dict]:
    """A copy of `prompt` with the overrides applied; unknown targets and unparsable values are
    WorkflowErrors that say which nodes and inputs exist."""
    prompt = {k: {**v, "inputs": dict(v.get("inputs", {}))} for k, v in prompt.items()}
    errors = []
    for override in overrides:
        try:
            node_id = _target(prompt, override, registry or {})
            node = prompt[node_id]
            node["inputs"][override.input] = parse_value(node, override.input, override.value, registry or {}, node_id)
        except WorkflowError as e:
            errors += e.errors
    if errors:
        raise WorkflowError(errors)
    return prompt


def _declared(node: dict, registry: Mapping[str, type], values_only: bool = False) -> dict:
    """The node's inputs (name -> InputSpec, or None where the class is not known here); with
    `values_only`, those that take a value rather than a link (`--video` means the file name, not
    a FOLEY_VIDEO link of another node)."""
    cls = registry.get(node.get("class_type"))
    if cls is None:
        return {n: None for n, v in node.get("inputs", {}).items() if not (values_only and isinstance(v, list))}
    specs = {n: s for n, s in input_specs(cls).items() if s.category != "hidden"}
    if values_only:
        specs = {n: s for n, s in specs.items() if s.type == "*" or any(
            t.strip() in WIDGET_TYPES for t in s.type_name.split(","))}
    return specs


def _target(prompt: dict, override: Override, registry: Mapping[str, type]) -> str:
    name = override.input
    if override.node_id is not None and override.node_id in prompt:
        node = prompt[override.node_id]
        declared = _declared(node, registry)
        if name not in declared:
            raise WorkflowError([problem("bad_override", f"node {override.node_id} ({node.get('class_type')}) has no input "
                                         f"'{name}'; its inputs: {', '.join(declared) or 'none'}",
                                         node_id=override.node_id, class_type=node.get("class_type"), input_name=name)])
        return override.node_id
    missing_node = override.node_id
    if missing_node is not None:  # "a.b=..." where "a" is no node: perhaps the name itself has a dot
        name = f"{override.node_id}.{name}"
        override = Override(name, override.value)
    candidates = [i for i, node in prompt.items() if name in _declared(node, registry, values_only=True)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates and missing_node is not None:
        nodes = ", ".join(f"{i} ({node.get('class_type')})" for i, node in prompt.items())
        raise WorkflowError([problem("bad_override", f"--set {name}=...: this workflow has no node {missing_node}; "
                                     f"its nodes: {nodes}", input_name=override.input)])
    if not candidates:
        found = sorted({n for node in prompt.values() for n in _declared(node, registry, values_only=True)})
        raise WorkflowError([problem("bad_override", f"no node has an input named '{name}'; inputs in this workflow: "
                                     f"{', '.join(found)}", input_name=name)])
    listed = ", ".join(f"node {i} ({prompt[i].get('class_type')})" for i in candidates)
    raise WorkflowError([problem("ambiguous_override", f"several nodes have an input named '{name}': {listed}; "
                                 f"say which with --set {candidates[0]}.{name}=...", input_name=name)])


def parse_value(node: dict, name: str, value: Any, registry: Mapping[str, type], node_id: str | None = None) -> Any:
    """Text to the input's declared type (INT, FLOAT, BOOLEAN, STRING, COMBO); other values pass."""
    if not isinstance(value, str):
        return value
    spec = _declared(node, registry).get(name)
    if spec is None:  # no declaration (a node of the server only): keep the type of the current value
        current = node.get("inputs", {}).get(name)
        kind = {bool: "BOOLEAN", int: "INT", float: "FLOAT"}.get(type(current), "STRING")
    else:
        kind = spec.type_name
    where = dict(node_id=node_id, class_type=node.get("class_type"), input_name=name)
    text = value.strip()
    try:
        if kind == "INT":
            return int(text)
        if kind == "FLOAT":
            return float(text)
    except ValueError:
        raise WorkflowError([problem("invalid_input_type", f"'{value}' is not {'a whole number' if kind == 'INT' else 'a number'}"
                                     f" ({kind})", **where)]) from None
    if kind == "BOOLEAN":
        if text.lower() in TRUE + FALSE:
            return text.lower() in TRUE
        raise WorkflowError([problem("invalid_input_type", f"'{value}' is not a BOOLEAN (true/false)", **where)])
    if kind == "COMBO":
        return next((option for option in spec.combo if str(option) == value), value)
    if kind not in ("STRING", "*"):
        raise WorkflowError([problem("invalid_input_type", f"takes a link from a node's {kind} output; "
                                     "it cannot be set from the command line", **where)])
    return value
