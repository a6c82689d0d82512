"""`--server`: upload, queue, wait and download against a fake ComfyUI on 127.0.0.1."""
from __future__ import annotations

import json

import pytest
from runner_fixtures import FakeComfyUI, api_workflow, toy_env, ui_workflow, write_video  # noqa: F401

from syncfoley.cli import main
from syncfoley.runner import NodeExecutionError, RemoteError, RemoteRunner, Workflow, WorkflowError, batch_items, run_batch


@pytest.fixture
def server(toy_env):
    with FakeComfyUI(toy_env / "server") as fake:
        yield fake


def test_remote_run_uploads_inputs_and_downloads_outputs(server, toy_env):
    (toy_env / "local").mkdir()
    clip = write_video(toy_env / "local" / "clip.mp4")
    runner = RemoteRunner(server.url, toy_env / "downloads", timeout=20)
    result = runner.run(Workflow(api_workflow(str(clip))))
    assert server.uploads == ["clip.mp4"] and (server.input_dir / "clip.mp4").read_bytes() == clip.read_bytes()
    assert result.files == [toy_env / "downloads" / "toy_00001.json"]
    assert result.files[0].read_bytes() == (server.output_dir / "toy_00001.json").read_bytes()
    assert json.loads(result.files[0].read_text())["seed"] == 7
    again = runner.run(Workflow(api_workflow(str(clip))))
    assert server.uploads == ["clip.mp4"] and sorted(again.cached) == ["1", "2", "3", "4", "5"]  # uploaded once


def test_server_validation_errors_come_back_in_the_same_shape(server):
    prompt = api_workflow("clip.mp4")
    prompt["4"]["inputs"]["steps"] = 0
    with pytest.raises(WorkflowError, match=r"node 4 \(ToySampler\) input 'steps': Value 0 smaller than min of 1") as caught:
        RemoteRunner(server.url, "unused", timeout=20).run(Workflow(prompt))
    assert caught.value.errors[0]["type"] == "value_smaller_than_min"


def test_server_execution_errors_name_the_node(server):
    with pytest.raises(NodeExecutionError, match=r"node 2 \(ToyVideo\) failed: .*"):
        RemoteRunner(server.url, "unused", timeout=20).run(Workflow(api_workflow("missing.mp4")))


def test_format_is_checked_locally_before_sending(server):
    prompt = api_workflow("clip.mp4")
    prompt["5"]["inputs"]["audio"] = ["77", 0]
    with pytest.raises(WorkflowError, match="linked to node 77"):
        RemoteRunner(server.url, "unused", timeout=20).run(Workflow(prompt))
    assert ("POST", "/prompt") not in server.requests


def test_unreachable_server_and_timeout(server):
    with pytest.raises(RemoteError, match="cannot reach ComfyUI at http://127.0.0.1:9"):
        RemoteRunner("127.0.0.1:9", "unused", timeout=1).run(Workflow(api_workflow("x.mp4")))
    server.delay = 2.0
    with pytest.raises(RemoteError, match="no result after 0.3 s"):
        RemoteRunner(server.url, "unused", timeout=0.3).run(Workflow(api_workflow("clip.mp4")))


def test_cli_server_converts_ui_files_with_the_servers_node_list(server, toy_env, tmp_path, monkeypatch, capsys):
    import syncfoley.runner.spec as spec

    monkeypatch.setattr(spec, "pack_nodes", lambda: {})  # this pack knows none of the nodes; the server does
    clip = write_video(tmp_path / "clip.mp4")
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(ui_workflow("placeholder.mp4")))
    main(["run", str(path), "--server", server.url, "--video", str(clip), "--seed", "5", "--output",
          str(tmp_path / "got"), "--no-progress"])
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "got" / "toy_00001.json")]
    assert json.loads((tmp_path / "got" / "toy_00001.json").read_text())["seed"] == 5
    assert ("GET", "/object_info") in server.requests


def test_remote_batch(server, toy_env):
    folder = toy_env / "clips"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_video(folder / name)
    (folder / "c.mp4").write_bytes(b"broken")
    summary = run_batch(Workflow(api_workflow("x.mp4")), batch_items(folder),
                        RemoteRunner(server.url, toy_env / "got", timeout=20), toy_env / "got", log=lambda line: None)
    assert len(summary.done) == 2 and len(summary.failed) == 1
    assert sorted(p.name for p in (toy_env / "got").glob("*.json")) == ["toy_a_00001.json", "toy_b_00001.json"]


@pytest.mark.parametrize("item", [{"filename": "../x.json"}, {"filename": "x.json", "subfolder": "../.."},
                                  {"filename": "/etc/x.json"}, {"filename": "x.json", "subfolder": "/tmp"},
                                  {"filename": "a/../../x.json"}, {"filename": ""}])
def test_a_server_naming_files_outside_the_output_folder_is_refused(server, toy_env, item):
    from syncfoley.runner.remote import ComfyClient

    (server.output_dir / "x.json").write_text("{}")
    target = toy_env / "downloads"
    with pytest.raises(RemoteError, match="outside the output folder"):
        ComfyClient(server.url).download({**item, "type": "output"}, target)
    assert not any(toy_env.rglob("x.json*")) or sorted(p for p in toy_env.rglob("x.json")) == [server.output_dir / "x.json"]


def test_downloads_never_replace_a_local_file_and_uploads_stream(server, toy_env, monkeypatch):
    from syncfoley.runner.remote import CHUNK_BYTES, ComfyClient

    (toy_env / "local").mkdir()
    clip = write_video(toy_env / "local" / "clip.mp4")
    downloads = toy_env / "downloads"
    downloads.mkdir()
    (downloads / "toy_00001.json").write_text("mine")
    bodies, request = [], ComfyClient.request

    def recording(self, method, path, body=None, headers=None):
        if path == "/upload/image":
            body = list(body)  # the chunks the request would send, none above CHUNK_BYTES of the file
            bodies.append(body)
        return request(self, method, path, body, headers)

    monkeypatch.setattr(ComfyClient, "request", recording)
    monkeypatch.setattr("syncfoley.runner.remote.CHUNK_BYTES", 100)
    result = RemoteRunner(server.url, downloads, timeout=20).run(Workflow(api_workflow(str(clip))))
    (chunks,) = bodies
    assert len(chunks) > 3 and max(len(c) for c in chunks[1:-1]) <= 100 < clip.stat().st_size
    assert CHUNK_BYTES == 1 << 20
    assert (downloads / "toy_00001.json").read_text() == "mine"
    assert result.files == [downloads / "toy_00001_00001.json"]
    assert json.loads(result.files[0].read_text())["seed"] == 7
    assert (server.input_dir / "clip.mp4").read_bytes() == clip.read_bytes()
