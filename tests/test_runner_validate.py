"""Bad workflows are refused before any node function runs, with ComfyUI-shaped errors."""
from __future__ import annotations

import pytest
from runner_fixtures import CALLS, REGISTRY, api_workflow, toy_env  # noqa: F401 (fixture)

from syncfoley.runner import Executor, WorkflowError, check_format, validate


def refused(prompt, match: str) -> WorkflowError:
    with pytest.raises(WorkflowError, match=match) as caught:
        Executor(REGISTRY).run(prompt)
    assert sum(CALLS.values()) == 0, "a node ran although the workflow is invalid"
    return caught.value


def test_link_to_a_missing_node(toy_env):
    prompt = api_workflow("clip.mp4")
    prompt["4"]["inputs"]["frames"] = ["42", 0]
    error = refused(prompt, r"node 4 \(ToySampler\) input 'frames': linked to node 42, which is not in the workflow")
    assert error.errors[0]["type"] == "missing_linked_node"
    with pytest.raises(WorkflowError, match="node 42"):
        check_format(prompt)


def test_link_to_an_output_slot_that_does_not_exist(toy_env):
    prompt = api_workflow("clip.mp4")
    prompt["4"]["inputs"]["text"] = ["3", 2]
    refused(prompt, r"input 'text': linked to output slot 2 of node 3 \(ToyText\), which has 1 output \(TOY_TEXT\)")


def test_cycle_names_its_nodes(toy_env):
    prompt = api_workflow("clip.mp4")
    prompt["12"] = {"class_type": "ToyGain", "inputs": {"audio": ["13", 0], "gain": 1.0}}
    prompt["13"] = {"class_type": "ToyGain", "inputs": {"audio": ["12", 0], "gain": 1.0}}
    prompt["5"]["inputs"]["audio"] = ["12", 0]
    error = refused(prompt, r"dependency cycle: node 12 \(ToyGain\) -> node 13 \(ToyGain\) -> node 12 \(ToyGain\)")
    assert error.errors[0]["type"] == "dependency_cycle"
    with pytest.raises(WorkflowError, match="dependency cycle"):
        check_format(prompt)


def test_wrong_link_type(toy_env):
    prompt = api_workflow("clip.mp4")
    prompt["4"]["inputs"]["text"] = ["2", 0]
    error = refused(prompt, r"input 'text': Return type mismatch between linked nodes: the input takes TOY_TEXT, "
                            r"node 2 \(ToyVideo\) output 0 gives TOY_FRAMES")
    assert error.errors[0]["details"] == "text, received_type(TOY_FRAMES) mismatch input_type(TOY_TEXT)"


@pytest.mark.parametrize("name,value,match", [
    ("steps", "four", r"input 'steps': expects INT, got str 'four'"),
    ("steps", 2.5, r"input 'steps': expects INT, got float 2.5"),
    ("cfg", True, r"input 'cfg': expects FLOAT, got bool True"),
    ("model", "tiny-a", r"input 'model': takes a link from a node's TOY_MODEL output, not the value 'tiny-a'"),
])
def test_wrong_value_type(toy_env, name, value, match):
    prompt = api_workflow("clip.mp4")
    prompt["4"]["inputs"][name] = value
    assert refused(prompt, match).errors[0]["type"] == "invalid_input_type"


@pytest.mark.parametrize("name,value,kind,match", [
    ("steps", 0, "value_smaller_than_min", "Value 0 smaller than min of 1"),
    ("cfg", 10.5, "value_bigger_than_max", "Value 10.5 bigger than max of 10.0"),
    ("sampler", "dpm", "value_not_in_list", r"Value not in list: 'dpm' not in \['euler', 'heun'\]"),
])
def test_value_out_of_range_or_list(toy_env, name, value, kind, match):
    prompt = api_workflow("clip.mp4")
    prompt["4"]["inputs"][name] = value
    error = refused(prompt, f"input '{name}': {match}")
    assert error.errors[0]["type"] == kind
    assert error.node_errors()["4"]["errors"][0]["extra_info"] == {"input_name": name}


def test_every_problem_is_listed_at_once(toy_env):
    prompt = api_workflow("clip.mp4")
    del prompt["4"]["inputs"]["seed"]
    prompt["4"]["inputs"]["steps"] = 99
    prompt["1"]["inputs"]["checkpoint"] = "huge.safetensors"
    error = refused(prompt, r"3 errors in the workflow, nothing was run")
    assert {(e["node_id"], e["type"]) for e in error.errors} == {
        ("1", "value_not_in_list"), ("4", "required_input_missing"), ("4", "value_bigger_than_max")}
    assert set(error.node_errors()) == {"1", "4"}


def test_validate_inputs_hook_and_its_skipped_checks(toy_env):
    prompt = {"1": {"class_type": "ToyNumber", "inputs": {"value": 3}},
              "2": {"class_type": "ToyShowInt", "inputs": {"number": ["1", 0], "label": "!x"}}}
    refused(prompt, r"node 2 \(ToyShowInt\) input 'label': Custom validation failed for node: label '!x' may not")
    prompt["2"]["inputs"]["label"] = "count"
    assert Executor(REGISTRY).run(prompt).ui == {"2": {"text": ["count=3"]}}


def test_no_output_node_and_no_class_type(toy_env):
    refused({"1": {"class_type": "ToyText", "inputs": {"prompt": "x"}}}, r"Prompt has no outputs")
    refused({"1": {"inputs": {}}}, r"node 1 has no class_type")


def test_values_are_converted_to_their_declared_types():
    prompt = api_workflow("clip.mp4")
    prompt["4"]["inputs"].update(steps=3.0, cfg=2)
    plan = validate(prompt, REGISTRY)
    assert (plan.prompt["4"]["inputs"]["steps"], plan.prompt["4"]["inputs"]["cfg"]) == (3, 2.0)
    assert isinstance(plan.prompt["4"]["inputs"]["cfg"], float)
    assert plan.order.index("1") < plan.order.index("4") < plan.order.index("5") and plan.outputs == ["5"]


def test_only_outputs_and_their_ancestors_are_checked_and_run(toy_env):
    prompt = api_workflow("clip.mp4")
    prompt["9"] = {"class_type": "ToyGain", "inputs": {"audio": ["4", 0]}}  # dangling, gain missing: ignored
    prompt["4"]["inputs"]["old_input"] = ["99", 0]  # an input the class no longer declares: ignored
    plan = validate(prompt, REGISTRY)
    assert "9" not in plan.order and "old_input" not in plan.prompt["4"]["inputs"]
    Executor(REGISTRY).validate(prompt)
