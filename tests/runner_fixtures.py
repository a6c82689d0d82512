"""Toy node classes (the legacy ComfyUI contract), tiny videos and a fake ComfyUI server for the runner tests."""
from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import av
import numpy as np
import pytest

from syncfoley.nodes.host import configure, host

CALLS: collections.Counter = collections.Counter()  # node function -> times run


class ToyLoader:
    CATEGORY = "test"
    RETURN_TYPES = ("TOY_MODEL",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"checkpoint": (["tiny-a.safetensors", "tiny-b.safetensors"],),
                             "scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0, "step": 0.1})}}

    def load(self, checkpoint, scale):
        CALLS["loader"] += 1
        return ({"name": checkpoint, "scale": scale},)


class ToyVideo:
    CATEGORY = "test"
    RETURN_TYPES = ("TOY_FRAMES", "FLOAT")
    RETURN_NAMES = ("frames", "fps")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("STRING", {"default": ""})}}

    def load(self, video):
        CALLS["video"] += 1
        path = Path(video) if Path(video).is_absolute() else host().get_input_dir() / video
        with av.open(str(path)) as container:  # corrupt files raise here or while decoding
            stream = container.streams.video[0]
            means = [float(frame.to_ndarray(format="gray").mean()) for frame in container.decode(stream)]
            fps = float(stream.average_rate or 0)
        if not means:
            raise ValueError(f"{path.name} has no video frames")
        return (np.array(means), fps)


class ToyText:
    CATEGORY = "test"
    RETURN_TYPES = ("TOY_TEXT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"prompt": ("STRING", {"multiline": True, "default": ""})}}

    def encode(self, prompt):
        CALLS["text"] += 1
        return (prompt.upper(),)


class ToySampler:
    CATEGORY = "test"
    RETURN_TYPES = ("TOY_AUDIO",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("TOY_MODEL",), "frames": ("TOY_FRAMES",), "text": ("TOY_TEXT",),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1}),
                             "steps": ("INT", {"default": 4, "min": 1, "max": 50}),
                             "cfg": ("FLOAT", {"default": 4.5, "min": 0.0, "max": 10.0}),
                             "sampler": (["euler", "heun"],)},
                "optional": {"negative": ("TOY_TEXT",)}}

    def sample(self, model, frames, text, seed, steps, cfg, sampler, negative=None):
        CALLS["sampler"] += 1
        bar = host().progress(steps)
        values = np.asarray(frames, dtype=float) * model["scale"]
        for step in range(steps):
            host().check_interrupt()
            values = values + cfg * 0.01
            bar.update(step + 1, steps)
        return ({"values": values.round(4).tolist(), "seed": seed, "text": text, "negative": negative,
                 "sampler": sampler, "model": model["name"]},)


class ToyGain:
    CATEGORY = "test"
    RETURN_TYPES = ("TOY_AUDIO",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": ("TOY_AUDIO",), "gain": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 8.0})}}

    def apply(self, audio, gain):
        CALLS["gain"] += 1
        return ({**audio, "values": [v * gain for v in audio["values"]]},)


class ToySave:
    CATEGORY = "test"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": ("TOY_AUDIO",), "filename_prefix": ("STRING", {"default": "toy"})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def save(self, audio, filename_prefix, unique_id):
        CALLS["save"] += 1
        path = host().output_path(filename_prefix, "json")
        path.write_text(json.dumps({**audio, "node": unique_id}))
        subfolder = path.parent.relative_to(host().get_output_dir().resolve()).as_posix()
        return {"ui": {"audio": [{"filename": path.name, "subfolder": "" if subfolder == "." else subfolder,
                                  "type": "output"}]}}


class ToyNumber:
    """An INT output (for type-mismatch tests) whose IS_CHANGED can be steered by the test."""
    CATEGORY = "test"
    RETURN_TYPES = ("INT",)
    FUNCTION = "make"
    changed = "same"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": -5, "max": 5})}}

    @classmethod
    def IS_CHANGED(cls, value):
        return cls.changed

    def make(self, value):
        CALLS["number"] += 1
        return (value,)


class ToyShowInt:
    CATEGORY = "test"
    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"number": ("INT", {"forceInput": True})},
                "optional": {"label": ("STRING", {"default": "n"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, label=None):
        return True if label is None or not label.startswith("!") else f"label '{label}' may not start with '!'"

    def show(self, number, label="n"):
        CALLS["show"] += 1
        return {"ui": {"text": [f"{label}={number}"]}}


class ToyFailing:
    CATEGORY = "test"
    RETURN_TYPES = ("TOY_AUDIO",)
    FUNCTION = "fail"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": ("TOY_AUDIO",)}}

    def fail(self, audio):
        raise RuntimeError("the toy sampler ran out of toys")


class ToyUpload:
    """A file COMBO with an upload button, followed by another required and an optional widget."""
    CATEGORY = "test"
    RETURN_TYPES = ("TOY_FRAMES",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": (["a.mp4", "b.mp4"], {"video_upload": True}),
                             "frames": ("INT", {"default": 8, "min": 1, "max": 64})},
                "optional": {"gain": ("FLOAT", {"default": 1.0})}}

    def load(self, video, frames, gain=1.0):
        return (np.ones(frames) * gain,)


class ToyMux:
    """An input named `video` that takes a link: `--video` must not mean it."""
    CATEGORY = "test"
    RETURN_TYPES = ()
    FUNCTION = "mux"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("TOY_FRAMES",), "audio": ("TOY_AUDIO",)}}

    def mux(self, video, audio):
        return {"ui": {}}


REGISTRY = {cls.__name__: cls for cls in (ToyLoader, ToyVideo, ToyText, ToySampler, ToyGain, ToySave, ToyNumber,
                                          ToyShowInt, ToyFailing, ToyUpload, ToyMux)}


def api_workflow(video: str) -> dict:
    return {
        "1": {"class_type": "ToyLoader", "inputs": {"checkpoint": "tiny-a.safetensors", "scale": 1.0}},
        "2": {"class_type": "ToyVideo", "inputs": {"video": video}},
        "3": {"class_type": "ToyText", "inputs": {"prompt": "rain on a tin roof"}},
        "4": {"class_type": "ToySampler", "inputs": {"model": ["1", 0], "frames": ["2", 0], "text": ["3", 0], "seed": 7,
                                                     "steps": 4, "cfg": 4.5, "sampler": "euler"}},
        "5": {"class_type": "ToySave", "inputs": {"audio": ["4", 0], "filename_prefix": "toy"}},
    }


def ui_workflow(video: str) -> dict:
    """The same graph as saved by the browser: a reroute before the sampler, the seed from a primitive,
    a bypassed gain before the save, a muted second save and a note."""
    def out(type_, links, **extra):
        return {"name": type_, "type": type_, "links": links, **extra}

    nodes = [
        {"id": 1, "type": "ToyLoader", "mode": 0, "inputs": [], "outputs": [out("TOY_MODEL", [1])],
         "widgets_values": ["tiny-a.safetensors", 1.0]},
        {"id": 2, "type": "ToyVideo", "mode": 0, "inputs": [], "outputs": [out("TOY_FRAMES", [2]), out("FLOAT", [])],
         "widgets_values": [video]},
        {"id": 3, "type": "ToyText", "mode": 0, "inputs": [], "outputs": [out("TOY_TEXT", [4])],
         "widgets_values": ["rain on a tin roof"]},
        {"id": 10, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}],
         "outputs": [out("TOY_MODEL", [3])]},
        {"id": 4, "type": "ToySampler", "mode": 0, "title": "Sampler",
         "inputs": [{"name": "model", "type": "TOY_MODEL", "link": 3}, {"name": "frames", "type": "TOY_FRAMES", "link": 2},
                    {"name": "text", "type": "TOY_TEXT", "link": 4}, {"name": "negative", "type": "TOY_TEXT", "link": None},
                    {"name": "seed", "type": "INT", "link": 5, "widget": {"name": "seed"}}],
         "outputs": [out("TOY_AUDIO", [6, 8])],
         "widgets_values": [123, "randomize", 4, 4.5, "euler"]},
        {"id": 11, "type": "PrimitiveNode", "mode": 0, "inputs": [],
         "outputs": [out("INT", [5], widget={"name": "seed"})], "widgets_values": [7, "fixed"]},
        {"id": 12, "type": "ToyGain", "mode": 4, "inputs": [{"name": "audio", "type": "TOY_AUDIO", "link": 6}],
         "outputs": [out("TOY_AUDIO", [7])], "widgets_values": [2.0]},
        {"id": 5, "type": "ToySave", "mode": 0, "inputs": [{"name": "audio", "type": "TOY_AUDIO", "link": 7}],
         "outputs": [], "widgets_values": ["toy"]},
        {"id": 13, "type": "ToySave", "mode": 2, "inputs": [{"name": "audio", "type": "TOY_AUDIO", "link": 8}],
         "outputs": [], "widgets_values": ["muted"]},
        {"id": 14, "type": "Note", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["a note"]},
    ]
    links = [[1, 1, 0, 10, 0, "TOY_MODEL"], [2, 2, 0, 4, 1, "TOY_FRAMES"], [3, 10, 0, 4, 0, "TOY_MODEL"],
             [4, 3, 0, 4, 2, "TOY_TEXT"], [5, 11, 0, 4, 4, "INT"], [6, 4, 0, 12, 0, "TOY_AUDIO"],
             [7, 12, 0, 5, 0, "TOY_AUDIO"], [8, 4, 0, 13, 0, "TOY_AUDIO"]]
    return {"last_node_id": 14, "last_link_id": 8, "nodes": nodes, "links": links, "groups": [], "extra": {},
            "version": 0.4}


def write_video(path: Path, frames: int = 5, size: int = 16, shade: int = 0) -> Path:
    """A tiny mpeg4 clip whose frames get brighter, offset by `shade`."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.full((size, size, 3), min(255, 20 * i + shade), np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


class HostSettings:
    """Configure the global host for a test and put everything back afterwards."""
    KEYS = ("input_dir", "output_dir", "models_dir", "progress_factory", "device")

    def __init__(self):
        self.saved = {k: getattr(host(), k) for k in self.KEYS}

    def restore(self):
        configure(**self.saved)
        host().interrupt_event.clear()


class FakeComfyUI:
    """The endpoints of ComfyUI the runner's --server mode uses, served on 127.0.0.1, running
    prompts with the runner's own executor on the toy nodes in its own input/output folders."""

    def __init__(self, root: Path, registry=REGISTRY, delay: float = 0.05):
        from syncfoley.runner import Executor

        self.input_dir, self.output_dir = root / "input", root / "output"
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.registry, self.delay = registry, delay
        self.executor = Executor(registry)
        self.history: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.uploads: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def object_info(self) -> dict:
        return {name: {"input": cls.INPUT_TYPES(), "output": list(cls.RETURN_TYPES), "name": name,
                       "output_node": getattr(cls, "OUTPUT_NODE", False)} for name, cls in self.registry.items()}

    def execute(self, prompt_id: str, prompt: dict) -> None:
        from syncfoley.runner import NodeExecutionError

        time.sleep(self.delay)  # the client polls before the result exists
        with self.lock:
            configure(input_dir=self.input_dir, output_dir=self.output_dir)
            messages = [["execution_start", {"prompt_id": prompt_id}]]
            try:
                result = self.executor.run(prompt)
                messages.append(["execution_cached", {"nodes": result.cached, "prompt_id": prompt_id}])
                status, outputs = "success", result.ui
            except NodeExecutionError as e:
                messages.append(["execution_error", {"prompt_id": prompt_id, "node_id": e.node_id, "node_type": e.class_type,
                                                     "exception_message": e.exception_message,
                                                     "exception_type": e.exception_type}])
                status, outputs = "error", {}
        self.history[prompt_id] = {"prompt": [0, prompt_id, prompt, {}, []], "outputs": outputs,
                                   "status": {"status_str": status, "completed": status == "success", "messages": messages}}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                fake.requests.append(("GET", url.path))
                if url.path == "/object_info":
                    return self._send(200, fake.object_info())
                if url.path.startswith("/history/"):
                    prompt_id = url.path.rsplit("/", 1)[1]
                    return self._send(200, {prompt_id: fake.history[prompt_id]} if prompt_id in fake.history else {})
                if url.path == "/view":
                    query = {k: v[0] for k, v in parse_qs(url.query).items()}
                    path = fake.output_dir / query.get("subfolder", "") / Path(query["filename"]).name
                    return self._send(200, path.read_bytes(), "application/octet-stream") if path.is_file() \
                        else self._send(404, {"error": "not found"})
                self._send(404, {"error": "no such endpoint"})

            def do_POST(self):
                from syncfoley.runner import WorkflowError, validate

                url = urlparse(self.path)
                fake.requests.append(("POST", url.path))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if url.path == "/upload/image":
                    message = BytesParser(policy=HTTP).parsebytes(
                        b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
                    for part in message.iter_parts():
                        if part.get_filename():
                            name = Path(part.get_filename()).name
                            (fake.input_dir / name).write_bytes(part.get_payload(decode=True))
                            fake.uploads.append(name)
                            return self._send(200, {"name": name, "subfolder": "", "type": "input"})
                    return self._send(400, {"error": "no file"})
                if url.path == "/interrupt":
                    return self._send(200, {})
                if url.path == "/prompt":
                    payload = json.loads(body)
                    try:
                        validate(payload["prompt"], fake.registry)
                    except WorkflowError as e:
                        error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                                 "details": "", "extra_info": {}}
                        return self._send(400, {"error": error, "node_errors": e.node_errors()})
                    prompt_id = str(uuid.uuid4())
                    threading.Thread(target=fake.execute, args=(prompt_id, payload["prompt"]), daemon=True).start()
                    return self._send(200, {"prompt_id": prompt_id, "number": 0, "node_errors": {}})
                self._send(404, {"error": "no such endpoint"})

        return Handler


@pytest.fixture
def toy_env(tmp_path, monkeypatch):
    """Toy nodes as the pack's nodes, host folders under tmp_path, counters reset; all undone after."""
    import syncfoley.runner.spec as spec

    CALLS.clear()
    saved = HostSettings()
    monkeypatch.setattr(spec, "pack_nodes", lambda: dict(REGISTRY))
    configure(input_dir=tmp_path / "input", output_dir=tmp_path / "output", progress_factory=None)
    (tmp_path / "input").mkdir(exist_ok=True)
    yield tmp_path
    saved.restore()
