"""Execution order, the output cache, node failures, interruption, overrides and `syncfoley run`."""
from __future__ import annotations

import io
import json
import sys
import math
import signal
import threading

import pytest
from runner_fixtures import CALLS, REGISTRY, ToyNumber, api_workflow, toy_env, ui_workflow, write_video  # noqa: F401

from syncfoley.cli import main
from syncfoley.nodes.host import host
from syncfoley.runner import (Executor, Listener, NodeExecutionError, Override, RunInterrupted, WorkflowError,
                              apply_overrides, parse_set)
from syncfoley.runner.progress import TqdmProgress, stop_on_ctrl_c


@pytest.fixture
def clip(toy_env):
    return str(write_video(toy_env / "clip.mp4"))


class Recorder(Listener):
    def __init__(self):
        self.started = []

    def node_started(self, node_id, class_type):
        self.started.append(node_id)


def test_runs_in_dependency_order_and_reports_files(clip, toy_env):
    recorder = Recorder()
    result = Executor(REGISTRY, recorder).run(api_workflow(clip))
    order = recorder.started
    assert set(order) == {"1", "2", "3", "4", "5"}
    assert order.index("1") < order.index("4") and order.index("2") < order.index("4") < order.index("5")
    assert result.files == [toy_env / "output" / "toy_00001.json"]
    saved = json.loads(result.files[0].read_text())
    assert saved["seed"] == 7 and saved["text"] == "RAIN ON A TIN ROOF" and saved["node"] == "5"
    assert len(saved["values"]) == 5 and saved["values"][0] < saved["values"][-1]  # brightening frames


def test_second_run_reexecutes_only_what_changed(clip):
    executor = Executor(REGISTRY)
    prompt = api_workflow(clip)
    assert executor.run(prompt).executed == ["1", "2", "3", "4", "5"]
    again = executor.run(prompt)
    assert again.executed == [] and sorted(again.cached) == ["1", "2", "3", "4", "5"]
    assert again.files  # the cached output node still reports its files
    prompt["4"]["inputs"]["seed"] = 8
    assert executor.run(prompt).executed == ["4", "5"]
    prompt["3"]["inputs"]["prompt"] = "footsteps"
    assert executor.run(prompt).executed == ["3", "4", "5"]
    assert CALLS["loader"] == 1 and CALLS["video"] == 1


def test_is_changed_decides_reexecution(toy_env):
    prompt = {"1": {"class_type": "ToyNumber", "inputs": {"value": 2}},
              "2": {"class_type": "ToyShowInt", "inputs": {"number": ["1", 0]}}}
    executor = Executor(REGISTRY)
    executor.run(prompt)
    executor.run(prompt)
    assert CALLS["number"] == 1
    ToyNumber.changed = "other"
    try:
        executor.run(prompt)
        assert CALLS["number"] == 2 and CALLS["show"] == 2
        ToyNumber.changed = math.nan  # NaN: changed every time
        executor.run(prompt)
        executor.run(prompt)
        assert CALLS["number"] == 4
    finally:
        ToyNumber.changed = "same"


def test_node_failure_names_the_node_and_keeps_upstream_cached(clip):
    prompt = api_workflow(clip)
    prompt["6"] = {"class_type": "ToyFailing", "inputs": {"audio": ["4", 0]}}
    prompt["5"]["inputs"]["audio"] = ["6", 0]
    executor = Executor(REGISTRY)
    with pytest.raises(NodeExecutionError, match=r"node 6 \(ToyFailing\) failed: RuntimeError: the toy sampler ran out"):
        executor.run(prompt)
    prompt["5"]["inputs"]["audio"] = ["4", 0]
    assert executor.run(prompt).executed == ["5"]


def test_interrupt_stops_at_the_next_step(clip):
    class StopDuringSampling(Listener):
        def node_started(self, node_id, class_type):
            if class_type == "ToySampler":
                host().interrupt_event.set()

    executor = Executor(REGISTRY, StopDuringSampling())
    with pytest.raises(RunInterrupted, match=r"interrupted in node 4 \(ToySampler\)"):
        executor.run(api_workflow(clip))
    assert not host().interrupt_event.is_set()  # consumed
    executor.listener = Listener()
    assert executor.run(api_workflow(clip)).executed == ["4", "5"]


def test_overrides_by_node_by_name_and_their_errors():
    prompt = api_workflow("clip.mp4")
    changed = apply_overrides(prompt, [parse_set("4.steps=12"), parse_set("prompt=a=b"), parse_set("scale=2"),
                                       Override("sampler", "heun"), parse_set("seed=3")], REGISTRY)
    inputs = changed["4"]["inputs"]
    assert (inputs["steps"], inputs["seed"], inputs["sampler"], changed["3"]["inputs"]["prompt"]) == (12, 3, "heun", "a=b")
    assert changed["1"]["inputs"]["scale"] == 2.0 and prompt["4"]["inputs"]["steps"] == 4  # the original is untouched
    with pytest.raises(WorkflowError, match=r"'many' is not a whole number \(INT\)"):
        apply_overrides(prompt, [parse_set("steps=many")], REGISTRY)
    with pytest.raises(WorkflowError, match=r"node 4 \(ToySampler\) has no input 'step'; its inputs: model, frames"):
        apply_overrides(prompt, [parse_set("4.step=1")], REGISTRY)
    with pytest.raises(WorkflowError, match=r"no node has an input named 'video_path'; inputs in this workflow: .*video"):
        apply_overrides(prompt, [parse_set("video_path=x")], REGISTRY)
    with pytest.raises(WorkflowError, match=r"this workflow has no node 99; its nodes: 1 \(ToyLoader\), 2 \(ToyVideo\)"):
        apply_overrides(prompt, [parse_set("99.steps=3")], REGISTRY)
    prompt["7"] = {"class_type": "ToyMux", "inputs": {"video": ["2", 0], "audio": ["4", 0]}}
    assert apply_overrides(prompt, [Override("video", "new.mp4")], REGISTRY)["2"]["inputs"]["video"] == "new.mp4"
    with pytest.raises(WorkflowError, match=r"node 7 \(ToyMux\) input 'video': takes a link from a node's TOY_FRAMES"):
        apply_overrides(prompt, [parse_set("7.video=x.mp4")], REGISTRY)
    prompt["6"] = {"class_type": "ToyText", "inputs": {"prompt": "other"}}
    with pytest.raises(WorkflowError, match=r"several nodes have an input named 'prompt': node 3 \(ToyText\), "
                                            r"node 6 \(ToyText\); say which with --set 3.prompt=..."):
        apply_overrides(prompt, [parse_set("prompt=x")], REGISTRY)
    with pytest.raises(WorkflowError, match="expected NODE_ID.input=value"):
        parse_set("steps")


def test_overridden_values_are_validated(clip):
    prompt = apply_overrides(api_workflow(clip), [parse_set("steps=500")], REGISTRY)
    with pytest.raises(WorkflowError, match="Value 500 bigger than max of 50"):
        Executor(REGISTRY).run(prompt)


def test_progress_bars_per_node_and_per_step(clip):
    stream = io.StringIO()
    progress = TqdmProgress(stream=stream)
    host().progress_factory = progress.step_bar
    Executor(REGISTRY, progress).run(api_workflow(clip))
    text = stream.getvalue()
    assert "ToySampler #4" in text and "4/4" in text and "5/5" in text  # steps of the sampler, nodes of the run


def test_cli_run_with_overrides_and_json(clip, toy_env, tmp_path, capsys):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(ui_workflow("placeholder.mp4")))
    summary = tmp_path / "summary.json"
    main(["run", str(path), "--video", clip, "--seed", "11", "--set", "4.steps=2", "--output", str(tmp_path / "out"),
          "--json", str(summary), "--no-progress"])
    printed = capsys.readouterr().out.split()
    report = json.loads(summary.read_text())
    assert report["status"] == "ok" and report["files"] == printed == [str(tmp_path / "out" / "toy_00001.json")]
    saved = json.loads((tmp_path / "out" / "toy_00001.json").read_text())
    assert saved["seed"] == 11 and len(saved["values"]) == 5


def test_cli_exit_codes_for_invalid_workflows(toy_env, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text('{"1": {"class_type": ')
    with pytest.raises(SystemExit) as exited:
        main(["run", str(path), "--no-progress"])
    assert exited.value.code == 2
    assert "bad.json: malformed JSON at line 1 column" in capsys.readouterr().err
    path.write_text(json.dumps(api_workflow("clip.mp4")))
    with pytest.raises(SystemExit):
        main(["run", str(path), "--set", "steps=0", "--check"])
    assert "Value 0 smaller than min of 1" in capsys.readouterr().err
    main(["run", str(path), "--check"])
    assert "valid" in capsys.readouterr().out
    assert sum(CALLS.values()) == 0


def test_ctrl_c_asks_nodes_to_stop_then_aborts(capsys):
    event = threading.Event()
    with stop_on_ctrl_c(event):
        signal.raise_signal(signal.SIGINT)
        assert event.is_set()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert "stopping at the next step" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_cli_shows_progress_on_a_terminal_and_not_in_a_pipe(clip, toy_env, tmp_path, capsys, monkeypatch):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(api_workflow(clip)))
    main(["run", str(path), "--output", str(tmp_path / "out")])
    piped = capsys.readouterr().err
    assert "ToySampler #4" not in piped and "5 nodes run, 0 cached" in piped
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    main(["run", str(path), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "ToySampler #4" in err and "5 nodes run, 0 cached" in err


def test_pack_nodes_reads_the_package_root_first(monkeypatch):
    import syncfoley
    from syncfoley.runner.spec import pack_nodes

    monkeypatch.setattr(syncfoley, "NODE_CLASS_MAPPINGS", {"ToyText": REGISTRY["ToyText"]}, raising=False)
    assert pack_nodes() == {"ToyText": REGISTRY["ToyText"]}
