"""Keep the shipped workflows in step with the nodes: `python tools/workflows.py`.

For every UI workflow in workflows/: each node gets the sockets its class declares (new optional
inputs unlinked, in declaration order) and default values for widgets added after it was saved
(appended, as ComfyUI fills them when it loads an older graph); links are re-pointed at the moved
sockets; then every `NAME.api.json` is written as the conversion of `NAME.json`. Run it after adding
an input to a node; tests/test_nodes_workflows.py checks the result.
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sync(ui: dict, registry) -> dict:
    from syncfoley.runner.spec import input_specs

    for node in ui["nodes"]:
        cls = registry.get(node["type"])
        if cls is None:  # notes, reroutes
            continue
        specs = input_specs(cls)
        have = {entry["name"]: entry for entry in node.get("inputs", [])}
        sockets = [s for s in specs.values() if not s.is_widget and not s.is_display and s.category != "hidden"]
        node["inputs"] = [have.get(s.name, {"name": s.name, "type": s.type_name, "link": None}) for s in sockets]
        widgets = [s for s in specs.values() if s.is_widget]
        wanted = len(widgets) + sum(s.has_control_value for s in widgets) + any(s.has_upload_button for s in specs.values())
        missing = wanted - len(node["widgets_values"])
        if missing > 0:
            node["widgets_values"] += [s.options.get("default") for s in widgets[len(widgets) - missing:]]
    nodes = {node["id"]: node for node in ui["nodes"]}
    for link in ui["links"]:
        target = nodes[link[3]]
        link[4] = next(k for k, entry in enumerate(target["inputs"]) if entry["link"] == link[0])
    return ui


def main() -> None:
    from syncfoley import NODE_CLASS_MAPPINGS as registry
    from syncfoley.runner import ui_to_api

    for path in sorted((ROOT / "workflows").glob("*.json")):
        if path.name.endswith(".api.json"):
            continue
        ui = sync(json.loads(path.read_text()), registry)
        path.write_text(json.dumps(ui, indent=1) + "\n")
        twin = path.with_name(path.stem + ".api.json")
        twin.write_text(json.dumps(ui_to_api(ui, registry), indent=1) + "\n")
        print(f"{path.name} and {twin.name}")


if __name__ == "__main__":
    main()
