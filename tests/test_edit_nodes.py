"""Editing where users meet it: VAE Encode of any AUDIO, Foley Time Mask / Extend Latent, the sampler's `latent`
and `denoise` inputs, VAE Decode keeping the original outside the mask, the Python API for both families, and
the errors, each naming its input."""
from __future__ import annotations

import pytest
import torch
from edit_fixtures import FAMILIES, family_set, stereo_sound

from syncfoley import NODE_CLASS_MAPPINGS
from syncfoley.nodes import host as host_module
from syncfoley.nodes.host import configure
from syncfoley.pipeline.decode import decode_latents, encode_waveform
from syncfoley.pipeline.edit import EditOptions, read_audio
from syncfoley.sampling.generate import SamplingOptions


def node(name):
    return NODE_CLASS_MAPPINGS[name]()


@pytest.fixture()
def sets(tiny_models, tmp_path_factory):
    """family name -> the tiny set of edit_fixtures (built once per session)."""
    folder = tmp_path_factory.getbasetemp() / "edit_mmaudio"
    return lambda name: family_set(name, tiny_models, folder)


@pytest.fixture(scope="module")
def loaded(tiny_models):
    saved = {k: getattr(host_module._HOST, k) for k in ("models_dir", "device")}
    configure(models_dir=tiny_models["dit"].parent.parent, device="cpu")
    models = dict(
        model=node("SyncFoleyModelLoader").load("tiny_dit.safetensors", "auto")[0],
        vae=node("SyncFoleyVAELoader").load("tiny_vae.safetensors", "fp32")[0],
        text=node("SyncFoleyTextEncode").encode(
            node("SyncFoleyTextEncoderLoader").load("clap", "fp32")[0], "glass breaks", "noisy")[0],
    )
    configure(**saved)
    return models


@pytest.fixture(scope="module")
def encoded(loaded):
    """The 2 s stereo sound through Foley VAE Encode, and the VAE round trip of it."""
    latent, = node("SyncFoleyVAEEncode").encode(loaded["vae"], stereo_sound())
    return latent, decode_latents(loaded["vae"], latent["samples"], 2.0)[0]


def sampler(loaded, latent=None, denoise=1.0, duration=0.0, **extra):
    return node("SyncFoleySampler").sample(loaded["model"], loaded["text"], 7, 2, "euler", "linear", 1.0, 1, duration,
                                           0.0, 1.0, False, latent=latent, denoise=denoise, **extra)[0]


def test_vae_encode_takes_any_audio_and_says_where_its_latents_come_from(loaded, encoded):
    latent, _ = encoded
    assert latent["samples"].shape == (1, 16, 100) and latent["duration"] == pytest.approx(2.0)
    assert (latent["latent_dim"], latent["latent_rate"]) == (16, 50.0)
    assert latent["vae"] == "DAC-VAE (48000 Hz, 16-d)"
    mono = encode_waveform(loaded["vae"], stereo_sound()["waveform"].mean(1, keepdim=True), 44100)
    assert torch.equal(latent["samples"], mono)  # stereo is mixed down, then resampled


def test_time_mask_sampler_and_decode_redo_the_range_and_keep_the_rest(loaded, encoded):
    vae, (encoded, round_trip) = loaded["vae"], encoded
    marked, mask = node("SyncFoleyTimeMask").mark(encoded, 0.5, 1.2, 0.1)
    assert mask.shape == (1, 1, 100) and torch.equal(marked["noise_mask"], mask)
    assert mask[0, 0, 25:60].eq(1).all() and mask[0, 0, :20].eq(0).all() and mask[0, 0, 65:].eq(0).all()
    edited = sampler(loaded, marked)  # text-to-audio: the latent gives the length
    assert edited["family"] == "hunyuanvideo-foley" and edited["duration"] == pytest.approx(2.0)
    assert torch.equal(edited["original_samples"], encoded["samples"]) and torch.equal(edited["noise_mask"], mask)
    audio, = node("SyncFoleyVAEDecode").decode(vae, edited)
    hop = vae.hop_length
    before, after = slice(0, 19 * hop), slice(66 * hop, None)  # beyond the feather and the frame it blends into
    assert torch.equal(audio["waveform"][..., before], round_trip[..., before])
    assert torch.equal(audio["waveform"][..., after], round_trip[..., after])
    inside = slice(26 * hop, 59 * hop)
    assert (audio["waveform"][..., inside] - round_trip[..., inside]).abs().mean() > 1e-3
    nothing, _ = node("SyncFoleyTimeMask").mark(encoded, 0.5, 1.2, 0.1, mask=torch.zeros(1, 64, 7))
    audio, = node("SyncFoleyVAEDecode").decode(vae, sampler(loaded, nothing))
    assert torch.equal(audio["waveform"], round_trip)  # a mask of zeros: the VAE round trip itself


def test_chained_time_masks_add_up_and_a_sampler_output_starts_afresh(loaded, encoded):
    encoded, _ = encoded
    first, _ = node("SyncFoleyTimeMask").mark(encoded, 0.2, 0.4, 0.0)
    both, mask = node("SyncFoleyTimeMask").mark(first, 1.0, 1.2, 0.0)
    assert mask.sum() == 20 and mask[0, 0, 10:20].eq(1).all() and mask[0, 0, 50:60].eq(1).all()
    again, mask = node("SyncFoleyTimeMask").mark(sampler(loaded, both), 1.5, 1.6, 0.0)
    assert mask.sum() == 5 and "original_samples" not in again
    image_mask = torch.zeros(1, 32, 640)
    image_mask[:, :, 320:] = 1  # any MASK: its width spans the clip
    _, mask = node("SyncFoleyTimeMask").mark(encoded, 0.0, 0.1, 0.0, mask=image_mask)
    assert mask[0, 0, :49].eq(0).all() and mask[0, 0, 51:].eq(1).all()


def test_extend_latent_makes_room_that_the_sampler_fills(loaded):
    encoded, = node("SyncFoleyVAEEncode").encode(loaded["vae"], stereo_sound(1.0))
    longer, = node("SyncFoleyExtendLatent").extend(encoded, 0.2, 0.5, 0.1)
    assert longer["samples"].shape[-1] == 85 and longer["duration"] == pytest.approx(1.7)
    mask = longer["noise_mask"][0, 0]
    assert mask[:10].eq(1).all() and mask[60:].eq(1).all() and mask[15:55].eq(0).all()
    filled = sampler(loaded, longer)
    kept = mask == 0
    assert torch.equal(filled["samples"][..., kept], longer["samples"][..., kept])
    assert filled["samples"][..., 60:].abs().mean() > 0.1  # the padding's zeros became sound
    assert filled["sound_span"] == (10, 60)
    audio, = node("SyncFoleyVAEDecode").decode(loaded["vae"], filled)
    round_trip, rate = decode_latents(loaded["vae"], encoded["samples"], 1.0)
    first, last = int(0.32 * rate), int(1.08 * rate)  # beyond the feathers and the frames they blend into
    shift = int(0.2 * rate)  # the known second starts 0.2 s in
    assert torch.equal(audio["waveform"][..., first:last], round_trip[..., first - shift:last - shift])
    to_video, = node("SyncFoleyExtendLatent").extend(encoded, 0.0, 0.0, 0.1, total_duration=3.0)
    assert to_video["samples"].shape[-1] == 150 and to_video["duration"] == pytest.approx(3.0)


def test_denoise_1_without_a_latent_is_the_plain_sampler(loaded):
    plain = node("SyncFoleySampler").sample(loaded["model"], loaded["text"], 7, 2, "euler", "linear", 1.0, 1, 1.0,
                                            0.0, 1.0, False)[0]
    assert torch.equal(sampler(loaded, None, 1.0, duration=1.0)["samples"], plain["samples"])


def test_sampler_and_mask_errors_name_the_input(loaded, encoded, sets):
    vae, (encoded, _) = loaded["vae"], encoded
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"^denoise: must be above 0 and at most 1"):
            sampler(loaded, encoded, bad)
    with pytest.raises(ValueError, match=r"^denoise: 0.5 varies existing sound: connect a latent"):
        sampler(loaded, None, 0.5, duration=1.0)
    other, = node("SyncFoleyVAEEncode").encode(sets("mmaudio")["models"].vae, stereo_sound())
    with pytest.raises(ValueError, match=r"^latent: holds 20-channel latents \(from mel VAE \(16000 Hz, 20-d\)\) but "
                                         r".* samples 16-channel ones; encode the audio with this model's VAE"):
        sampler(loaded, other)
    with pytest.raises(ValueError, match=r"^latent: has 31.25 latent frames per second"):
        sampler(loaded, {**encoded, "latent_rate": 31.25})
    with pytest.raises(ValueError, match=r"^latent: was sampled by a mmaudio model, but this one is HunyuanVideo"):
        sampler(loaded, {**encoded, "family": "mmaudio"})
    with pytest.raises(ValueError, match=r"^latent: its noise_mask covers 90 latent frames but the audio has 100"):
        sampler(loaded, {**encoded, "noise_mask": torch.zeros(1, 1, 90)})
    with pytest.raises(ValueError, match=r"^latent: holds 100 latent frames but the sound to make has 150; extend"):
        sampler(loaded, encoded, duration=3.0)
    with pytest.raises(ValueError, match=r"^start: 2.5 s is outside the clip \(0-2.00 s\)"):
        node("SyncFoleyTimeMask").mark(encoded, 2.5, 3.0, 0.1)
    with pytest.raises(ValueError, match=r"^end: 2.6 s must lie after start \(1 s\) and inside the clip"):
        node("SyncFoleyTimeMask").mark(encoded, 1.0, 2.6, 0.1)
    with pytest.raises(ValueError, match=r"^samples: latents of 31.25 frames per second, but this VAE decodes 50"):
        node("SyncFoleyVAEDecode").decode(vae, {**encoded, "latent_rate": 31.25})
    with pytest.raises(ValueError, match=r"^total_duration: 1 s is shorter than the audio"):
        node("SyncFoleyExtendLatent").extend(encoded, 0.0, 0.0, 0.1, total_duration=1.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_python_api_keeps_the_round_trip_outside_the_ranges_for_both_families(family, sets):
    built = sets(family)
    models, pipeline, sound, frames = built["models"], built["pipeline"], built["sound"], built["frames"]
    result = pipeline((frames, 25.0), "glass", options=SamplingOptions(steps=2),
                      edit=EditOptions(audio=(sound["waveform"][0], 44100), regenerate=[(0.6, 1.2)], feather=0.1))
    # (the mel VAE's 62 frames are padded to the model's 63, as the pipeline does)
    round_trip, rate = decode_latents(models.vae, built["latents"], 2.0)
    assert result.waveform.shape == round_trip.shape and rate == result.sample_rate
    margin = 0.1 + 2 / models.model.latent_rate  # the feather and the frames it blends into
    before, after = int((0.6 - margin) * rate), int((1.2 + margin) * rate)
    assert torch.equal(result.waveform[..., :before], round_trip[..., :before])
    assert torch.equal(result.waveform[..., after:], round_trip[..., after:])
    assert not torch.equal(result.waveform[..., int(0.7 * rate):int(1.1 * rate)],
                           round_trip[..., int(0.7 * rate):int(1.1 * rate)])
    with pytest.raises(ValueError, match=r"regenerate: 1.5-2.5 s is not a range inside the clip \(0-2.00 s\)"):
        pipeline.plan_edit(EditOptions(regenerate=[(1.5, 2.5)]), (sound["waveform"], 44100), 2.0)
    with pytest.raises(ValueError, match=r"audio: give the sound to edit"):
        read_audio(None, (frames, 25.0))


def test_python_api_extends_shorter_audio_to_the_video_and_keeps_it(sets):
    built, sound = sets("hunyuanvideo-foley"), stereo_sound(0.5)
    models = built["models"]  # half a second of sound, new sound before it for the first half of the 1 s clip
    result = built["pipeline"]((built["frames"], 25.0), "glass", options=SamplingOptions(steps=2), duration=1.0,
                               edit=EditOptions(audio=(sound["waveform"][0], 44100), extend="before"))
    round_trip, rate = decode_latents(models.vae, encode_waveform(models.vae, sound["waveform"], 44100), 0.5)
    assert result.duration == 1.0 and result.waveform.shape[-1] == rate
    kept = int(0.38 * rate)  # the last half second, less the feather and a frame
    assert torch.equal(result.waveform[..., -kept:], round_trip[..., -kept:])
    assert result.waveform[..., : rate // 2].abs().mean() > 1e-3
