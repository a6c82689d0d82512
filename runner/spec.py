"""What the runner reads from node classes: declared inputs, widget kinds, return types.

Node classes follow ComfyUI's legacy contract. A registry is a mapping like `NODE_CLASS_MAPPINGS`
(class_type -> class). Classes can also be synthesised from a ComfyUI server's `/object_info`, so a
UI-format workflow of nodes this pack does not have can still be converted for `--server`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# Widgets the browser draws from the input type alone (players): no value that runs need.
DISPLAY_WIDGET_TYPES = ("AUDIO_UI",)
SEED_NAMES = ("seed", "noise_seed")
CONTROL_VALUES = ("fixed", "randomize", "increment", "decrement")
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
# Node types that exist only in the browser: resolved during UI -> API conversion.
FRONTEND_ONLY = ("Reroute", "PrimitiveNode", "Note", "MarkdownNote")


def pack_nodes() -> dict[str, type]:
    """This pack's NODE_CLASS_MAPPINGS, imported lazily (the nodes pull in torch and the models).

    The package root defines it; until it does, `nodes.NODE_CLASS_MAPPINGS`, else nothing. A node
    module that fails to import raises here rather than looking like an empty pack.
    """
    root = importlib.import_module(__package__.rpartition(".")[0])
    mapping = getattr(root, "NODE_CLASS_MAPPINGS", None)
    if mapping is None:
        mapping = getattr(importlib.import_module(".nodes", root.__name__), "NODE_CLASS_MAPPINGS", {})
    return dict(mapping)


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: Any  # "INT", "MY_TYPE", "A,B", "*" or a list of options (COMBO)
    options: dict
    category: str  # "required" | "optional" | "hidden"

    @property
    def combo(self) -> list | None:
        """The options of a COMBO input (legacy list type, or ("COMBO", {"options": [...]}))."""
        if isinstance(self.type, (list, tuple)):
            return list(self.type)
        if self.type == "COMBO":
            return list(self.options.get("options", []))
        return None

    @property
    def type_name(self) -> str:
        return "COMBO" if self.combo is not None else str(self.type)

    @property
    def is_widget(self) -> bool:
        """Whether the browser draws it as a widget (and stores its value in widgets_values)."""
        return self.category != "hidden" and self.type_name in WIDGET_TYPES and not self.options.get("forceInput")

    @property
    def is_display(self) -> bool:
        """A widget the browser draws from the type alone (a player); neither a socket nor a stored value."""
        return self.type_name in DISPLAY_WIDGET_TYPES

    @property
    def has_control_value(self) -> bool:
        """Seed-like widgets carry a "control after generate" value right after their own."""
        flag = self.options.get("control_after_generate")
        if flag is not None:
            return bool(flag)
        return self.type_name == "INT" and self.name in SEED_NAMES

    @property
    def has_upload_button(self) -> bool:
        return self.category == "required" and any(self.options.get(k) for k in UPLOAD_OPTIONS)


def input_specs(cls: type) -> dict[str, InputSpec]:
    """Declared inputs in declaration order: required, optional, then hidden."""
    declared = cls.INPUT_TYPES()
    specs: dict[str, InputSpec] = {}
    for category in ("required", "optional", "hidden"):
        for name, entry in (declared.get(category) or {}).items():
            if category == "hidden":
                specs[name] = InputSpec(name, entry if isinstance(entry, str) else entry[0], {}, category)
                continue
            entry = entry if isinstance(entry, (list, tuple)) else (entry,)
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            specs[name] = InputSpec(name, entry[0], options, category)
    return specs


def return_types(cls: type) -> tuple:
    return tuple(getattr(cls, "RETURN_TYPES", ()))


def is_output_node(cls: type) -> bool:
    return getattr(cls, "OUTPUT_NODE", False) is True


def types_match(received: Any, expected: Any) -> bool:
    """ComfyUI's rule: "*" matches anything, comma-separated unions match when they overlap; a COMBO
    input accepts a COMBO output (or an output typed by its own option list)."""
    if isinstance(expected, (list, tuple)):
        return received in ("*", "COMBO") or isinstance(received, (list, tuple))
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if "*" in (received, expected) or received == expected:
        return True
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


def classes_from_object_info(object_info: Mapping[str, dict]) -> dict[str, type]:
    """Stand-in classes (declarations only, nothing to run) from a server's GET /object_info."""
    registry = {}
    for class_type, info in object_info.items():
        declared = {k: dict(v) for k, v in (info.get("input") or {}).items() if isinstance(v, dict)}
        registry[class_type] = type(class_type, (), {
            "INPUT_TYPES": classmethod(lambda cls, d=declared: d),
            "RETURN_TYPES": tuple(info.get("output") or ()),
            "OUTPUT_NODE": bool(info.get("output_node")),
            "FUNCTION": "remote_only",
        })
    return registry
