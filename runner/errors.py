"""Errors of the runner, shaped like ComfyUI's so the same tools read both."""
from __future__ import annotations

from typing import Any


def problem(type: str, message: str, *, node_id: str | None = None, class_type: str | None = None,
            input_name: str | None = None, details: str = "") -> dict:
    """One validation error: ComfyUI's {type, message, details} plus where it is."""
    return {"node_id": node_id, "class_type": class_type, "input_name": input_name,
            "type": type, "message": message, "details": details}


class WorkflowError(ValueError):
    """A workflow that cannot run as written; raised before any node function runs.

    `errors` is a list of `problem(...)` dicts; `str()` is a readable multi-line report.
    """

    def __init__(self, errors: list[dict], source: str | None = None):
        self.errors = list(errors)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.source}: " if self.source else ""
        if len(self.errors) == 1 and self.errors[0]["node_id"] is None:
            return where + _line(self.errors[0])
        unknown = [e for e in self.errors if e["type"] == "unknown_node_type"]
        if 1 < len(unknown) == len(self.errors) and len({e["details"] for e in unknown}) == 1:  # one hint for all
            names = ", ".join(f"'{e['class_type']}' (node {e['node_id']})" for e in unknown)
            return f"{where}unknown node types {names}: {unknown[0]['details']}"
        count = f"{len(self.errors)} error{'s' if len(self.errors) != 1 else ''}"
        return f"{where}{count} in the workflow, nothing was run:\n" + "\n".join("  " + _line(e) for e in self.errors)

    def node_errors(self) -> dict[str, dict]:
        """ComfyUI's `node_errors` shape: {node_id: {errors: [...], class_type, dependent_outputs}}."""
        out: dict[str, dict] = {}
        for e in self.errors:
            if e["node_id"] is None:
                continue
            entry = out.setdefault(e["node_id"], {"errors": [], "class_type": e["class_type"], "dependent_outputs": []})
            entry["errors"].append({"type": e["type"], "message": e["message"], "details": e["details"],
                                    "extra_info": {"input_name": e["input_name"]} if e["input_name"] else {}})
        return out

    @classmethod
    def from_comfy_response(cls, body: dict[str, Any], source: str | None = None) -> "WorkflowError":
        """The 400 answer of ComfyUI's POST /prompt, in the runner's shape."""
        errors = []
        for node_id, entry in (body.get("node_errors") or {}).items():
            for e in entry.get("errors", []):
                errors.append(problem(e.get("type", "error"), e.get("message", ""), node_id=str(node_id),
                                      class_type=entry.get("class_type"),
                                      input_name=(e.get("extra_info") or {}).get("input_name"),
                                      details=str(e.get("details", ""))))
        top = body.get("error")
        if not errors and top:
            top = top if isinstance(top, dict) else {"type": "error", "message": str(top)}
            errors.append(problem(top.get("type", "error"), top.get("message", ""), details=str(top.get("details", ""))))
        return cls(errors or [problem("error", "the server refused the workflow", details=str(body))], source)


LOCAL_HINT = "this runner serves the SyncFoley nodes only; run this workflow in ComfyUI, or use --server"


def unknown_node(node_id: str, class_type: str, hint: str = LOCAL_HINT) -> dict:
    return problem("unknown_node_type", f"unknown node type '{class_type}' (node {node_id}): {hint}",
                   node_id=node_id, class_type=class_type, details=hint)


def _line(e: dict) -> str:
    if e["node_id"] is not None and f"(node {e['node_id']})" in e["message"]:
        return e["message"]
    parts = []
    if e["node_id"] is not None:
        parts.append(f"node {e['node_id']}" + (f" ({e['class_type']})" if e["class_type"] else ""))
    if e["input_name"]:
        parts.append(f"input '{e['input_name']}'")
    head = " ".join(parts)
    text = e["message"] + (f" [{e['details']}]" if e["details"] and e["details"] not in e["message"] else "")
    return f"{head}: {text}" if head else text


class NodeExecutionError(RuntimeError):
    """A node function raised while the workflow ran."""

    def __init__(self, node_id: str, class_type: str, exception: BaseException | str, exception_type: str | None = None):
        self.node_id, self.class_type = node_id, class_type
        self.exception_type = exception_type or type(exception).__name__
        self.exception_message = str(exception)
        super().__init__(f"node {node_id} ({class_type}) failed: {self.exception_type}: {self.exception_message}")


class RunInterrupted(RuntimeError):
    """The user stopped the run (Ctrl-C); nodes already done stay cached."""

    def __init__(self, node_id: str | None = None, class_type: str | None = None):
        self.node_id, self.class_type = node_id, class_type
        where = f" in node {node_id} ({class_type})" if node_id else ""
        super().__init__(f"interrupted{where}")
