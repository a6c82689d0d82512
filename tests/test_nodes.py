"""The ComfyUI nodes: their declared contract, loading as ComfyUI loads a pack, and real runs on tiny models."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from media_fixtures import make_video, packet_bytes, tone

from syncfoley import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from syncfoley.nodes import host as host_module
from syncfoley.nodes.host import configure
from syncfoley.pipeline.visualize import encode_png, motion_energy, onset_strength

REPO = Path(__file__).resolve().parent.parent
WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN")
COMFY_TYPES = ("AUDIO", "IMAGE", "LATENT", "STRING", "FLOAT", "INT", "BOOLEAN", "VIDEO", "AUDIO_UI", "MASK")


def node(name):
    return NODE_CLASS_MAPPINGS[name]()


@pytest.fixture()
def folders(tmp_path, tiny_models):
    """The plain host pointed at the tiny models and fresh input/output folders; restored afterwards."""
    saved = {k: getattr(host_module._HOST, k) for k in ("input_dir", "output_dir", "models_dir", "device")}
    (tmp_path / "input").mkdir()
    configure(models_dir=tiny_models["dit"].parent.parent, input_dir=tmp_path / "input",
              output_dir=tmp_path / "output", device="cpu")
    yield tmp_path
    configure(**saved)


@pytest.fixture(scope="module")
def loaded(tiny_models):
    saved = {k: getattr(host_module._HOST, k) for k in ("models_dir", "device")}
    configure(models_dir=tiny_models["dit"].parent.parent, device="cpu")
    models = dict(
        model=node("SyncFoleyModelLoader").load("tiny_dit.safetensors", "auto")[0],
        vae=node("SyncFoleyVAELoader").load("tiny_vae.safetensors", "fp32")[0],
        synchformer=node("SyncFoleySynchformerLoader").load("tiny_synchformer.pth", "fp32")[0],
        text_encoder=node("SyncFoleyTextEncoderLoader").load("clap", "fp32")[0],
        image_encoder=node("SyncFoleyImageEncoderLoader").load("siglip", "fp32")[0],
    )
    configure(**saved)
    return models


# Contract --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_node_declares_a_well_formed_contract(name, folders):
    cls = NODE_CLASS_MAPPINGS[name]
    assert name.startswith("SyncFoley") and cls.CATEGORY.split("/")[0] == "SyncFoley"
    assert NODE_DISPLAY_NAME_MAPPINGS[name] and len(cls.DESCRIPTION) > 40
    assert callable(getattr(cls(), cls.FUNCTION))
    returns = cls.RETURN_TYPES
    assert isinstance(returns, tuple) and all(isinstance(t, str) and t.isupper() for t in returns)
    assert len(cls.RETURN_NAMES) == len(returns) == len(cls.OUTPUT_TOOLTIPS)
    declared = cls.INPUT_TYPES()
    assert set(declared) <= {"required", "optional", "hidden"} and declared["required"]
    for category in ("required", "optional"):
        for input_name, (kind, options) in declared.get(category, {}).items():
            assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
            if isinstance(kind, list):
                assert all(isinstance(v, str) for v in kind)
                assert "default" not in options or options["default"] in kind
            elif kind in ("INT", "FLOAT"):
                assert options["min"] <= options["default"] <= options["max"], f"{name}.{input_name}"
            else:
                assert kind in WIDGETS or kind in COMFY_TYPES or kind.startswith("FOLEY_"), kind


def test_model_lists_come_from_the_foley_folder_and_survive_empty_folders(folders, tmp_path_factory):
    assert "tiny_dit.safetensors" in NODE_CLASS_MAPPINGS["SyncFoleyModelLoader"].INPUT_TYPES()["required"]["model_name"][0]
    assert NODE_CLASS_MAPPINGS["SyncFoleyTextEncoderLoader"].INPUT_TYPES()["required"]["folder"][0] == [
        "syncfoley-demo", "clap", "siglip"]  # the built-in demo model first
    empty = tmp_path_factory.mktemp("empty")
    configure(models_dir=empty / "models", input_dir=empty / "missing")
    for cls in NODE_CLASS_MAPPINGS.values():
        cls.INPUT_TYPES()  # /object_info must work before any model or video is there
    assert NODE_CLASS_MAPPINGS["SyncFoleyModelLoader"].INPUT_TYPES()["required"]["model_name"][0] == ["syncfoley-demo"]


def test_pack_imports_from_any_folder_name_as_comfyui_does(tmp_path):
    """ComfyUI imports custom_nodes/<folder>/__init__.py under the folder's path ('.' -> '_x_'): relative
    imports only, nothing of ComfyUI or transformers needed at import time."""
    folder = tmp_path / "custom_nodes" / "ComfyUI-Sync.Foley v1"
    folder.parent.mkdir()
    folder.symlink_to(REPO, target_is_directory=True)
    script = f"""
import importlib.util, json, sys, time
path = {str(folder)!r}
name = path.replace(".", "_x_")
started = time.time()
spec = importlib.util.spec_from_file_location(name, path + "/__init__.py")
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
print(json.dumps({{"nodes": sorted(module.NODE_CLASS_MAPPINGS), "names": len(module.NODE_DISPLAY_NAME_MAPPINGS),
    "version": module.__version__, "seconds": time.time() - started,
    "loaded": [m for m in ("syncfoley", "transformers", "folder_paths", "comfy") if m in sys.modules]}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["nodes"] == sorted(NODE_CLASS_MAPPINGS) and report["names"] == len(NODE_CLASS_MAPPINGS)
    assert report["loaded"] == [] and report["version"]
    assert report["seconds"] < 20


# Runs on tiny models ----------------------------------------------------------------------------------
def test_video_to_audio_chain_writes_a_playable_video_with_the_source_picture(folders, loaded):
    source = folders / "input" / "clip.mp4"
    make_video(source, fps=25, count=75, size=(96, 72), audio_seconds=3.0)
    video, frames, fps, duration, source_audio = node("SyncFoleyLoadVideo").load("clip.mp4", 0.0, 0.0, 240, 512)
    assert (video.path, duration, fps) == (str(source), pytest.approx(3.0), pytest.approx(25.0))
    assert frames.shape == (75, 72, 96, 3) and 0 <= frames.min() and frames.max() <= 1
    assert source_audio["waveform"].shape[-1] == pytest.approx(3.0 * source_audio["sample_rate"], abs=2)
    text, = node("SyncFoleyTextEncode").encode(loaded["text_encoder"], "footsteps", "noisy, harsh")
    visual, = node("SyncFoleyVisualEncode").encode(loaded["image_encoder"], loaded["synchformer"], video, True)
    guidance, = node("SyncFoleySyncCFG").make(4.5, 1.0, "static", 0.64)
    latent, = node("SyncFoleySampler").sample(loaded["model"], text, 3, 2, "euler", "linear", 1.0, 2, 0.0, 0.0, 1.0,
                                               False, visual, guidance)
    assert latent["type"] == "audio" and latent["duration"] == pytest.approx(3.0)
    assert latent["samples"].shape == (2, 16, 150)
    audio, = node("SyncFoleyVAEDecode").decode(loaded["vae"], latent)
    assert audio["sample_rate"] == 48000 and audio["waveform"].shape == (2, 1, 144000)
    returned = node("SyncFoleyMuxVideo").mux(audio, "clips/foley", "keep", 0.5, "mp4", video)
    entries = returned["ui"]["images"]
    assert returned["ui"]["animated"] == (True,)
    assert [e["filename"] for e in entries] == ["foley_00001.mp4", "foley_00002.mp4"]
    assert all(e["subfolder"] == "clips" and e["type"] == "output" for e in entries)
    paths = returned["result"][0].split("\n")
    for path in paths:
        assert packet_bytes(Path(path)) == packet_bytes(source)  # the picture is copied, never re-encoded
        with av.open(path) as container:
            audio_streams = container.streams.audio
            assert len(audio_streams) == 2  # the generated track and the kept original
            track = audio_streams[0]
            samples = sum(frame.samples for frame in container.decode(track))
        assert samples / track.rate == pytest.approx(3.0, abs=0.05)


def test_sampler_with_gpu_blocks_streams_the_dit_and_gives_the_same_latents(loaded, monkeypatch):
    from syncfoley.models.offload import BlockOffloader

    text, = node("SyncFoleyTextEncode").encode(loaded["text_encoder"], "a dog barks", "noisy, harsh")
    args = (loaded["model"], text, 4, 2, "euler", "linear", 1.0, 1, 1.0, 0.0, 1.0, False)
    plain, = node("SyncFoleySampler").sample(*args)
    attached = []
    original = BlockOffloader.attach
    monkeypatch.setattr(BlockOffloader, "attach", lambda self: attached.append(self.resident) or original(self))
    streamed, = node("SyncFoleySampler").sample(*args, gpu_blocks=1)
    assert attached == [1]
    assert torch.equal(streamed["samples"], plain["samples"])
    model = loaded["model"].network  # detached afterwards: no hooks left, every weight back in place
    assert all(not b._forward_pre_hooks and not b._forward_hooks for b in [*model.triple_blocks, *model.single_blocks])
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_clip_with_start_places_audio_at_its_offset(folders, loaded):
    make_video(folders / "input" / "clip.mp4", fps=25, count=75, size=(64, 48))
    video, frames, fps, duration, silence = node("SyncFoleyLoadVideo").load("clip.mp4", 1.0, 1.6, 10, 32)
    assert video.start == 1.0 and duration == pytest.approx(1.6)
    assert frames.shape == (10, 24, 32, 3) and fps == pytest.approx(10 / 1.6)  # capped: lower rate, same span
    assert silence["waveform"].abs().max() == 0 and silence["waveform"].shape[-1] == 76800
    text, = node("SyncFoleyTextEncode").encode(loaded["text_encoder"], "", "noisy, harsh")
    visual, = node("SyncFoleyVisualEncode").encode(loaded["image_encoder"], loaded["synchformer"], video, False)
    assert visual.duration == pytest.approx(1.6)
    latent, = node("SyncFoleySampler").sample(loaded["model"], text, 0, 1, "euler", "linear", 1.0, 1, 0.0, 0.0, 1.0,
                                               True, visual)
    audio, = node("SyncFoleyVAEDecode").decode(loaded["vae"], latent)
    path = node("SyncFoleyMuxVideo").mux(audio, "offset", "drop", 0.5, "mkv", video)["result"][0]
    with av.open(path) as container:
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(container.streams.audio[0])], axis=1)
    rate = 48000
    assert np.abs(decoded[:, : int(0.9 * rate)]).max() < 1e-3  # silent before the clip's start
    assert np.abs(decoded[:, int(1.1 * rate): int(2.5 * rate)]).max() > 1e-3


def test_text_to_audio_saves_audio_of_the_asked_length(folders, loaded):
    text, = node("SyncFoleyTextEncode").encode(loaded["text_encoder"], "a dog barks", "noisy, harsh")
    latent, = node("SyncFoleySampler").sample(loaded["model"], text, 5, 2, "heun", "cosine", 2.0, 1, 1.2, 0.0, 1.0,
                                               False)
    audio, = node("SyncFoleyVAEDecode").decode(loaded["vae"], latent)
    assert audio["waveform"].shape == (1, 1, 57600)
    saved = node("SyncFoleySaveAudio").save(audio, "sounds/dog", "flac", audioUI="")  # what frontend 1.27 sends
    # ComfyUI's player: the frontend draws it for an input of type AUDIO_UI named audioUI (optional, so
    # newer frontends that send nothing pass validation) and plays the "audio" entries of the ui output.
    assert NODE_CLASS_MAPPINGS["SyncFoleySaveAudio"].INPUT_TYPES()["optional"]["audioUI"][0] == "AUDIO_UI"
    assert saved["ui"]["audio"] == [{"filename": "dog_00001.flac", "subfolder": "sounds", "type": "output"}]
    with av.open(saved["result"][0]) as container:
        assert sum(f.samples for f in container.decode(audio=0)) == 57600
    again, = node("SyncFoleyVAEEncode").encode(loaded["vae"], audio)
    assert again["type"] == "audio" and again["samples"].shape == (1, 16, 60) and again["duration"] == 1.2


def test_image_frames_from_other_packs_flow_through(folders, loaded):
    images = torch.rand(40, 48, 64, 3)
    video, frames, fps, duration, _ = node("SyncFoleyLoadVideo").load("", 0.2, 0.0, 240, 512, images=images, fps=20.0)
    assert video.path is None and duration == pytest.approx(1.8) and frames.shape[0] == 36 and fps == 20.0
    visual, = node("SyncFoleyVisualEncode").encode(loaded["image_encoder"], loaded["synchformer"], video, True)
    assert 1.8 - 1 / 20 <= visual.duration <= 1.8  # up to the last frame's time, on the 25 fps grid
    audio = {"waveform": torch.zeros(1, 1, 48000), "sample_rate": 48000}
    path = node("SyncFoleyMuxVideo").mux(audio, "frames", "drop", 0.5, "mp4", video)["result"][0]
    with av.open(path) as container:
        assert sum(1 for _ in container.decode(video=0)) == 36 and container.streams.audio
    plot, = node("SyncFoleySyncPlot").draw(audio, 256, 96, images=images, fps=20.0)["result"]
    assert plot.shape == (1, 96, 256, 3)


# Errors name the input at fault --------------------------------------------------------------------------
def test_missing_model_file_lists_the_folder(folders):
    with pytest.raises(FileNotFoundError, match=r"^model_name: .*'nope\.pth' not found.*Available: .*tiny_dit\.safetensors"):
        node("SyncFoleyModelLoader").load("nope.pth", "auto")
    with pytest.raises(ValueError, match=r"^vae_name: .*HunyuanVideo-Foley MM-DiT"):
        node("SyncFoleyVAELoader").load("tiny_dit.safetensors", "fp32")
    with pytest.raises(FileNotFoundError, match=r"^folder: .*'clip' not found.*Available: clap, siglip"):
        node("SyncFoleyTextEncoderLoader").load("clip", "fp32")


def test_video_errors_name_the_input(folders):
    make_video(folders / "input" / "a.mp4", fps=25, count=25, size=(32, 32))
    loader = node("SyncFoleyLoadVideo")
    with pytest.raises(FileNotFoundError, match=r"^video: no file 'x\.mp4' in the input folder .*; available: a\.mp4, "
                                                r"syncfoley-example\.mp4, syncfoley-example-long\.mp4"):
        loader.load("x.mp4", 0.0, 0.0, 10, 64)
    with pytest.raises(FileNotFoundError, match=r"^path: no video file at"):
        loader.load("a.mp4", 0.0, 0.0, 10, 64, path=str(folders / "gone.mp4"))
    with pytest.raises(ValueError, match=r"^start: 5 s is at or past the end"):
        loader.load("a.mp4", 5.0, 0.0, 10, 64)
    (folders / "input" / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match=r"^video: .*broken\.mp4"):
        loader.load("broken.mp4", 0.0, 0.0, 10, 64)
    cls = NODE_CLASS_MAPPINGS["SyncFoleyLoadVideo"]
    assert cls.VALIDATE_INPUTS("x.mp4").startswith("no file 'x.mp4'")
    assert cls.VALIDATE_INPUTS("a.mp4") is True and cls.VALIDATE_INPUTS(str(folders / "input" / "a.mp4")) is True
    assert cls.VALIDATE_INPUTS(None) is True  # a value from a link is checked when the node runs
    # ComfyUI reports a failure once per argument of the hook: one argument, one line in the UI.
    assert list(inspect.signature(cls.VALIDATE_INPUTS).parameters) == ["video"]


def test_built_in_example_clips_load_from_an_empty_input_folder(folders):
    loader = node("SyncFoleyLoadVideo")
    assert not any((folders / "input").glob("*.mp4"))
    choices = loader.INPUT_TYPES()["required"]["video"][0]
    assert choices == ["syncfoley-example.mp4", "syncfoley-example-long.mp4"]
    video, _, _, duration, audio = loader.load("syncfoley-example.mp4", 0.0, 0.0, 10, 64)
    assert duration == pytest.approx(3.84, abs=0.02) and video.has_audio and audio["waveform"].abs().max() > 0
    assert NODE_CLASS_MAPPINGS["SyncFoleyLoadVideo"].VALIDATE_INPUTS("syncfoley-example-long.mp4") is True
    make_video(folders / "input" / "syncfoley-example.mp4", fps=25, count=25, size=(32, 32))  # the user's own wins
    assert loader.load("syncfoley-example.mp4", 0.0, 0.0, 10, 64)[3] == pytest.approx(1.0, abs=0.05)


def test_load_video_takes_core_video_and_mux_returns_it(folders):
    from syncfoley.nodes.common import FileVideo

    make_video(folders / "input" / "a.mp4", fps=25, count=50, size=(32, 32), audio_seconds=2.0)
    loader, mux = node("SyncFoleyLoadVideo"), node("SyncFoleyMuxVideo")
    video, _, fps, duration, _ = loader.load("unused.mp4", 0.5, 0.0, 10, 64, video_in=FileVideo(str(folders / "input" / "a.mp4")))
    assert video.path.endswith("a.mp4") and (video.fps, duration) == (25.0, pytest.approx(1.5, abs=0.05))

    class Frames:  # what core's VideoFromComponents hands out
        def get_stream_source(self):
            return None

        def get_components(self):
            from types import SimpleNamespace
            return SimpleNamespace(images=torch.rand(20, 16, 16, 3), frame_rate=10,
                                   audio={"waveform": torch.ones(1, 1, 32000), "sample_rate": 16000})

    video, images, fps, duration, audio = loader.load("unused.mp4", 0.0, 0.0, 10, 64, video_in=Frames())
    assert video.path is None and images.shape[0] == 20 and (fps, duration) == (10.0, 2.0)
    assert audio["waveform"].shape[-1] == 32000
    out = mux.mux({"waveform": torch.zeros(1, 1, 48000), "sample_rate": 48000}, "muxed", "drop", 0.5, "mp4",
                  video=loader.load("a.mp4", 0.0, 0.0, 10, 64)[0])
    paths, comfy_video = out["result"]
    assert isinstance(comfy_video, FileVideo) and comfy_video.get_stream_source() == paths.splitlines()[0]
    comfy_video.save_to(str(folders / "copy.mp4"))
    assert (folders / "copy.mp4").read_bytes() == Path(paths.splitlines()[0]).read_bytes()


def test_mux_returns_comfyuis_own_video_where_comfyui_has_it(folders, monkeypatch):
    import sys
    import types

    from syncfoley.nodes.common import as_comfy_video

    class VideoFromFile:  # what comfy_api.input_impl provides in ComfyUI 0.3.31 and later
        def __init__(self, path):
            self.path = path

    module = types.ModuleType("comfy_api.input_impl")
    module.VideoFromFile = VideoFromFile
    monkeypatch.setitem(sys.modules, "comfy_api", types.ModuleType("comfy_api"))
    monkeypatch.setitem(sys.modules, "comfy_api.input_impl", module)
    video = as_comfy_video(folders / "x.mp4")
    assert isinstance(video, VideoFromFile) and video.path == str(folders / "x.mp4")
    monkeypatch.setitem(sys.modules, "comfy_api.input_impl", None)  # older ComfyUI, or the headless runner
    assert type(as_comfy_video(folders / "x.mp4")).__name__ == "FileVideo"


def test_load_video_is_changed_follows_the_file(folders):
    path = folders / "input" / "a.mp4"
    make_video(path, fps=25, count=25, size=(32, 32))
    cls = NODE_CLASS_MAPPINGS["SyncFoleyLoadVideo"]
    before = cls.IS_CHANGED(video="a.mp4", path="")
    assert before == cls.IS_CHANGED(video="a.mp4", path="")
    make_video(path, fps=25, count=30, size=(32, 32))
    assert cls.IS_CHANGED(video="a.mp4", path="") != before


def test_sampler_and_output_errors_name_the_input(folders, loaded):
    from conftest import random_text_features, random_visual_features

    model, sampler = loaded["model"], node("SyncFoleySampler")
    text = random_text_features(dim=model.config.text_dim)
    args = dict(seed=0, steps=1, sampler_name="euler", schedule="linear", shift=1.0, takes=1, window_seconds=0.0,
                overlap_seconds=1.0, low_memory=False)
    with pytest.raises(ValueError, match=r"^duration: text-to-audio"):
        sampler.sample(model, text, duration=0.0, **args)
    with pytest.raises(ValueError, match=r"^duration: 0.01 s is shorter than one latent frame \(0.02 s\)"):
        sampler.sample(model, text, duration=0.01, **args)
    short, = sampler.sample(model, text, duration=0.3, **args)  # shorter than a Synchformer segment is fine
    assert short["samples"].shape[-1] == 15
    sync_cfg, = node("SyncFoleySyncCFG").make(4.5, 1.0, "shift", 0.64)
    with pytest.raises(ValueError, match=r"^guidance: SyncCFG"):
        sampler.sample(model, text, duration=1.0, guidance=sync_cfg, **args)
    visual = random_visual_features(2.0, dim=768)
    with pytest.raises(ValueError, match=r"^visual_cond: has 768-d"):
        sampler.sample(model, text, duration=0.0, visual_cond=visual, **args)
    with pytest.raises(ValueError, match=r"^text_cond: has 768-d"):
        sampler.sample(model, random_text_features(), duration=1.0, **args)
    with pytest.raises(ValueError, match=r"^overlap_seconds: 2 s must be shorter"):
        sampler.sample(model, text, duration=1.0, **{**args, "window_seconds": 1.0, "overlap_seconds": 2.0})
    with pytest.raises(ValueError, match=r"^samples: latents have 128 channels"):
        node("SyncFoleyVAEDecode").decode(loaded["vae"], {"samples": torch.zeros(1, 128, 10)})
    audio = {"waveform": torch.zeros(1, 1, 4800), "sample_rate": 48000}
    with pytest.raises(ValueError, match=r"^video: connect"):
        node("SyncFoleyMuxVideo").mux(audio, "x", "drop", 0.5, "mp4")
    with pytest.raises(ValueError, match=r"^original_audio: IMAGE frames"):
        node("SyncFoleyMuxVideo").mux(audio, "x", "mix", 0.5, "mp4", images=torch.zeros(4, 8, 8, 3), fps=4.0)
    with pytest.raises(ValueError, match=r"^filename_prefix: .*outside the output folder"):
        node("SyncFoleySaveAudio").save(audio, "../escape", "wav")


def test_lora_node_changes_a_copy_and_names_its_input(folders, loaded):
    from syncfoley.models.lora import save_lora

    base = loaded["model"]
    name, module = next((n, m) for n, m in base.network.named_modules() if getattr(m, "weight", None) is not None
                        and m.weight.ndim == 2)
    before = module.weight.clone()
    down, up = torch.ones(1, before.shape[1]), torch.ones(before.shape[0], 1)
    save_lora(Path(host_module.host().model_dirs()[0]) / "test_lora.safetensors", {name: (down, up)}, alpha=1.0)
    try:
        tuned, = node("SyncFoleyLoRA").apply(base, "test_lora.safetensors", 0.5)
        assert torch.allclose(dict(tuned.network.named_modules())[name].weight, before + 0.5)
        assert tuned.family is base.family
        assert torch.equal(module.weight, before)  # the cached base model is left alone
        with pytest.raises(FileNotFoundError, match=r"^lora_name: .*'missing_lora\.safetensors' not found"):
            node("SyncFoleyLoRA").apply(base, "missing_lora.safetensors", 1.0)
        with pytest.raises(ValueError, match=r"^lora_name: .*not a LoRA adapter"):
            node("SyncFoleyLoRA").apply(base, "tiny_vae.safetensors", 1.0)
    finally:
        (Path(host_module.host().model_dirs()[0]) / "test_lora.safetensors").unlink()


def test_sampler_reports_progress_per_step_and_stops_when_interrupted(folders, loaded):
    from conftest import random_text_features

    from syncfoley.nodes.host import Interrupted, host

    seen = []

    class Recorder:
        def update(self, value, total=None):
            seen.append((value, total))

        def close(self):
            seen.append("closed")

    saved = host().progress_factory
    configure(progress_factory=lambda total, description: Recorder())
    text = random_text_features(dim=loaded["model"].config.text_dim)
    args = (loaded["model"], text, 0, 3, "euler", "linear", 1.0, 1, 1.0, 0.0, 1.0, False)
    try:
        node("SyncFoleySampler").sample(*args)
        assert seen == [(1, 3), (2, 3), (3, 3), "closed"]
        host().interrupt_event.set()
        with pytest.raises(Interrupted):
            node("SyncFoleySampler").sample(*args)
    finally:
        host().interrupt_event.clear()
        configure(progress_factory=saved)


# Pictures -----------------------------------------------------------------------------------------------
def test_spectrogram_puts_low_tones_low(folders):
    rate = 48000
    low, high = torch.from_numpy(tone(1.0, rate, frequency=300.0)), torch.from_numpy(tone(1.0, rate, frequency=6000.0))
    audio = {"waveform": torch.stack([low, high]), "sample_rate": rate}
    returned = node("SyncFoleySpectrogram").draw(audio, 200, 128)
    images = returned["result"][0]
    assert images.shape == (2, 128, 200, 3) and images.min() >= 0 and images.max() <= 1
    brightest = images.sum(-1).mean(-1).argmax(-1)  # row with the most energy; row 0 is the top
    assert brightest[0] > brightest[1] + 20
    files = [folders / "output" / e["subfolder"] / e["filename"] for e in returned["ui"]["images"]]
    with av.open(str(files[0])) as container:  # the preview is a real PNG of the same picture
        picture = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(picture.astype(int) - (images[0] * 255).round().numpy().astype(int)).max() <= 1


def test_onset_and_motion_curves_peak_where_things_happen():
    rate = 48000
    waveform = torch.zeros(1, rate)
    waveform[0, 30000:30100] = 0.8  # a click at 0.625 s
    onset = onset_strength(waveform, rate)
    assert abs(int(onset.argmax()) - 62.5) <= 3  # 100 values per second
    frames = torch.full((20, 16, 16, 3), 0.2)
    frames[12:] = 0.9
    motion = motion_energy(frames)
    assert int(motion.argmax()) == 12 and motion[13:].max() == 0 and motion[:12].max() == 0


def _write_cut_video(path: Path, fps: int, count: int, cut: int) -> None:
    """Grey frames that turn white at frame `cut` (an abrupt change and nothing else)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(count):
            picture = np.full((48, 64, 3), 230 if index >= cut else 40, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_sync_plot_motion_peaks_at_the_cut(folders):
    _write_cut_video(folders / "input" / "cut.mp4", fps=25, count=50, cut=30)  # cut at 1.2 s of 2 s
    video = node("SyncFoleyLoadVideo").load("cut.mp4", 0.0, 0.0, 10, 64)[0]
    audio = {"waveform": torch.zeros(1, 1, 96000), "sample_rate": 48000}
    width, height = 406, 120
    returned = node("SyncFoleySyncPlot").draw(audio, width, height, video=video)
    image = returned["result"][0][0]
    assert image.shape == (height, width, 3) and image.min() >= 0 and image.max() <= 1
    plot = image[18:height - 16, 6:width - 6]  # the plot area inside the margins
    fill = torch.tensor([0.25, 0.8, 0.95]) * 0.55
    filled = (plot - fill).abs().sum(-1) < 0.02
    heights = filled.sum(0)  # filled pixels per column: motion energy
    assert abs(int(heights.argmax()) - 1.2 / 2.0 * (plot.shape[1] - 1)) <= 4
    assert heights.max() > 0.9 * plot.shape[0]
    assert (folders / "output" / "previews" / "sync_plot_00001.png").stat().st_size > 100


def test_png_encoder_round_trips(tmp_path):
    picture = torch.rand(7, 5, 3)
    path = tmp_path / "p.png"
    path.write_bytes(encode_png(picture))
    with av.open(str(path)) as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert np.array_equal(decoded, (picture * 255).round().to(torch.uint8).numpy())
