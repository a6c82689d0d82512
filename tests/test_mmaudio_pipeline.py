"""MMAudio through the package's one pipeline: the release's Euler + CFG loop reproduced by our sampler
and guidance, model sets found by name, SyncCFG, long videos in windows, errors across families."""
from __future__ import annotations

import pytest
import torch
from conftest import max_abs_error_ratio, mmaudio_vectors
from tiny_mmaudio import nominal_seconds, write_tiny_mmaudio

from syncfoley.demo.bundle import example_video
from syncfoley.families import as_flow
from syncfoley.families.mmaudio import MMAUDIO
from syncfoley.models.checkpoint import CheckpointError
from syncfoley.models.mmaudio import MMAudioNet
from syncfoley.pipeline import FoleyModels, FoleyPipeline, find_model_files, load_foley_model, load_vae
from syncfoley.sampling.features import TextFeatures, VisualFeatures
from syncfoley.sampling.generate import SamplingOptions, generate_latents
from syncfoley.sampling.guidance import CFG, SyncCFG


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmaudio")
    write_tiny_mmaudio(root, mode="16k")
    return root


@pytest.fixture(scope="module")
def models(tiny_set):
    return FoleyModels.from_folder(tiny_set, device="cpu")


@pytest.mark.parametrize("name", mmaudio_vectors("mmaudio_network", "mmaudio_tiny", "mmaudio_tiny_v2"))
def test_the_release_sampling_loop_through_our_sampler_and_guidance(mmaudio_parity, tmp_path, name):
    """The vector's 4 Euler steps with CFG 4.5 against the learned empty conditions, run by
    generate_latents with the MMAudio adapter: its time convention, layout and normalisation."""
    config, state_dict, io = mmaudio_parity(name)
    torch.save(state_dict, tmp_path / "mmaudio.pth")
    model = load_foley_model(tmp_path / "mmaudio.pth", "fp32", "cpu")
    assert model.family is MMAUDIO
    network = model.network
    seconds = nominal_seconds(network.config, io["noise"].shape[1])  # 2 s for the public vectors
    assert model.latent_length(seconds) == io["noise"].shape[1]
    empty_text = network.empty_string_feat[None]
    for b in range(io["noise"].shape[0]):
        text = TextFeatures(io["text"][b:b + 1], empty_text)
        visual = VisualFeatures(io["clip"][b:b + 1], io["sync"][b:b + 1], seconds)
        noise = io["noise"][b:b + 1].transpose(1, 2)  # the release's [B, La, C] in the sampler's layout
        latents = generate_latents(model, text, visual, CFG(config["cfg_strength"]),
                                   SamplingOptions(steps=config["steps"]), noise=noise)
        expected = io["expected_sample_unnormalized"][b:b + 1].transpose(1, 2)
        assert max_abs_error_ratio(latents, expected) < 1e-4
        normalised = as_flow(network).from_vae(latents)
        assert max_abs_error_ratio(normalised, io["expected_sample"][b:b + 1].transpose(1, 2)) < 1e-4


def test_a_folder_of_mmaudio_files_is_found_and_loads_as_one_set(tiny_set, models):
    files = find_model_files(tiny_set)
    assert files.family is MMAUDIO
    assert {part: path.name for part, path in files.paths.items()} == {
        "model": "mmaudio_small_16k.pth", "vae": "v1-16.pth", "vocoder": "best_netG",
        "synchformer": "synchformer_state_dict.pth", "clip": "open_clip_pytorch_model.bin"}
    assert models.family is MMAUDIO and models.model.defaults.steps == 25 and models.model.defaults.negative_prompt == ""
    assert models.text_encoder.clip is models.image_encoder.clip  # one CLIP for both towers
    assert models.vae.sample_rate == 16000 and models.vae.config.latent_dim == models.model.latent_dim


def test_both_modes_in_one_folder_need_a_choice_and_pair_vae_and_vocoder_by_mode(tmp_path):
    write_tiny_mmaudio(tmp_path, mode="16k")
    write_tiny_mmaudio(tmp_path, mode="44k")
    with pytest.raises(FileNotFoundError, match=r"found mmaudio_large_44k_v2\.pth, mmaudio_small_16k\.pth for the "
                                                r"model .*choose one with model="):
        find_model_files(tmp_path)
    files = find_model_files(tmp_path, model="mmaudio_large_44k_v2.pth")
    assert (files.paths["vae"].name, files.paths["vocoder"].name) == ("v1-44.pth", "bigvgan_v2_44khz_128band_512x")
    files = find_model_files(tmp_path, model="mmaudio_small_16k.pth")
    assert (files.paths["vae"].name, files.paths["vocoder"].name) == ("v1-16.pth", "best_netG")


def test_video_to_audio_end_to_end_with_the_models_defaults(models):
    result = FoleyPipeline(models, device="cpu")(example_video("syncfoley-example.mp4"), "a ball bounces",
                                                 options=SamplingOptions(steps=2))
    assert result.sample_rate == 16000 and result.text.negative_prompt == ""  # MMAudio's own negative prompt
    assert result.waveform.shape == (1, 1, round(3.84 * 16000)) and result.waveform.abs().max() > 0
    assert result.latents.shape == (1, 20, models.model.latent_length(3.84))
    assert result.text.encoder == "mmaudio-clip" and result.visual.image_encoder == "mmaudio-clip"


def test_sync_cfg_with_zero_sync_scale_is_bitwise_cfg(models):
    pipeline = FoleyPipeline(models, device="cpu")
    text = pipeline.encode_text("a ball bounces")
    visual = pipeline.encode_video(example_video("syncfoley-example.mp4"), static_anchor=True)
    options = SamplingOptions(steps=2, seed=5)
    cfg = pipeline.sample(text, visual, CFG(4.5), options)
    for anchor in ("static", "shift"):
        assert torch.equal(pipeline.sample(text, visual, SyncCFG(4.5, 0.0, anchor), options), cfg)
    assert (pipeline.sample(text, visual, SyncCFG(4.5, 2.0), options) - cfg).abs().max() > 1e-4


def test_thirty_seconds_in_windows_keep_the_memory_of_one(models):
    """MMAudio defaults to 8 s windows (its training length): the working memory of a 30 s clip stays
    near one window's, where the whole clip at once needs several times more."""
    from syncfoley.perf.memory import track_peak_memory

    model = models.model
    pipeline = FoleyPipeline(models, device="cpu")
    text = pipeline.encode_text("rain")
    dim = model.config.clip_dim, model.config.sync_dim

    def visual(seconds):
        segments = (round(seconds * 25) - 16) // 8 + 1
        return VisualFeatures(torch.randn(1, int(seconds * 8), dim[0]), torch.randn(1, segments * 8, dim[1]), seconds)

    def peak(seconds, window):
        options = SamplingOptions(steps=1, window_seconds=window)
        assert options.resolved(model).window_seconds == (8.0 if window is None else window)
        with track_peak_memory("cpu") as measured:
            generate_latents(model, text, visual(seconds), CFG(4.5), options)
        return measured.peak_bytes

    one_window = peak(8.0, None)
    assert peak(30.0, None) < 1.5 * one_window  # the model's default windows
    assert peak(30.0, 0.0) > 2.5 * one_window  # the whole clip at once


def test_parts_of_the_other_family_are_refused_with_both_named(tiny_set, tiny_models, models):
    from syncfoley.pipeline import encode_text

    with pytest.raises(CheckpointError, match=r"is an MMAudio mel VAE checkpoint .*, but the model loader takes a "
                                              r"HunyuanVideo-Foley or MMAudio diffusion model"):
        load_foley_model(tiny_set / "foley" / "v1-16.pth")
    with pytest.raises(CheckpointError, match=r"is a HunyuanVideo-Foley MM-DiT .*but the VAE loader takes a DAC-VAE"):
        load_vae(tiny_models["dit"])
    with pytest.raises(CheckpointError, match="decodes to mel spectrograms: give it its vocoder"):
        load_vae(tiny_set / "foley" / "v1-16.pth")
    clap_features = encode_text(FoleyModels.from_folder(tiny_models["dit"].parent.parent).text_encoder, "rain", "")
    with pytest.raises(ValueError, match=r"text_cond: was encoded with CLAP \(HunyuanVideo-Foley\), but the model is "
                                         r"MMAudio, which reads CLIP \(MMAudio\)"):
        models.model.check_conditions(clap_features, None)
    with pytest.raises(TypeError, match="is not a network of a model family"):
        as_flow(torch.nn.Linear(2, 2))
    assert isinstance(models.model.network, MMAudioNet)


def test_windows_of_any_length_batch_the_branches_with_and_without_video(models):
    """A window's video features and the empty features derived from its latent count alone can differ
    by a Synchformer segment: the empty branch must take the video's counts to share the batch."""
    pipeline = FoleyPipeline(models, device="cpu")
    text = pipeline.encode_text("a ball bounces")
    visual = pipeline.encode_video(example_video("syncfoley-example.mp4"), static_anchor=False)
    for window in (1.28, 1.6, 2.5):
        options = SamplingOptions(steps=1, window_seconds=window, overlap_seconds=0.32)
        latents = pipeline.sample(text, visual, CFG(4.5), options)
        assert latents.shape == (1, 20, models.model.latent_length(visual.duration)) and torch.isfinite(latents).all()
