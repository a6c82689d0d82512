"""The shareable workflows in workflows/: UI files that load by drag and drop, API twins that are exactly
their conversion, and every one run through the headless runner on tiny models.

Each workflow is `<name>.json` (UI format) plus `<name>.api.json` (API format). After editing a UI file
in ComfyUI, or adding an input to a node, bring every workflow up to date and regenerate the twins with
`python tools/workflows.py`.
"""
from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
from media_fixtures import make_video
from tiny_models import write_user_layout

from syncfoley import NODE_CLASS_MAPPINGS
from syncfoley.nodes import host as host_module
from syncfoley.nodes.host import configure
from syncfoley.runner import Executor, Override, Workflow, apply_overrides, load_workflow, ui_to_api
from syncfoley.runner.spec import input_specs

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
NAMES = sorted(p.name[: -len(".api.json")] for p in WORKFLOWS.glob("*.api.json"))
FRONTEND_ONLY = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")


def test_every_workflow_has_both_twins_and_the_issue_set_is_there():
    assert set(NAMES) >= {"video_to_audio", "text_to_audio", "synccfg_vs_cfg", "long_video", "finetuned_model",
                          "mmaudio_video_to_audio", "mmaudio_long_video"}
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json") if not p.name.endswith(".api.json")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_api_file_is_exactly_the_ui_file_converted(name):
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    api = json.loads((WORKFLOWS / f"{name}.api.json").read_text())
    assert ui_to_api(ui, NODE_CLASS_MAPPINGS) == api, f"regenerate {name}.api.json from {name}.json (module docstring)"


@pytest.mark.parametrize("name", NAMES)
def test_ui_file_is_a_well_formed_comfyui_graph(name):
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    assert ui["version"] == 0.4 and isinstance(ui["groups"], list) and "extra" in ui
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert ui["last_node_id"] == max(nodes) and ui["last_link_id"] == max(link[0] for link in ui["links"])
    for link_id, origin, slot, target, target_slot, kind in ui["links"]:
        assert nodes[origin]["outputs"][slot]["type"] == kind and link_id in nodes[origin]["outputs"][slot]["links"]
        assert nodes[target]["inputs"][target_slot]["link"] == link_id and nodes[target]["inputs"][target_slot]["type"] == kind
    for entry in nodes.values():
        assert entry["mode"] == 0 and len(entry["pos"]) == 2 and len(entry["size"]) == 2
        if entry["type"] in FRONTEND_ONLY:
            continue
        cls = NODE_CLASS_MAPPINGS[entry["type"]]
        specs = input_specs(cls)
        widgets = [s for s in specs.values() if s.is_widget]
        sockets = [s.name for s in specs.values() if not s.is_widget and not s.is_display and s.category != "hidden"]
        assert [i["name"] for i in entry["inputs"]] == sockets
        uploads = any(s.has_upload_button for s in specs.values())  # the upload button's value comes last
        assert len(entry["widgets_values"]) == len(widgets) + sum(s.has_control_value for s in widgets) + uploads
        assert [o["type"] for o in entry["outputs"]] == list(cls.RETURN_TYPES)
        linked = {i["name"] for i in entry["inputs"] if i["link"] is not None}
        assert {n for n, s in specs.items() if s.category == "required" and not s.is_widget} <= linked


@pytest.fixture(scope="module")
def workspace(tiny_models, tmp_path_factory):
    """The tiny models under the names the workflows use, the example videos, and a fresh output folder."""
    root = write_user_layout(tmp_path_factory.mktemp("workspace"), tiny_models)
    saved = {k: getattr(host_module._HOST, k) for k in ("input_dir", "output_dir", "models_dir", "device")}
    configure(models_dir=root / "models", input_dir=root / "input", output_dir=root / "output", device="cpu")
    yield root
    configure(**saved)


def _fast(prompt: dict) -> list[Override]:
    """Few steps, and windows small enough that a 4 s clip is sampled in several."""
    overrides = []
    for node_id, entry in prompt.items():
        if entry["class_type"] == "SyncFoleySampler":
            overrides.append(Override("steps", 2, node_id))
            if entry["inputs"]["window_seconds"]:
                overrides += [Override("window_seconds", 1.28, node_id), Override("overlap_seconds", 0.32, node_id)]
    return overrides


def _check_output(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with av.open(str(path)) as container:
        if path.suffix == ".png":
            assert next(container.decode(video=0)).width > 0
            return
        audio = container.streams.audio[0]
        seconds = sum(frame.samples for frame in container.decode(audio)) / audio.rate
    assert seconds > 0.5
    if path.suffix == ".mp4":
        with av.open(str(path)) as container:
            assert sum(1 for _ in container.decode(video=0)) > 10


@pytest.mark.parametrize("file", [f"{name}{suffix}" for name in NAMES for suffix in (".api.json", ".json")])
def test_workflow_runs_headless_and_writes_playable_files(file, workspace):
    name = file.split(".")[0]
    workflow = load_workflow(WORKFLOWS / file, NODE_CLASS_MAPPINGS)  # UI files are converted on load
    prompt = apply_overrides(workflow.prompt, _fast(workflow.prompt), NODE_CLASS_MAPPINGS)
    result = Executor(NODE_CLASS_MAPPINGS).run(Workflow(prompt, source=workflow.source))
    outputs = {entry["class_type"] for node_id, entry in prompt.items() if node_id in result.ui}
    assert outputs == {c for c in (e["class_type"] for e in prompt.values()) if NODE_CLASS_MAPPINGS[c].__dict__.get("OUTPUT_NODE")}
    assert result.files
    for path in result.files:
        _check_output(path)
    media = [p for p in result.files if p.suffix != ".png"]
    assert media, "no audio or video written"
    if name.endswith("long_video"):
        with av.open(str(media[0])) as container:
            audio = container.streams.audio[0]
            assert sum(f.samples for f in container.decode(audio)) / audio.rate == pytest.approx(4.0, abs=0.05)


def test_a_workflow_saved_before_an_optional_widget_existed_still_runs(workspace, tmp_path):
    """Sampler and Mux nodes saved without the later `gpu_blocks`, `denoise` and `offset_ms` widgets get
    their defaults, as in ComfyUI."""
    ui = json.loads((WORKFLOWS / "demo.json").read_text())
    for entry in ui["nodes"]:
        if entry["type"] == "SyncFoleySampler":
            assert entry["widgets_values"][-2:] == [-1, 1.0]
            del entry["widgets_values"][-2:]
        if entry["type"] == "SyncFoleyMuxVideo":
            assert entry["widgets_values"].pop() == 0.0
    old = tmp_path / "old_demo.json"
    old.write_text(json.dumps(ui))
    workflow = load_workflow(old, NODE_CLASS_MAPPINGS)
    sampler = next(e for e in workflow.prompt.values() if e["class_type"] == "SyncFoleySampler")
    assert "gpu_blocks" not in sampler["inputs"] and "denoise" not in sampler["inputs"]
    assert sampler["inputs"]["low_memory"] is False
    prompt = apply_overrides(workflow.prompt, _fast(workflow.prompt), NODE_CLASS_MAPPINGS)
    result = Executor(NODE_CLASS_MAPPINGS).run(Workflow(prompt, source=workflow.source))
    assert [p for p in result.files if p.suffix != ".png"]


def _run_cli(args: list[str]) -> int:
    from syncfoley.cli import main

    try:
        return main(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def test_a_batch_runs_a_real_workflow_skips_the_broken_video_and_resumes(workspace, tmp_path):
    videos = tmp_path / "batch"
    videos.mkdir()
    for index in range(3):
        make_video(videos / f"clip{index}.mp4", fps=25, count=25, size=(32, 32))
    (videos / "broken.mp4").write_bytes(b"this is not a video")
    summary = tmp_path / "summary.json"
    args = ["run", str(WORKFLOWS / "video_to_audio.json"), "--batch", str(videos), "--set", "10.steps=1",
            "--models", str(workspace / "models"), "--input", str(workspace / "input"),
            "--output", str(tmp_path / "out"), "--device", "cpu", "--no-progress", "--json", str(summary)]
    assert _run_cli(args) == 1  # one item failed; the others are done
    first = json.loads(summary.read_text())
    assert len(first["done"]) == 3 and all("clip" in item for item in first["done"])
    assert len(first["failed"]) == 1 and "broken" in next(iter(first["failed"]))
    written = sorted((tmp_path / "out").rglob("*.mp4"))
    assert len(written) == 3
    for path in written:
        _check_output(path)
    # A re-run does only what is missing: the broken video again, nothing else.
    assert _run_cli(args) == 2  # but not over the summary it wrote before
    assert _run_cli([*args, "--overwrite"]) == 1
    second = json.loads(summary.read_text())
    assert second["done"] == [] and len(second["skipped"]) == 3 and len(second["failed"]) == 1
    assert sorted((tmp_path / "out").rglob("*.mp4")) == written
