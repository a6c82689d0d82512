"""Editing on the trained demo model, as the issue measures it: a 4 s clip of the synthetic world, its own sound
regenerated over 1-2 s (kept elsewhere, no click at the seams), varied at several `denoise` values, and the
command line's --regenerate / --denoise."""
from __future__ import annotations

import pytest
import torch

from syncfoley.cli import main
from syncfoley.demo.world import generate_clip
from syncfoley.media import load_audio
from syncfoley.media.audio import resample_audio
from syncfoley.pipeline import FoleyModels, FoleyPipeline
from syncfoley.pipeline.decode import decode_latents, encode_waveform
from syncfoley.pipeline.edit import EditOptions, plan_edit
from syncfoley.sampling.generate import SamplingOptions

SECONDS, STEPS = 4.0, 4
WORLD: dict = {}


@pytest.fixture()
def world():
    """The demo model, a 4 s world clip with impacts inside 1-2 s, its conditions and its sound's round trip."""
    if not WORLD:
        models = FoleyModels.from_folder("demo", device="cpu")
        pipeline = FoleyPipeline(models, device="cpu")
        clip = generate_clip(11, duration=SECONDS, size=(64, 64))
        visual = pipeline.encode_video((clip.frames.float() / 255, 25.0))
        latents = encode_waveform(models.vae, clip.audio[None], clip.sample_rate)
        round_trip, rate = decode_latents(models.vae, latents, SECONDS)
        WORLD.update(models=models, pipeline=pipeline, clip=clip, text=pipeline.encode_text(clip.caption),
                     visual=visual, round_trip=round_trip[0, 0], rate=rate,
                     source=resample_audio(clip.audio, clip.sample_rate, rate)[0])
    return WORLD


def edited(world, **edit):
    models, clip = world["models"], world["clip"]
    audio_edit = plan_edit(models.vae, models.model, EditOptions(**edit), clip.audio[None], clip.sample_rate, SECONDS)
    latents = world["pipeline"].sample(world["text"], world["visual"], None, SamplingOptions(steps=STEPS, seed=2),
                                       SECONDS, edit=audio_edit)
    return world["pipeline"].decode(latents, SECONDS, audio_edit)[0][0, 0]


def largest_jump(wave: torch.Tensor) -> float:
    return float(wave.diff().abs().max())


def spectral_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of log-magnitude spectrograms (32 ms windows)."""
    window = torch.hann_window(512)
    spectra = [torch.stft(x, 512, 128, window=window, return_complex=True).abs().clamp_min(1e-4).log() for x in (a, b)]
    return float((spectra[0] - spectra[1]).abs().mean())


def test_the_world_clip_has_its_impacts_where_the_test_redoes_the_sound(world):
    assert any(1.0 < event.time < 2.0 for event in world["clip"].events)


def test_a_mask_of_zeros_decodes_to_the_round_trip_of_the_input(world):
    models, clip = world["models"], world["clip"]
    keep_all = plan_edit(models.vae, models.model, EditOptions(), clip.audio[None], clip.sample_rate, SECONDS)
    assert keep_all.mask.eq(0).all()  # no range and no denoise: everything is kept
    latents = world["pipeline"].sample(world["text"], world["visual"], None, SamplingOptions(steps=1), SECONDS,
                                       edit=keep_all)
    decoded = world["pipeline"].decode(latents, SECONDS, keep_all)[0][0, 0]
    assert torch.equal(decoded, world["round_trip"])


def test_regenerating_1_to_2_s_keeps_the_rest_and_leaves_no_click(world):
    wave, round_trip, rate = edited(world, regenerate=[(1.0, 2.0)], feather=0.1), world["round_trip"], world["rate"]
    margin = 0.1 + 1 / world["models"].model.latent_rate  # the feather, and the frame its ramp blends into
    change = wave - round_trip
    outside = torch.cat([change[: int((1.0 - margin) * rate)], change[int((2.0 + margin) * rate):]])
    assert float(outside.abs().max()) <= 1e-6
    inside = slice(int(1.05 * rate), int(1.95 * rate))
    assert float(change[inside].square().mean().sqrt()) > 0.2 * float(round_trip[inside].square().mean().sqrt())
    seams = [wave[int((edge - 0.15) * rate):int((edge + 0.15) * rate)] for edge in (1.0, 2.0)]
    assert max(largest_jump(seam) for seam in seams) <= largest_jump(world["source"])


def test_lower_denoise_changes_the_sound_less(world):
    distances = [spectral_distance(edited(world, denoise=d), world["round_trip"]) for d in (0.3, 0.55, 0.8)]
    assert distances == sorted(distances) and distances[0] < 0.8 * distances[-1]


def test_the_command_line_regenerates_a_range_of_the_generated_clips_own_sound(world, tmp_path, capsys):
    out = tmp_path / "fixed.mp4"
    assert main(["generate", "--out", str(out), "--steps", "2", "--regenerate", "1.0-2.0", "--no-progress"]) == 0
    assert "edited the soundtrack of" in capsys.readouterr().out
    models = world["models"]
    source, rate = load_audio(tmp_path / "fixed_input.mp4", None, channels=1)
    latents = encode_waveform(models.vae, source, rate)[..., :models.model.latent_length(3.84)]
    round_trip = decode_latents(models.vae, latents, 3.84)[0][0, 0]
    written, written_rate = load_audio(out.with_suffix(".wav"), None)
    assert written_rate == models.vae.sample_rate and written.shape[-1] == round_trip.shape[-1]
    kept = int(0.85 * written_rate)
    assert float((written[0, :kept] - round_trip[:kept]).abs().max()) < 1e-4  # 16-bit PCM
    assert float((written[0, int(1.1 * written_rate):int(1.9 * written_rate)]
                  - round_trip[int(1.1 * written_rate):int(1.9 * written_rate)]).abs().max()) > 1e-2


def test_the_command_line_refuses_bad_edits_naming_the_option(tmp_path, capsys):
    out = str(tmp_path / "x.mp4")
    assert main(["generate", "--out", out, "--steps", "1", "--denoise", "0", "--no-progress"]) == 1
    assert "--denoise: must be above 0 and at most 1" in capsys.readouterr().err
    assert main(["generate", "--out", out, "--steps", "1", "--audio", str(tmp_path / "none.wav")]) == 1
    assert f"--audio: no file at '{tmp_path / 'none.wav'}'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--regenerate", "2-1"])
    assert "'2-1' is not a range of seconds START-END with START < END" in capsys.readouterr().err
