"""Workflow files: format detection, UI -> API conversion, malformed files, and the shipped workflows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from runner_fixtures import (CALLS, REGISTRY, HostSettings, api_workflow, toy_env, ui_workflow,  # noqa: F401
                             write_video)

from syncfoley.nodes.host import CHECKPOINT_SUFFIXES, MODEL_FOLDER, configure
from syncfoley.runner.batch import VIDEO_SUFFIXES

from syncfoley.runner import Executor, WorkflowError, detect_format, load_workflow, strip_meta, ui_to_api
from syncfoley.runner.spec import pack_nodes

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
FILES = sorted(WORKFLOWS.glob("*.json"))
TWINS = [(p, p.with_name(p.name[:-len(".api.json")] + ".json")) for p in FILES if p.name.endswith(".api.json")]


def test_formats_are_told_apart():
    assert detect_format(ui_workflow("v.mp4")) == "ui"
    assert detect_format(api_workflow("v.mp4")) == "api"
    assert detect_format({"prompt": api_workflow("v.mp4"), "client_id": "x"}) == "wrapped"
    with pytest.raises(WorkflowError, match="not a ComfyUI workflow"):
        detect_format({"hello": "world"})
    with pytest.raises(WorkflowError, match="not a ComfyUI workflow"):
        detect_format([1, 2])


def test_ui_format_converts_to_its_api_twin():
    """Reroute, primitive (seed), bypassed gain, muted save, note and the seed's control value."""
    converted = ui_to_api(ui_workflow("clip.mp4"), REGISTRY)
    assert strip_meta(converted) == strip_meta(api_workflow("clip.mp4"))
    assert converted["4"]["_meta"] == {"title": "Sampler"}
    assert list(converted["4"]["inputs"]) == ["seed", "steps", "cfg", "sampler", "model", "frames", "text"]


def test_widget_values_follow_declaration_order_with_control_values_and_links():
    ui = ui_workflow("clip.mp4")
    sampler = next(n for n in ui["nodes"] if n["id"] == 4)
    sampler["inputs"] = [i for i in sampler["inputs"] if i["name"] != "seed"]  # seed back to a plain widget
    sampler["widgets_values"] = [99, "increment", 12, 2.5, "heun"]
    converted = ui_to_api(ui, REGISTRY)["4"]["inputs"]
    assert (converted["seed"], converted["steps"], converted["cfg"], converted["sampler"]) == (99, 12, 2.5, "heun")
    sampler["widgets_values"] = {"seed": 5, "steps": 3, "cfg": 1.0, "sampler": "euler"}  # newer dict form
    assert ui_to_api(ui, REGISTRY)["4"]["inputs"]["steps"] == 3


def test_upload_button_value_is_skipped_after_the_required_widgets():
    ui = {"nodes": [{"id": 1, "type": "ToyUpload", "mode": 0, "inputs": [], "outputs": [],
                     "widgets_values": ["b.mp4", 16, "video", 0.5]}], "links": []}
    assert ui_to_api(ui, REGISTRY)["1"]["inputs"] == {"video": "b.mp4", "frames": 16, "gain": 0.5}


def test_required_input_fed_by_a_muted_node_is_an_error():
    ui = ui_workflow("clip.mp4")
    next(n for n in ui["nodes"] if n["id"] == 3)["mode"] = 2  # mute the text encoder
    with pytest.raises(WorkflowError, match=r"node 4 \(ToySampler\) input 'text': Required input is missing: "
                                            r"its source node 3 \(ToyText\) is muted"):
        ui_to_api(ui, REGISTRY)


def test_bypassed_node_without_a_matching_input_passes_nothing():
    ui = ui_workflow("clip.mp4")
    gain = next(n for n in ui["nodes"] if n["id"] == 12)
    gain["inputs"][0]["link"] = None
    with pytest.raises(WorkflowError, match=r"bypassed node 12 \(ToyGain\) passes nothing on"):
        ui_to_api(ui, REGISTRY)


def test_unknown_node_types_are_named_with_what_the_runner_serves(toy_env):
    prompt = api_workflow("clip.mp4")
    prompt["9"] = {"class_type": "KSampler", "inputs": {}}
    with pytest.raises(WorkflowError) as caught:
        Executor().run(prompt)
    assert "unknown node type 'KSampler' (node 9): this runner serves the SyncFoley nodes only; " \
           "run this workflow in ComfyUI, or use --server" in str(caught.value)
    ui = ui_workflow("clip.mp4")
    ui["nodes"].append({"id": 20, "type": "CheckpointLoaderSimple", "mode": 0, "inputs": [], "outputs": []})
    with pytest.raises(WorkflowError, match=r"unknown node type 'CheckpointLoaderSimple' \(node 20\)"):
        ui_to_api(ui, REGISTRY)
    ui["nodes"].append({"id": 21, "type": "VAEDecode", "mode": 0, "inputs": [], "outputs": []})
    with pytest.raises(WorkflowError, match=r"unknown node types 'CheckpointLoaderSimple' \(node 20\), 'VAEDecode' "
                                            r"\(node 21\): this runner serves the SyncFoley nodes only"):
        ui_to_api(ui, REGISTRY)
    assert sum(CALLS.values()) == 0


def test_malformed_json_names_file_line_and_column(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{\n  "1": {"class_type": "ToyText",\n         "inputs": {"prompt": "x",}}\n}')
    with pytest.raises(WorkflowError, match=r"broken\.json: malformed JSON at line 3 column \d+"):
        load_workflow(bad, REGISTRY)
    with pytest.raises(WorkflowError, match=r"missing\.json: cannot read the workflow"):
        load_workflow(tmp_path / "missing.json", REGISTRY)


def test_malformed_ui_graph_is_a_workflow_error():
    ui = ui_workflow("clip.mp4")
    ui["links"][0] = [1, 1, "first", 10, 0, "TOY_MODEL"]
    with pytest.raises(WorkflowError, match=r"malformed UI-format workflow \(ValueError"):
        ui_to_api(ui, REGISTRY)


def test_subgraphs_are_refused_with_a_way_out():
    ui = ui_workflow("clip.mp4")
    ui["definitions"] = {"subgraphs": [{"id": "abc"}]}
    with pytest.raises(WorkflowError, match="subgraphs.*API format"):
        ui_to_api(ui, REGISTRY)


def test_load_workflow_reads_both_formats_and_the_post_body(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps(ui_workflow("clip.mp4")))
    (tmp_path / "g.api.json").write_text(json.dumps({"prompt": api_workflow("clip.mp4")}))
    ui, api = load_workflow(tmp_path / "g.json", REGISTRY), load_workflow(tmp_path / "g.api.json", REGISTRY)
    assert (ui.format, api.format) == ("ui", "api")
    assert strip_meta(ui.prompt) == strip_meta(api.prompt)
    assert ui.ui["nodes"] and api.ui is None


# The workflows the pack ships: every file must load and validate with the pack's own nodes, and each
# `NAME.api.json` must be exactly what `NAME.json` (UI format) converts to. Running them on tiny
# checkpoints belongs with the nodes' test fixtures.
@pytest.fixture
def sandbox_host(tmp_path):
    saved = HostSettings()
    configure(input_dir=tmp_path / "input", output_dir=tmp_path / "output", models_dir=tmp_path / "models")
    (tmp_path / "input").mkdir()
    yield tmp_path
    saved.restore()


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_shipped_workflow_validates(path, sandbox_host):
    """With placeholders for the files it names (videos in the input folder, checkpoints and encoder
    folders in the models folder), the workflow passes every check of the pack's nodes."""
    registry = pack_nodes()
    workflow = load_workflow(path, registry)
    for node in workflow.prompt.values():
        for value in node["inputs"].values():
            if isinstance(value, str) and value.lower().endswith(VIDEO_SUFFIXES) and "/" not in value:
                write_video(sandbox_host / "input" / value)
    try:
        Executor(registry).validate(workflow)
        return
    except WorkflowError as e:
        # an empty models folder still lists the built-in demo model (and the vocoder's "none")
        empty = ("in []", "in ['syncfoley-demo']", "in ['none']")
        missing = [error for error in e.errors if error["type"] == "value_not_in_list" and error["message"].endswith(empty)]
        assert len(missing) == len(e.errors), str(e)
    models = sandbox_host / "models" / MODEL_FOLDER
    for error in missing:  # nothing installed here: put a placeholder where the workflow expects each file
        name = workflow.prompt[error["node_id"]]["inputs"][error["input_name"]]
        target = models / name
        if name.lower().endswith(CHECKPOINT_SUFFIXES):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"")
        else:
            target.mkdir(parents=True, exist_ok=True)
            (target / "config.json").write_text("{}")
    Executor(registry).validate(workflow)


@pytest.mark.parametrize("api_path,ui_path", TWINS, ids=[p.name for p, _ in TWINS])
def test_shipped_ui_workflow_converts_to_its_api_twin(api_path, ui_path):
    assert ui_path.exists(), f"{api_path.name} has no UI-format twin {ui_path.name}"
    registry = pack_nodes()
    assert detect_format(json.loads(ui_path.read_text())) == "ui"
    assert strip_meta(load_workflow(ui_path, registry).prompt) == strip_meta(load_workflow(api_path, registry).prompt)


def test_every_shipped_workflow_is_a_workflow():
    """Holds with no files yet; fails as soon as a non-workflow JSON lands in workflows/."""
    for path in FILES:
        assert detect_format(json.loads(path.read_text())) in ("ui", "api"), path.name
