"""The built-in demo model: its files load everywhere by the name "syncfoley-demo", its encoders see what
the synthetic world does, `syncfoley generate` makes a video with sound, and the demo workflow runs
headless with an empty models folder. Also the small DAC-VAE trainer the demo's VAE comes from."""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from syncfoley import NODE_CLASS_MAPPINGS
from syncfoley.cli import main
from syncfoley.demo import bundle
from syncfoley.demo.encoders import (DemoImageEncoder, DemoSyncEncoder, DemoTextEncoder, load_demo_encoder,
                                     save_demo_encoder)
from syncfoley.demo.world import generate_clip, write_clip
from syncfoley.models.checkpoint import CheckpointError
from syncfoley.nodes import host as host_module
from syncfoley.nodes.host import configure
from syncfoley.pipeline import load_foley_model, load_image_encoder, load_synchformer, load_text_encoder
from syncfoley.pipeline import load_vae
from syncfoley.pipeline.encode import segments_of

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
DEMO = bundle.DEMO_MODEL


def _frames(clip) -> torch.Tensor:
    return clip.frames.permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.fixture(scope="module")
def demo_models():
    return bundle.demo_models(device="cpu")


@pytest.fixture
def empty_host(tmp_path):
    """A host whose models folder and input folder are empty, as on a fresh install."""
    saved = {k: getattr(host_module._HOST, k) for k in ("input_dir", "output_dir", "models_dir", "device")}
    (tmp_path / "input").mkdir()
    configure(models_dir=tmp_path / "models", input_dir=tmp_path / "input", output_dir=tmp_path / "output", device="cpu")
    yield tmp_path
    configure(**saved)


def test_the_shipped_files_are_small_and_chain_their_widths(demo_models):
    sizes = {part: bundle.demo_file(part).stat().st_size for part in bundle.FILES}
    assert sum(sizes.values()) < 10 * 2**20, sizes
    config = demo_models.model.config
    assert config.latent_dim == demo_models.vae.config.latent_dim
    assert demo_models.vae.sample_rate / demo_models.vae.hop_length == config.latent_rate == 50
    text = demo_models.text_encoder.encode(["a red metal ball bounces on the floor"])
    assert text.shape == (1, 77, config.text_dim)
    assert demo_models.image_encoder.frame_spec.fps == config.clip_fps
    assert demo_models.sync_encoder.frame_spec.fps == config.sync_fps
    manifest = json.loads((Path(bundle.__file__).parent / "manifest.json").read_text())
    assert manifest["bytes"] == sizes


def test_the_loaders_recognise_the_demo_files_as_one_more_model_set(demo_models):
    from syncfoley.families.demo import DEMO as DEMO_FAMILY
    from syncfoley.pipeline import find_model_files

    assert isinstance(load_text_encoder(bundle.demo_file("clap")), DemoTextEncoder)
    assert isinstance(load_image_encoder(bundle.demo_file("siglip")), DemoImageEncoder)
    assert isinstance(load_synchformer(bundle.demo_file("synchformer"), "fp16"), DemoSyncEncoder)
    model = load_foley_model(bundle.demo_file("dit"))
    assert model.config == demo_models.model.config and model.family is DEMO_FAMILY  # the file names its family
    assert model.defaults.steps == 25 and demo_models.family is DEMO_FAMILY
    assert load_vae(bundle.demo_file("vae")).config == demo_models.vae.config
    assert find_model_files(DEMO).paths == {part: bundle.demo_file(name) for part, name in (
        ("model", "dit"), ("vae", "vae"), ("synchformer", "synchformer"), ("text_encoder", "clap"),
        ("image_encoder", "siglip"))}
    with pytest.raises(CheckpointError, match="is the demo text encoder; expected the demo sync encoder"):
        load_synchformer(bundle.demo_file("clap"))
    with pytest.raises(ValueError, match="unknown precision"):
        load_text_encoder(bundle.demo_file("clap"), "fp64")


def test_node_loaders_offer_the_demo_first_and_load_it_from_an_empty_models_folder(empty_host):
    for name, (input_name, kind) in {"SyncFoleyModelLoader": ("model_name", "FoleyFlow"),
                                     "SyncFoleyVAELoader": ("vae_name", "DacVae"),
                                     "SyncFoleySynchformerLoader": ("synchformer_name", "DemoSyncEncoder"),
                                     "SyncFoleyTextEncoderLoader": ("folder", "DemoTextEncoder"),
                                     "SyncFoleyImageEncoderLoader": ("folder", "DemoImageEncoder")}.items():
        cls = NODE_CLASS_MAPPINGS[name]
        choices, options = cls.INPUT_TYPES()["required"][input_name]
        assert choices == [DEMO] and options["default"] == DEMO
        precision = cls.INPUT_TYPES()["required"]["precision"][1]["default"]
        loaded = getattr(cls(), cls.FUNCTION)(DEMO, precision)[0]
        assert type(loaded).__name__ == kind
    foley = empty_host / "models" / "foley"
    foley.mkdir(parents=True)
    (foley / "mine.safetensors").write_bytes(b"")
    choices, options = NODE_CLASS_MAPPINGS["SyncFoleyModelLoader"].INPUT_TYPES()["required"]["model_name"]
    assert choices == [DEMO, "mine.safetensors"] and options["default"] == "mine.safetensors"


def test_the_sync_encoder_puts_its_kinks_at_the_impacts_and_none_on_a_still_picture():
    clip = generate_clip(3, duration=3.84, size=(64, 64), objects=1)
    encoder = DemoSyncEncoder.create()
    segments = segments_of(_frames(clip))
    features = encoder.extract_visual(segments[None])[0].flatten(0, 1)  # [tokens, D]
    tokens = features.shape[0]
    kink = features[:, 2 * 6:3 * 6].max(1).values  # offset 0, every hue
    times = (torch.arange(tokens) + 0.5) * clip.duration / tokens  # where the DiT puts each token
    loud = [e.time for e in clip.events if e.loudness > 0.5]
    assert loud
    for event in loud:
        near = (times - event).abs() < 0.06
        assert kink[near].max() > 0.3, (event, kink[near])
    quiet = torch.stack([(times - e.time).abs() > 0.15 for e in clip.events]).all(0)
    assert kink[quiet].max() < 0.15  # far from any contact the centroids move smoothly
    still = encoder.extract_visual(segments[0, :1].expand(16, -1, -1, -1)[None, None])  # SyncCFG's static anchor
    assert torch.all(still[..., :5 * 6] == 0)


def test_the_image_encoder_sees_colour_and_place_and_the_text_encoder_pads_to_77():
    red = generate_clip(2, duration=0.5, size=(64, 64), materials=["metal"])
    blue = generate_clip(2, duration=0.5, size=(64, 64), materials=["wood"])
    image = DemoImageEncoder.create()
    red_features, blue_features = image.encode(_frames(red)[:1]), image.encode(_frames(blue)[:1])
    assert red_features.shape == (1, 40)
    assert red_features[0, 0] > 0.3 and blue_features[0, 0] < 0.05  # hue class 0 is red
    assert blue_features[0, 4] > 0.3  # hue class 4 is blue
    text = DemoTextEncoder.create(dim=32)
    tokens = text.encode(["a red metal ball", "", "a Red metal ball!"])
    assert tokens.shape == (3, 77, 32)
    assert torch.equal(tokens[0, :4], tokens[2, :4]) and torch.equal(tokens[1], tokens[0, -1].expand(77, 32))
    assert text.token_ids("zebra crossing")[:2] == text.token_ids("zebra crossing")[:2]
    assert min(text.token_ids("zebra")[:1]) > len(text.vocabulary)


def test_demo_encoder_files_round_trip(tmp_path):
    encoder = DemoTextEncoder.create(dim=16, seed=3)
    path = save_demo_encoder(encoder, tmp_path / "text.safetensors")
    loaded = load_demo_encoder(path, "text_encoder")
    assert torch.equal(loaded.encode(["a glass ball"]), encoder.encode(["a glass ball"]))
    with pytest.raises(CheckpointError, match="not a demo encoder"):
        load_demo_encoder(bundle.demo_file("dit"), "text_encoder")


def test_the_demo_model_follows_the_picture(demo_models, tmp_path):
    """Two takes of one clip agree on where the loud frames are, and those are the impacts."""
    from syncfoley.pipeline import FoleyPipeline
    from syncfoley.sampling.generate import SamplingOptions
    from syncfoley.sampling.guidance import CFG

    clip = generate_clip(11, duration=3.84, size=(64, 64), objects=1)
    video = write_clip(clip, tmp_path / "clip.mp4")
    result = FoleyPipeline(demo_models, device="cpu")(video, clip.caption, guidance=CFG(4.5),
                                                    options=SamplingOptions(steps=10, takes=2))
    assert result.waveform.shape == (2, 1, round(3.84 * result.sample_rate))
    envelope = result.waveform[:, 0].abs().unflatten(-1, (-1, result.sample_rate // 50)).amax(-1)  # [2, frames]
    first = min(e.time for e in clip.events)
    before, after = envelope[:, : int(first * 50) - 3], envelope[:, int(first * 50): int(first * 50) + 5]
    assert torch.all(after.amax(-1) > 3 * before.amax(-1)), (before.amax(-1), after.amax(-1))


def test_the_demo_model_beats_the_random_onset_baseline(demo_models, tmp_path):
    """On a few unseen clips the onsets of its sound match the true impacts far better than the same
    sound rolled in time (`syncfoley eval-sync`'s baseline); demo/manifest.json holds the 50-clip numbers."""
    from syncfoley.demo.world import write_dataset
    from syncfoley.evaluation.sync_eval import evaluate, load_held_out
    from syncfoley.pipeline import FoleyPipeline
    from syncfoley.sampling.generate import SamplingOptions

    write_dataset(tmp_path, 6, seed=99, duration=3.84, size=(64, 64))
    pipeline = FoleyPipeline(demo_models, device="cpu")

    def generated(clip):
        result = pipeline(str(clip.video), clip.caption, options=SamplingOptions(steps=12))
        return result.waveform[0], result.sample_rate

    report = evaluate(load_held_out(tmp_path), {"cfg": generated}, draws=4)["sources"]["cfg"]
    assert report["onset"]["reference"] > 20
    assert report["onset"]["f1"] > report["shifted"]["f1"] + 0.1, report  # 0.60 against 0.42 here


def test_generate_without_arguments_writes_a_video_with_sound(tmp_path, capsys):
    out = tmp_path / "out" / "demo.mp4"
    assert main(["generate", "--out", str(out), "--steps", "2", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "synthetic world" in printed
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        audio = container.streams.audio[0]
        seconds = sum(frame.samples for frame in container.decode(audio)) / audio.rate
    assert seconds == pytest.approx(3.84, abs=0.05)
    with av.open(str(out.with_suffix(".wav"))) as container:
        rate = container.streams.audio[0].rate
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert samples.size == pytest.approx(3.84 * rate, abs=2)
    assert np.abs(samples).max() > 0  # not silence
    assert (tmp_path / "out" / "demo_input.mp4").is_file()


def test_generate_streamed_or_compiled_writes_the_same_sound(tmp_path, capsys, monkeypatch):
    from syncfoley.models.dit import FoleyDiT

    def sound(out, *extra):
        assert main(["generate", "--out", str(out), "--steps", "2", "--seed", "3", *extra]) == 0
        with av.open(str(out.with_suffix(".wav"))) as container:
            return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])

    plain = sound(tmp_path / "plain.mp4")
    streamed = sound(tmp_path / "streamed.mp4", "--offload", "--gpu-blocks", "1")
    compiled = []
    monkeypatch.setattr(FoleyDiT, "compile_blocks", lambda self, **options: compiled.append(self) or self)
    assert np.array_equal(sound(tmp_path / "compiled.mp4", "--compile"), plain) and len(compiled) == 1
    assert plain.size > 0 and np.array_equal(plain, streamed)
    assert main(["generate", "--out", str(tmp_path / "x.mp4"), "--gpu-blocks", "-2"]) == 1
    assert "--gpu-blocks must be 0 or more" in capsys.readouterr().err


def test_generate_reports_a_missing_video(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "x.mp4")]) == 1
    assert "no video file at" in capsys.readouterr().err


def test_the_demo_workflow_runs_headless_with_no_model_files(empty_host):
    from syncfoley.runner import Executor, Override, Workflow, apply_overrides, load_workflow

    workflow = load_workflow(WORKFLOWS / "demo.api.json")
    sampler = next(i for i, e in workflow.prompt.items() if e["class_type"] == "SyncFoleySampler")
    prompt = apply_overrides(workflow.prompt, [Override("steps", 2, sampler)], NODE_CLASS_MAPPINGS)
    result = Executor(NODE_CLASS_MAPPINGS).run(Workflow(prompt, source=workflow.source))
    videos = [p for p in result.files if p.suffix == ".mp4"]
    assert videos and not (empty_host / "models").exists()
    with av.open(str(videos[0])) as container:
        audio = container.streams.audio[0]
        assert sum(f.samples for f in container.decode(audio)) / audio.rate == pytest.approx(3.84, abs=0.05)
    assert not any((empty_host / "input").iterdir())  # the built-in example clip, nothing put in place


def test_an_impact_at_the_clip_end_is_cut_not_an_error():
    from syncfoley.demo.materials import MATERIALS
    from syncfoley.demo.sounds import impact

    first, sound = impact(MATERIALS["rubber"], 100.0, 1.0, 999 / 16000, 16000, 1000, np.random.default_rng(0))
    assert first == 999 and sound.shape == (1,)


# The VAE trainer --------------------------------------------------------------------------------------
def _vae_recipe(tmp_path, **train) -> Path:
    lines = ['name = "v"', 'output = "run"', "[data]", 'videos = "clips"', "crop_seconds = 0.1", "batch_size = 2",
             "[model]", "encoder_dim = 4", "encoder_rates = [2, 5]", "latent_dim = 4", "decoder_dim = 8",
             "decoder_rates = [5, 2]", "sample_rate = 500", "[loss]", "stft_windows = [16, 32]", "[train]",
             *(f"{k} = {v}" for k, v in {"max_steps": 3, "log_every": 1, **train}.items())]
    path = tmp_path / "vae.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_vae_trainer_writes_a_loadable_vae_with_unit_scale_latents(tmp_path):
    from syncfoley.pipeline.decode import encode_waveform
    from syncfoley.training.vae import load_vae_config, train_vae

    config = load_vae_config(_vae_recipe(tmp_path))
    generator = torch.Generator().manual_seed(0)
    clips = [torch.randn(400, generator=generator) * 0.3 + 0.2 for _ in range(3)]
    lines = []
    result = train_vae(config, log=lines.append, clips=clips)
    assert result.path == tmp_path / "run" / "v.safetensors" and len(lines) == 5
    vae = load_vae(result.path)
    assert vae.sample_rate == 500 and vae.hop_length == 10
    latents = torch.cat([encode_waveform(vae, c.view(1, 1, -1), 500)[0].T for c in clips])
    assert latents.mean(0).abs().max() < 1e-4 and latents.square().mean().sqrt() == pytest.approx(1.0, rel=1e-4)
    log = json.loads((tmp_path / "run" / "v_log.json").read_text())
    assert [h["step"] for h in log["history"]] == [1, 2, 3]


def test_a_vae_recipe_with_a_crop_off_the_hop_is_refused(tmp_path):
    from syncfoley.training.config import ConfigError
    from syncfoley.training.vae import load_vae_config

    recipe = _vae_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace("crop_seconds = 0.1", "crop_seconds = 0.105"))
    with pytest.raises(ConfigError, match=r"crop_seconds must be a positive multiple of the hop \(0.02 s\)"):
        load_vae_config(recipe)
