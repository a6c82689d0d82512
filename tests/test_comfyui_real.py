"""Opt-in: the pack inside a real ComfyUI server (Comfy-Org/ComfyUI, `main.py --cpu`).

Skipped unless SYNCFOLEY_COMFYUI names a ComfyUI checkout and SYNCFOLEY_COMFYUI_PYTHON a Python that
runs it (its requirements.txt installed, with an importable torchvision; the pack's own dependencies
too, but not the pack itself: ComfyUI must import it from the folder). See docs/comfyui.md.

The module starts one server on a free loopback port, with `--base-directory` set to a temporary
folder: the tiny model set in models/foley, the example videos in input/, and this repository linked
as custom_nodes/"Sync Foley.pack" (a space and a dot, so only relative imports can work). Then it
checks what the issue asks: the pack loads, every node is in /object_info, every workflow runs through
POST /prompt to playable files, bad inputs come back as ComfyUI's errors, and `syncfoley run --server`
drives the same server.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import av
import pytest

from syncfoley import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

COMFYUI = os.environ.get("SYNCFOLEY_COMFYUI")
COMFYUI_PYTHON = os.environ.get("SYNCFOLEY_COMFYUI_PYTHON")
pytestmark = pytest.mark.skipif(
    not (COMFYUI and COMFYUI_PYTHON),
    reason="real-ComfyUI test: set SYNCFOLEY_COMFYUI=<ComfyUI checkout> and SYNCFOLEY_COMFYUI_PYTHON=<its python> "
           "(docs/comfyui.md)")

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO_ROOT / "workflows"
NAMES = sorted(p.name[: -len(".api.json")] for p in WORKFLOWS.glob("*.api.json"))
PACK_FOLDER = "Sync Foley.pack"
START_TIMEOUT = 180.0
RUN_TIMEOUT = 300.0
# Seconds of audio each workflow must give: the input video's length, or the sampler's duration.
EXPECTED_SECONDS = {"demo": 2.0, "video_to_audio": 2.0, "synccfg_vs_cfg": 2.0, "finetuned_model": 2.0, "long_video": 4.0,
                    "text_to_audio": 5.0, "restyle_audio": 2.0, "fix_a_moment": 2.0, "mmaudio_video_to_audio": 2.0,
                    "mmaudio_long_video": 4.0}


# Server ------------------------------------------------------------------------------------------

class Comfy:
    def __init__(self, base: Path, port: int, process: subprocess.Popen, log: Path):
        self.base, self.url, self.process, self.log = base, f"http://127.0.0.1:{port}", process, log
        self.port = port

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def get(self, path: str):
        status, body, _ = self.request("GET", path)
        assert status == 200, f"GET {path}: {status} {body[:300]!r}"
        return json.loads(body)

    def queue(self, prompt: dict, client_id: str = "syncfoley-test") -> str:
        status, body, _ = self.request("POST", "/prompt", {"prompt": prompt, "client_id": client_id})
        assert status == 200, f"POST /prompt refused ({status}): {body.decode(errors='replace')[:2000]}"
        answer = json.loads(body)
        assert answer["node_errors"] == {}
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = RUN_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry:
                return entry
            assert self.process.poll() is None, f"ComfyUI exited:\n{self.log_text()[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} not finished after {timeout} s")

    def file_of(self, item: dict) -> Path:
        return self.base / item.get("type", "output") / item.get("subfolder", "") / item["filename"]  # output, temp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_base(base: Path, tiny_models: dict) -> None:
    """The layout a user has: models/foley with the files the workflows name, input/ with the videos."""
    from tiny_models import write_user_layout

    write_user_layout(base, tiny_models)
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_FOLDER).symlink_to(REPO_ROOT, target_is_directory=True)


@pytest.fixture(scope="module")
def comfy(tiny_models, tmp_path_factory):
    checkout, python = Path(COMFYUI), Path(COMFYUI_PYTHON)
    if not (checkout / "main.py").is_file():
        pytest.fail(f"SYNCFOLEY_COMFYUI={checkout} is not a ComfyUI checkout (no main.py)")
    if not shutil.which(str(python)):
        pytest.fail(f"SYNCFOLEY_COMFYUI_PYTHON={python} is not an executable")
    base = tmp_path_factory.mktemp("comfy base")
    _write_base(base, tiny_models)
    port, log = _free_port(), base / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCFOLEY_")}  # no headless folder settings
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    command = [str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--disable-auto-launch", "--base-directory", str(base), "--database-url", f"sqlite:///{base / 'comfyui.db'}"]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, cwd=checkout, stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = Comfy(base, port, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode} while starting:\n{server.log_text()[-4000:]}")
            try:
                if server.request("GET", "/system_stats")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ComfyUI did not answer within {START_TIMEOUT} s:\n{server.log_text()[-4000:]}")
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# A minimal websocket reader (standard library), to see what ComfyUI streams to the browser ---------

class WebSocket:
    def __init__(self, port: int, client_id: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=RUN_TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.stream = self.sock.makefile("rb")
        status = self.stream.readline()
        assert b" 101 " in status, status
        while self.stream.readline() not in (b"\r\n", b""):
            pass

    def messages(self):
        """JSON text messages, in order (binary preview frames are skipped)."""
        while True:
            head = self.stream.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = int.from_bytes(self.stream.read(2), "big")
            elif length == 127:
                length = int.from_bytes(self.stream.read(8), "big")
            payload = self.stream.read(length)
            if opcode == 8:
                return
            if opcode == 1:
                yield json.loads(payload)

    def close(self):
        self.stream.close()
        self.sock.close()


# Helpers -------------------------------------------------------------------------------------------

def _fast(prompt: dict) -> dict:
    """Two steps; windows small enough that long_video's 4 s clip is sampled in several."""
    prompt = json.loads(json.dumps(prompt))
    for entry in prompt.values():
        if entry["class_type"] == "SyncFoleySampler":
            entry["inputs"]["steps"] = 2
            if entry["inputs"]["window_seconds"]:
                entry["inputs"].update(window_seconds=1.28, overlap_seconds=0.32)
    return prompt


def _seconds(path: Path) -> tuple[float, float | None]:
    """(audio seconds decoded, video seconds decoded or None)."""
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        audio_seconds = sum(frame.samples for frame in container.decode(audio)) / audio.rate
    if path.suffix != ".mp4":
        return audio_seconds, None
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        return audio_seconds, frames / float(video.average_rate)


def _check_media(path: Path, expected_seconds: float) -> None:
    assert path.is_file() and path.stat().st_size > 0, path
    if path.suffix == ".png":
        with av.open(str(path)) as container:
            assert next(container.decode(video=0)).width > 0
        return
    audio_seconds, video_seconds = _seconds(path)
    assert audio_seconds == pytest.approx(expected_seconds, abs=0.05), path
    if video_seconds is not None:
        assert video_seconds == pytest.approx(expected_seconds, abs=0.05), path
        assert audio_seconds == pytest.approx(video_seconds, abs=0.05), path


def _error_message(entry: dict) -> dict | None:
    for kind, data in entry["status"]["messages"]:
        if kind in ("execution_error", "execution_interrupted"):
            return {"kind": kind, **data}
    return None


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncfoley", "run", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)


# 1. Loading ----------------------------------------------------------------------------------------

def test_pack_loads_without_import_error(comfy):
    log = comfy.log_text()
    ours = [line for line in log.splitlines() if line.rstrip().endswith(f"custom_nodes/{PACK_FOLDER}")]
    assert ours, f"the pack is not in ComfyUI's custom node import list:\n{log[-3000:]}"
    assert all("IMPORT FAILED" not in line for line in ours), ours
    assert f"Cannot import {comfy.base / 'custom_nodes' / PACK_FOLDER}" not in log


def test_every_node_is_in_object_info_with_its_declaration(comfy):
    info = comfy.get("/object_info")
    missing = set(NODE_CLASS_MAPPINGS) - set(info)
    assert not missing, f"not in /object_info: {sorted(missing)}"
    for name, cls in NODE_CLASS_MAPPINGS.items():
        entry = info[name]
        assert entry["category"].split("/")[0] == "SyncFoley"
        assert entry["python_module"] == f"custom_nodes.{PACK_FOLDER}"
        assert entry["display_name"] == NODE_DISPLAY_NAME_MAPPINGS.get(name, name)
        assert entry["output"] == list(cls.RETURN_TYPES)
        declared = cls.INPUT_TYPES()
        for group in ("required", "optional"):
            assert list(entry["input"].get(group, {})) == list(declared.get(group, {})), (name, group)
        assert entry["output_node"] == bool(getattr(cls, "OUTPUT_NODE", False))


def test_combo_lists_show_the_files_in_models_foley_and_input(comfy):
    info = comfy.get("/object_info")

    def choices(node: str, name: str) -> list:
        return info[node]["input"]["required"][name][0]

    assert "hunyuanvideo_foley_xl.pth" in choices("SyncFoleyModelLoader", "model_name")
    assert "vae_128d_48k.pth" in choices("SyncFoleyVAELoader", "vae_name")
    assert "synchformer_state_dict.pth" in choices("SyncFoleySynchformerLoader", "synchformer_name")
    assert {"clap", "siglip2"} <= set(choices("SyncFoleyTextEncoderLoader", "folder"))
    assert {"clap", "siglip2"} <= set(choices("SyncFoleyImageEncoderLoader", "folder"))
    assert {"syncfoley-example.mp4", "syncfoley-example-long.mp4"} <= set(choices("SyncFoleyLoadVideo", "video"))
    weights = [c for c in choices("SyncFoleyModelLoader", "model_name") if "/" in c]
    assert not [w for w in weights if w.startswith(("clap/", "siglip2/"))], "encoder weights listed as checkpoints"


# 2. Every workflow through POST /prompt ------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_workflow_runs_in_comfyui_and_writes_playable_files(name, comfy):
    prompt = _fast(json.loads((WORKFLOWS / f"{name}.api.json").read_text()))
    started = time.perf_counter()
    entry = comfy.wait(comfy.queue(prompt))
    seconds = time.perf_counter() - started
    assert entry["status"]["status_str"] == "success", _error_message(entry)
    output_nodes = {i for i, e in prompt.items() if getattr(NODE_CLASS_MAPPINGS[e["class_type"]], "OUTPUT_NODE", False)}
    assert set(entry["outputs"]) == output_nodes
    items = [item for ui in entry["outputs"].values() for items in ui.values() if isinstance(items, list)
             for item in items if isinstance(item, dict) and "filename" in item]
    media = [item for item in items if not item["filename"].endswith(".png")]
    assert media and all(item["type"] == "output" for item in media)
    for item in items:
        _check_media(comfy.file_of(item), EXPECTED_SECONDS[name])
    status, body, headers = comfy.request("GET", "/view?" + urllib.parse.urlencode(media[0]))
    assert status == 200 and body == comfy.file_of(media[0]).read_bytes()  # what the browser plays
    assert headers["Content-Type"].split("/")[0] in ("video", "audio"), headers["Content-Type"]
    print(f"{name}: {seconds:.1f} s, {[comfy.file_of(i).relative_to(comfy.base).as_posix() for i in items]}")


def test_progress_reaches_the_browser_socket(comfy):
    socket_client = WebSocket(comfy.port, "progress-probe")
    try:
        prompt = _fast(json.loads((WORKFLOWS / "text_to_audio.api.json").read_text()))
        prompt["10"]["inputs"].update(steps=5, seed=123)  # never run before: not cached
        prompt_id = comfy.queue(prompt, client_id="progress-probe")
        progress = []
        for message in socket_client.messages():
            data = message.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if message["type"] == "progress":
                progress.append((data["node"], data["value"], data["max"]))
            if message["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                break
        assert message["type"] == "execution_success", message
    finally:
        socket_client.close()
    sampler = [(value, top) for node, value, top in progress if node == "10"]
    assert sampler and sampler[-1] == (5, 5), progress


def test_training_node_trains_inside_comfyui_and_its_model_samples(comfy):
    """ComfyUI runs nodes under torch.inference_mode() and its loaders make inference tensors: the
    training node must get autograd back (the headless runner does not show this)."""
    from test_training_support import make_dataset

    make_dataset(comfy.base / "input" / "foley_dataset")
    prompt = _fast(json.loads((WORKFLOWS / "text_to_audio.api.json").read_text()))
    prompt["30"] = {"class_type": "SyncFoleyTrainLoRA", "inputs": {
        "model": ["1", 0], "dataset": "foley_dataset", "steps": 3, "learning_rate": 1e-3, "lora_rank": 2,
        "output_name": "comfy_lora", "vae": "vae_128d_48k.pth", "synchformer": "synchformer_state_dict.pth",
        "clap": "clap", "siglip": "siglip2", "clip_seconds": 1.0, "repa_depth": 1}}
    prompt["10"]["inputs"]["model"] = ["30", 0]
    entry = comfy.wait(comfy.queue(prompt))
    assert entry["status"]["status_str"] == "success", _error_message(entry)
    assert entry["outputs"]["30"]["text"][0].startswith("3 steps: loss ")
    assert (comfy.base / "models" / "foley" / "loras" / "comfy_lora.safetensors").is_file()
    (audio,) = entry["outputs"]["12"]["audio"]
    _check_media(comfy.file_of(audio), EXPECTED_SECONDS["text_to_audio"])
    lora_names = comfy.get("/object_info/SyncFoleyLoRA")["SyncFoleyLoRA"]["input"]["required"]["lora_name"][0]
    assert "loras/comfy_lora.safetensors" in lora_names


# 3. Errors -----------------------------------------------------------------------------------------

def test_missing_model_is_a_validation_error_naming_the_input(comfy):
    prompt = _fast(json.loads((WORKFLOWS / "video_to_audio.api.json").read_text()))
    prompt["1"]["inputs"]["model_name"] = "no_such_model.pth"
    status, body, _ = comfy.request("POST", "/prompt", {"prompt": prompt})
    answer = json.loads(body)
    assert status == 400 and answer["error"]["type"] == "prompt_outputs_failed_validation"
    (error,) = answer["node_errors"]["1"]["errors"]
    assert error["extra_info"]["input_name"] == "model_name" and "no_such_model.pth" in error["details"]


def test_wrong_checkpoint_kind_is_an_execution_error_that_says_what_the_file_is(comfy):
    prompt = _fast(json.loads((WORKFLOWS / "video_to_audio.api.json").read_text()))
    prompt["2"]["inputs"]["vae_name"] = "hunyuanvideo_foley_xl.pth"
    error = _error_message(comfy.wait(comfy.queue(prompt)))
    assert error and error["kind"] == "execution_error" and error["node_id"] == "2"
    assert "MM-DiT" in error["exception_message"] and "DAC-VAE" in error["exception_message"]


def test_cancel_stops_the_sampler_mid_run(comfy):
    prompt = _fast(json.loads((WORKFLOWS / "video_to_audio.api.json").read_text()))
    prompt["10"]["inputs"].update(steps=1000, seed=99)
    prompt_id = comfy.queue(prompt)
    deadline = time.monotonic() + 60
    while not comfy.get("/queue")["queue_running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    cancelled = time.perf_counter()
    assert comfy.request("POST", "/interrupt", {})[0] == 200
    entry = comfy.wait(prompt_id, timeout=60)
    error = _error_message(entry)
    assert error and error["kind"] == "execution_interrupted", entry["status"]
    assert error["node_type"].startswith("SyncFoley")
    assert time.perf_counter() - cancelled < 10


# 4. The CLI's --server mode against the real server ------------------------------------------------

def _sampler_sets(ui_name: str) -> list[str]:
    api = json.loads((WORKFLOWS / f"{ui_name}.api.json").read_text())
    sets = []
    for node_id, entry in api.items():
        if entry["class_type"] == "SyncFoleySampler":
            sets += ["--set", f"{node_id}.steps=2"]
            if entry["inputs"]["window_seconds"]:
                sets += ["--set", f"{node_id}.window_seconds=1.28", "--set", f"{node_id}.overlap_seconds=0.32"]
    return sets


@pytest.mark.parametrize("name", NAMES)
def test_cli_server_mode_runs_the_ui_file_and_downloads_outputs(name, comfy, tmp_path):
    done = _cli(str(WORKFLOWS / f"{name}.json"), "--server", comfy.url, *_sampler_sets(name),
                "--output", str(tmp_path / "out"), "--json", str(tmp_path / "summary.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    files = [Path(p) for p in summary["files"]]
    assert summary["status"] == "ok" and files and all(tmp_path / "out" in p.parents for p in files)
    for path in files:
        _check_media(path, EXPECTED_SECONDS[name])


def test_cli_server_mode_uploads_a_local_video(comfy, tmp_path):
    from media_fixtures import make_video

    local = tmp_path / "my clip.mp4"  # not in the server's input folder: the CLI uploads it
    make_video(local, fps=25, count=60, size=(64, 48))
    done = _cli(str(WORKFLOWS / "video_to_audio.json"), "--server", comfy.url, "--set", "steps=2",
                "--video", str(local), "--prompt", "glass breaking", "--output", str(tmp_path / "out"),
                "--json", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    (video,) = [Path(p) for p in summary["files"] if p.endswith(".mp4")]
    _check_media(video, 2.4)
    assert (comfy.base / "input" / "my clip.mp4").read_bytes() == local.read_bytes()


def test_cli_server_mode_reports_validation_and_node_errors(comfy, tmp_path):
    workflow = str(WORKFLOWS / "video_to_audio.api.json")
    invalid = _cli(workflow, "--server", comfy.url, "--set", "model_name=no_such_model.pth", cwd=tmp_path)
    assert invalid.returncode == 2
    assert "model_name" in invalid.stderr and "no_such_model.pth" in invalid.stderr and "nothing was run" in invalid.stderr
    failed = _cli(workflow, "--server", comfy.url, "--set", "steps=2", "--set", "vae_name=hunyuanvideo_foley_xl.pth",
                  "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert failed.returncode == 1
    assert "node 2 (SyncFoleyVAELoader)" in failed.stderr and "DAC-VAE" in failed.stderr
