"""Validation before anything runs: ComfyUI's checks, with errors in ComfyUI's shape.

Checked: node structure and known types, output nodes present, links (to existing nodes, existing
output slots, matching types), cycles, required inputs, value types, min/max ranges, COMBO
membership and the nodes' own VALIDATE_INPUTS hooks. As in ComfyUI, only output nodes and what they
depend on are checked and run, and an input that VALIDATE_INPUTS names skips the range/list checks.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import LOCAL_HINT, WorkflowError, problem, unknown_node
from .spec import WIDGET_TYPES, InputSpec, input_specs, is_output_node, return_types, types_match
from .workflow import is_link


@dataclass
class Plan:
    """A validated prompt (values converted to their declared types) and what to run, in order."""
    prompt: dict[str, dict]
    outputs: list[str]
    order: list[str]


def node_sort_key(node_id: str) -> tuple:
    return (0, int(node_id), "") if str(node_id).isdigit() else (1, 0, str(node_id))


def validate(prompt: Mapping[str, dict], registry: Mapping[str, type], source: str | None = None,
             unknown_hint: str = LOCAL_HINT) -> Plan:
    """Check an API-format prompt against `registry`; a WorkflowError lists every problem found."""
    errors = _structure(prompt)
    if errors:
        raise WorkflowError(errors, source)
    errors = [unknown_node(i, n["class_type"], unknown_hint) for i, n in prompt.items() if n["class_type"] not in registry]
    if errors:
        raise WorkflowError(errors, source)
    prompt = {i: {**n, "inputs": _declared_only(n, registry[n["class_type"]])} for i, n in prompt.items()}
    outputs = sorted((i for i, n in prompt.items() if is_output_node(registry[n["class_type"]])), key=node_sort_key)
    if not outputs:
        raise WorkflowError([problem("prompt_no_outputs", "Prompt has no outputs: no node saves or shows a result "
                                     "(no OUTPUT_NODE among: " + ", ".join(sorted({n["class_type"] for n in prompt.values()})) + ")")], source)
    needed = _ancestors(prompt, outputs)
    checked = {}
    for node_id in sorted(needed, key=node_sort_key):
        node_errors, inputs = _check_node(node_id, prompt, registry)
        errors += node_errors
        checked[node_id] = {**prompt[node_id], "inputs": inputs}
    cycle = _find_cycle(prompt, outputs)
    if cycle:
        errors.insert(0, _cycle_problem(prompt, cycle))
    if errors:
        raise WorkflowError(errors, source)
    return Plan(checked, outputs, topological_order(checked, outputs))


def check_format(prompt: Mapping[str, dict], source: str | None = None) -> None:
    """What can be checked without the node classes (before sending a prompt to a server): the
    structure, links to nodes that exist, and cycles."""
    errors = _structure(prompt)
    if not errors:
        for node_id, node in prompt.items():
            for name, (src, _) in _links_of(node):
                if src not in prompt:
                    errors.append(problem("missing_linked_node", f"linked to node {src}, which is not in the workflow",
                                          node_id=node_id, class_type=node["class_type"], input_name=name))
        cycle = _find_cycle(prompt, sorted(prompt, key=node_sort_key))
        if cycle:
            errors.append(_cycle_problem(prompt, cycle))
    if errors:
        raise WorkflowError(errors, source)


def _cycle_problem(prompt: Mapping, cycle: list[str]) -> dict:
    path = " -> ".join(f"node {i} ({prompt[i]['class_type']})" for i in cycle + [cycle[0]])
    return problem("dependency_cycle", f"dependency cycle: {path}; a node cannot depend on its own result",
                   node_id=cycle[0], class_type=prompt[cycle[0]]["class_type"])


def _structure(prompt: Mapping) -> list[dict]:
    errors = []
    if not prompt:
        return [problem("invalid_prompt", "the workflow has no nodes")]
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            errors.append(problem("invalid_prompt", f"node {node_id} has no class_type: each node must be "
                                  "{\"class_type\": ..., \"inputs\": {...}}", node_id=str(node_id)))
        elif not isinstance(node.get("inputs", {}), dict):
            errors.append(problem("invalid_prompt", "inputs must be an object of name: value or [node_id, slot]",
                                  node_id=str(node_id), class_type=node["class_type"]))
    return errors


def _declared_only(node: dict, cls: type) -> dict:
    """Inputs the class declares; others (left over from an older node version) are ignored, as in ComfyUI."""
    declared = {n for n, spec in input_specs(cls).items() if spec.category != "hidden"}
    return {n: v for n, v in (node.get("inputs") or {}).items() if n in declared}


def _links_of(node: dict):
    return [(name, [str(v[0]), v[1]]) for name, v in (node.get("inputs") or {}).items() if is_link(v)]


def _ancestors(prompt: Mapping, outputs: list[str]) -> set[str]:
    seen, stack = set(), list(outputs)
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in prompt:
            continue
        seen.add(node_id)
        stack.extend(src for _, (src, _) in _links_of(prompt[node_id]))
    return seen


def _find_cycle(prompt: Mapping, outputs: list[str]) -> list[str] | None:
    """One dependency cycle among the outputs' ancestors, as the node ids along it."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for start in outputs:
        path: list[str] = []
        stack = [(start, iter(_links_of(prompt[start])))]
        state[start] = state.get(start) or 1
        if state[start] == 2:
            continue
        path.append(start)
        while stack:
            node_id, links = stack[-1]
            for _, (src, _) in links:
                if src not in prompt:
                    continue
                if state.get(src) == 1:
                    return path[path.index(src):]
                if src not in state:
                    state[src] = 1
                    path.append(src)
                    stack.append((src, iter(_links_of(prompt[src]))))
                    break
            else:
                state[node_id] = 2
                path.pop()
                stack.pop()
    return None


def topological_order(prompt: Mapping, outputs: list[str]) -> list[str]:
    """Outputs and their ancestors, every node after the nodes it reads from (depth-first, stable)."""
    order, done = [], set()

    def visit(node_id: str):
        stack = [(node_id, iter(_links_of(prompt[node_id])))]
        while stack:
            current, links = stack[-1]
            for _, (src, _) in links:
                if src not in done and all(src != s for s, _ in stack):
                    stack.append((src, iter(_links_of(prompt[src]))))
                    break
            else:
                stack.pop()
                if current not in done:
                    done.add(current)
                    order.append(current)
    for output in outputs:
        visit(output)
    return order


def _check_node(node_id: str, prompt: Mapping, registry: Mapping[str, type]) -> tuple[list[dict], dict]:
    node = prompt[node_id]
    class_type = node["class_type"]
    cls = registry[class_type]
    specs = input_specs(cls)
    hook_args, hook_kwargs = _hook_signature(cls)
    errors, inputs, received = [], dict(node.get("inputs") or {}), {}

    def err(type_: str, message: str, name: str | None, details: str = "") -> None:
        errors.append(problem(type_, message, node_id=node_id, class_type=class_type, input_name=name, details=details))

    for name, spec in specs.items():
        if spec.category == "hidden":
            continue
        if name not in inputs:
            if spec.category == "required":
                err("required_input_missing", "Required input is missing", name, name)
            continue
        value = inputs[name]
        if isinstance(value, list):
            received_type = _check_link(value, spec, prompt, registry, lambda t, m, d="": err(t, m, name, d))
            if received_type is not None:
                received[name] = received_type
            continue
        hook_checks = name in hook_args or hook_kwargs
        ok, converted, why = coerce_value(spec, value, check_limits=not hook_checks)
        if not ok:
            err(*why, name)
        else:
            inputs[name] = converted
    if not errors and (hook_args or hook_kwargs):
        _run_hook(cls, specs, inputs, received, hook_args, hook_kwargs, err)
    return errors, inputs


def _check_link(value: list, spec: InputSpec, prompt: Mapping, registry: Mapping, err) -> Any:
    if not is_link(value):
        err("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]", str(value))
        return None
    src, slot = str(value[0]), value[1]
    if src not in prompt:
        err("missing_linked_node", f"linked to node {src}, which is not in the workflow", f"{spec.name} <- [{src}, {slot}]")
        return None
    src_type = prompt[src].get("class_type")
    outs = return_types(registry[src_type])
    if not 0 <= slot < len(outs):
        err("bad_linked_input", f"linked to output slot {slot} of node {src} ({src_type}), which has "
            f"{len(outs)} output{'s' if len(outs) != 1 else ''} ({', '.join(map(str, outs)) or 'none'})")
        return None
    if not types_match(outs[slot], spec.type):
        err("return_type_mismatch", f"Return type mismatch between linked nodes: the input takes {spec.type_name}, "
            f"node {src} ({src_type}) output {slot} gives {outs[slot]}",
            f"{spec.name}, received_type({outs[slot]}) mismatch input_type({spec.type_name})")
        return None
    return outs[slot]


def coerce_value(spec: InputSpec, value: Any, check_limits: bool = True) -> tuple[bool, Any, tuple]:
    """A constant checked against its declaration: (ok, converted value, (error type, message))."""
    if isinstance(value, dict) and "__value__" in value:
        return True, value["__value__"], ()
    kind = spec.type_name
    if "," in kind:  # a union such as "INT,FLOAT": ComfyUI checks nothing, nor do we
        return True, value, ()
    bad = ("invalid_input_type", f"expects {kind}, got {type(value).__name__} {value!r}")
    if kind == "INT":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            return False, value, bad
    elif kind == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            return False, value, bad
        value = float(value)
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        return False, value, bad
    elif kind == "STRING" and not isinstance(value, str):
        return False, value, bad
    elif spec.is_display:  # a player's widget: whatever the browser sends ("" or nothing) is fine
        return True, value, ()
    elif kind not in WIDGET_TYPES and spec.type != "*":
        return False, value, ("invalid_input_type", f"takes a link from a node's {kind} output, not the value {value!r}")
    if not check_limits:
        return True, value, ()
    if kind in ("INT", "FLOAT"):
        low, high = spec.options.get("min"), spec.options.get("max")
        if low is not None and value < low:
            return False, value, ("value_smaller_than_min", f"Value {value} smaller than min of {low}")
        if high is not None and value > high:
            return False, value, ("value_bigger_than_max", f"Value {value} bigger than max of {high}")
    options = spec.combo
    if options is not None and value not in options:
        shown = options if len(options) <= 20 else f"(list of length {len(options)})"
        return False, value, ("value_not_in_list", f"Value not in list: '{value}' not in {shown}")
    return True, value, ()


def _hook_signature(cls: type) -> tuple[list[str], bool]:
    hook = getattr(cls, "VALIDATE_INPUTS", None)
    if hook is None:
        return [], False
    params = inspect.signature(hook).parameters.values()
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("self", "cls")]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _run_hook(cls, specs, inputs, received, names, any_kwargs, err) -> None:
    """VALIDATE_INPUTS gets, as in ComfyUI, the inputs it names that the node has: constants, and
    linked inputs as None (their values do not exist yet); absent ones keep the hook's defaults.
    `input_types` if it asks for it. True means valid."""
    wanted = [n for n in specs if specs[n].category != "hidden" and n in inputs and (any_kwargs or n in names)]
    kwargs = {n: (None if isinstance(inputs[n], list) else inputs[n]) for n in wanted}
    kwargs = {n: v.get("__value__") if isinstance(v, dict) and "__value__" in v else v for n, v in kwargs.items()}
    if "input_types" in names:
        kwargs["input_types"] = received
    try:
        result = getattr(cls(), "VALIDATE_INPUTS")(**kwargs)
    except Exception as e:  # a hook that raises is a validation failure of that node, not a crash
        err("exception_during_validation", f"VALIDATE_INPUTS raised {type(e).__name__}: {e}", None)
        return
    if result is not True:
        about = [n for n in kwargs if n != "input_types"]
        detail = "" if result is False or result is None else str(result)
        err("custom_validation_failed", f"Custom validation failed for node{': ' + detail if detail else ''}",
            about[0] if len(about) == 1 else None, ", ".join(about))
