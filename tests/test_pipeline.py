"""The pipeline end to end on tiny models: a real video file in, audio out."""
from __future__ import annotations

import pytest
import torch
from media_fixtures import make_video

from syncfoley.pipeline import FoleyModels, FoleyPipeline, encode_text, encode_video
from syncfoley.pipeline.encode import chunk_seconds
from syncfoley.sampling.generate import SamplingOptions
from syncfoley.sampling.guidance import CFG, SyncCFG


@pytest.fixture(scope="module")
def models(tiny_models):
    return FoleyModels.from_files(tiny_models["dit"], tiny_models["vae"], tiny_models["synchformer"],
                                  tiny_models["clap"], tiny_models["siglip"], precision="fp32", device="cpu")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    make_video(path, fps=30, count=60, size=(48, 40))  # 2 s
    return path


def test_text_is_encoded_with_its_negative_prompt_in_one_batch(models):
    text = encode_text(models.text_encoder, "a dog barks", "noisy, harsh")
    both = models.text_encoder.encode(["noisy, harsh", "a dog barks"])
    assert torch.equal(text.positive, both[1:2]) and torch.equal(text.negative, both[:1])


def test_video_features_follow_each_stream_rate(models, video):
    visual = encode_video(video, models.image_encoder, models.sync_encoder)
    assert visual.duration == pytest.approx(2.0)
    assert visual.clip.shape[:2] == (1, 16)  # 8 fps
    assert visual.sync.shape[:2] == (1, 5 * 8)  # (50 - 16) // 8 + 1 segments of 8 tokens
    assert visual.static_clip.shape == (1, 1, visual.clip.shape[-1])
    assert visual.static_sync.shape == (1, 8, visual.sync.shape[-1])
    # The static anchor is the first frame: its SigLIP features equal the clip's first frame.
    torch.testing.assert_close(visual.static_clip[0, 0], visual.clip[0, 0])


def test_chunks_fall_on_both_stream_grids():
    from fractions import Fraction

    assert chunk_seconds(Fraction(8), Fraction(25)) == 16
    assert chunk_seconds(Fraction(8), Fraction(25), at_least=1) == 8
    assert chunk_seconds(Fraction(10), Fraction(25), at_least=1) == Fraction(8, 5)


def test_long_videos_encode_in_chunks_identically(models, tmp_path, monkeypatch):
    path = tmp_path / "long.mp4"
    make_video(path, fps=25, count=500, size=(32, 32))  # 20 s: chunks of 8 s, 8 s and 4 s
    whole = encode_video(path, models.image_encoder, models.sync_encoder)
    monkeypatch.setattr("syncfoley.pipeline.encode.CHUNK_SECONDS", 1)
    done = []
    chunked = encode_video(path, models.image_encoder, models.sync_encoder, progress=done.append)
    assert done == [8.0, 16.0, 20.0]
    assert chunked.duration == whole.duration == pytest.approx(20.0)
    assert whole.clip.shape[1] == 160 and whole.sync.shape[1] == 61 * 8
    torch.testing.assert_close(chunked.clip, whole.clip, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked.sync, whole.sync, rtol=1e-5, atol=1e-5)


def test_too_short_video_is_refused(models, tmp_path):
    path = tmp_path / "short.mp4"
    make_video(path, fps=25, count=10, size=(32, 32))
    with pytest.raises(ValueError, match="at least 0.64 s"):
        encode_video(path, models.image_encoder, models.sync_encoder)


@pytest.mark.parametrize("guidance", [CFG(4.5), SyncCFG(4.5, 1.0)])
def test_pipeline_makes_audio_for_a_video(models, video, guidance):
    result = FoleyPipeline(models, device="cpu")(video, "footsteps", guidance=guidance,
                                                 options=SamplingOptions(steps=2, takes=2, seed=1))
    assert result.sample_rate == 48000
    assert result.waveform.shape == (2, 1, 96000)
    assert torch.isfinite(result.waveform).all() and result.waveform.abs().max() <= 1.0
    assert (result.waveform[0] - result.waveform[1]).abs().max() > 0  # two takes, two seeds


def test_pipeline_without_video_needs_a_duration(models):
    pipeline = FoleyPipeline(models, device="cpu")
    result = pipeline(None, "rain on a tin roof", options=SamplingOptions(steps=1), duration=1.0)
    assert result.waveform.shape == (1, 1, 48000) and result.visual is None


@pytest.mark.parametrize("gpu_blocks", [0, 2, 99])
def test_streamed_sampling_equals_plain_sampling(models, gpu_blocks):
    text = encode_text(models.text_encoder, "rain", "")
    options = SamplingOptions(steps=2, seed=4)
    plain = FoleyPipeline(models, device="cpu").sample(text, None, options=options, duration=1.0)
    streamed = FoleyPipeline(models, device="cpu", gpu_blocks=gpu_blocks).sample(text, None, options=options,
                                                                                duration=1.0)
    assert torch.equal(plain, streamed)
    blocks = [*models.model.network.triple_blocks, *models.model.network.single_blocks]
    assert all(not b._forward_pre_hooks and not b._forward_hooks for b in blocks)


def test_gpu_blocks_must_not_be_negative(models):
    with pytest.raises(ValueError, match="gpu_blocks must be 0 or more"):
        FoleyPipeline(models, device="cpu", gpu_blocks=-1)
