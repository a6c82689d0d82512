"""`--server URL`: the same workflow, run by a ComfyUI server instead of this process.

Local input files named by the workflow are uploaded (POST /upload/image, which takes any media) and
the inputs rewritten to the uploaded names; the prompt is queued (POST /prompt), its history polled
(GET /history/<id>) and the output files downloaded (GET /view) into the local output folder.
HTTP with the standard library; files are streamed both ways.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..media.files import atomic_output, next_free_stem
from .errors import NodeExecutionError, RunInterrupted, WorkflowError
from .execute import RunResult
from .validate import check_format
from .workflow import Workflow

MEDIA_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif", ".wav", ".flac", ".mp3", ".ogg",
                  ".m4a", ".aac", ".png", ".jpg", ".jpeg", ".webp")
CHUNK_BYTES = 1 << 20


class RemoteError(RuntimeError):
    """The server could not be reached, answered oddly, or did not finish in time."""


class ComfyClient:
    def __init__(self, url: str, request_timeout: float = 60.0):
        self.url = url.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url
        self.request_timeout = request_timeout
        self.client_id = uuid.uuid4().hex

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, bytes]:
        """(status, body); `body` may be bytes or an iterable of byte chunks (with a Content-Length header)."""
        with self.open(method, path, body, headers) as (status, response):
            return status, response.read()

    @contextmanager
    def open(self, method: str, path: str, body=None, headers: dict | None = None):
        """Yields (status, readable response) for reading the answer in pieces."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            response = urllib.request.urlopen(req, timeout=self.request_timeout)
        except urllib.error.HTTPError as e:
            response = e
        except (urllib.error.URLError, OSError) as e:
            raise RemoteError(f"cannot reach ComfyUI at {self.url}: {getattr(e, 'reason', e)}") from e
        with response:
            yield getattr(response, "status", None) or response.code, response

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise RemoteError(f"GET {path} answered {status}: {body[:300].decode(errors='replace')}")
        return json.loads(body)

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def upload(self, path: Path) -> str:
        """Upload a local file to the server's input folder; the name to use in the workflow."""
        boundary = uuid.uuid4().hex
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        tail = f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\ninput\r\n--{boundary}--\r\n'.encode()

        def parts():  # the file is streamed, never held in memory whole
            yield head
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    yield chunk
            yield tail

        size = len(head) + path.stat().st_size + len(tail)
        status, body = self.request("POST", "/upload/image", parts(),
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}",
                                     "Content-Length": str(size)})
        if status != 200:
            raise RemoteError(f"uploading {path} failed ({status}): {body[:300].decode(errors='replace')}")
        answer = json.loads(body)
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def queue(self, prompt: dict, extra_data: dict | None = None, source: str | None = None) -> str:
        payload = {"prompt": prompt, "client_id": self.client_id, "extra_data": extra_data or {}}
        status, body = self.request("POST", "/prompt", json.dumps(payload).encode(), {"Content-Type": "application/json"})
        answer = _json_or_text(body)
        if status == 400 and isinstance(answer, dict):
            raise WorkflowError.from_comfy_response(answer, source)
        if status != 200 or not isinstance(answer, dict) or "prompt_id" not in answer:
            raise RemoteError(f"POST /prompt answered {status}: {str(answer)[:300]}")
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float, interrupt: threading.Event | None = None) -> dict:
        deadline, poll = time.monotonic() + timeout, 0.05
        while True:
            entry = self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)
            if entry:  # ComfyUI writes the history entry when the prompt has finished
                return entry
            if interrupt is not None and interrupt.is_set():
                self.request("POST", "/interrupt", json.dumps({"prompt_id": prompt_id}).encode(),
                             {"Content-Type": "application/json"})
                raise RunInterrupted()
            if time.monotonic() > deadline:
                raise RemoteError(f"no result after {timeout:g} s; the server still has prompt {prompt_id}")
            time.sleep(poll)
            poll = min(poll * 1.5, 1.0)  # quick answers for short jobs, few requests for long ones

    def download(self, item: dict, folder: Path) -> Path:
        """Stream an output file into `folder` (under its subfolder), never outside it and never over
        an existing file: a name already taken gets a number."""
        target = local_target(folder, item)
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.open("GET", f"/view?{query}") as (status, response):
            if status != 200:
                raise RemoteError(f"downloading {item['filename']} failed ({status})")
            with atomic_output(target, overwrite=False) as partial, open(partial, "wb") as f:
                shutil.copyfileobj(response, f, CHUNK_BYTES)
        return target


def local_target(folder: Path, item: dict) -> Path:
    """Where a server's output `{filename, subfolder}` goes under `folder`. The names come from the
    server: absolute paths and `..` that would leave `folder` are refused."""
    root = Path(folder).resolve()
    name, subfolder = str(item.get("filename", "")), str(item.get("subfolder") or "")
    target = (root / subfolder / name).resolve()
    if (not name or Path(name).is_absolute() or Path(subfolder).is_absolute() or Path(name).name != name
            or root not in target.parents):
        raise RemoteError(f"the server named an output '{subfolder + '/' if subfolder else ''}{name}' that would be "
                          f"written outside the output folder {root}; refusing it (is the server what you think?)")
    if target.exists():
        target = target.with_name(next_free_stem(target.parent, target.stem) + target.suffix)
    return target


class RemoteRunner:
    """Runs workflows on a ComfyUI server; `run` has the Executor's signature and result."""

    def __init__(self, url: str, output_dir: str | Path, timeout: float = 3600.0,
                 interrupt: threading.Event | None = None, client: ComfyClient | None = None):
        self.client = client or ComfyClient(url)
        self.output_dir = Path(output_dir)
        self.timeout = timeout
        self.interrupt = interrupt
        self._uploaded: dict[Path, str] = {}

    def run(self, workflow: Workflow) -> RunResult:
        started = time.perf_counter()
        check_format(workflow.prompt, workflow.source)
        prompt = self.upload_inputs(workflow.prompt)
        extra = {"extra_pnginfo": {"workflow": workflow.ui}} if workflow.ui else {}
        prompt_id = self.client.queue(prompt, extra, workflow.source)
        entry = self.client.wait(prompt_id, self.timeout, interrupt=self.interrupt)
        _raise_for_status(entry, prompt)
        result = RunResult(ui=entry.get("outputs") or {})
        for message, data in _messages(entry):
            if message == "execution_cached":
                result.cached += [str(n) for n in data.get("nodes", [])]
        for ui in result.ui.values():
            for items in ui.values():
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict) and "filename" in item and item.get("type", "output") in ("output", "temp"):
                        result.files.append(self.client.download(item, self.output_dir))
        result.executed = [i for i in prompt if i not in result.cached]
        result.seconds = time.perf_counter() - started
        return result

    def upload_inputs(self, prompt: dict) -> dict:
        """Inputs naming a local media file (video, audio, image) point to its uploaded copy instead."""
        out = {}
        for node_id, node in prompt.items():
            inputs = dict(node.get("inputs", {}))
            for name, value in inputs.items():
                if isinstance(value, str) and value.lower().endswith(MEDIA_SUFFIXES) and Path(value).expanduser().is_file():
                    path = Path(value).expanduser().resolve()
                    if path not in self._uploaded:
                        self._uploaded[path] = self.client.upload(path)
                    inputs[name] = self._uploaded[path]
            out[node_id] = {**node, "inputs": inputs}
        return out


def _messages(entry: dict) -> list[tuple[str, dict]]:
    return [(m[0], m[1]) for m in (entry.get("status") or {}).get("messages", []) if isinstance(m, (list, tuple)) and len(m) == 2]


def _raise_for_status(entry: dict, prompt: dict) -> None:
    status = entry.get("status") or {}
    if status.get("status_str", "success") == "success":
        return
    for message, data in _messages(entry):
        if message == "execution_interrupted":
            raise RunInterrupted(str(data.get("node_id")), data.get("node_type"))
        if message == "execution_error":
            raise NodeExecutionError(str(data.get("node_id")), data.get("node_type") or "?",
                                     data.get("exception_message", ""), data.get("exception_type", "Exception"))
    raise RemoteError(f"the server reports status {status.get('status_str')!r} without an error message")


def _json_or_text(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body.decode(errors="replace")
