"""Editing existing sound in the sampler (sampling/edit.py): denoise as ComfyUI's KSampler, kept frames held on
their noising path by every solver, today's output untouched without an edit, both families, and the errors."""
from __future__ import annotations

import pytest
import torch
from edit_fixtures import FAMILIES, SECONDS, family_set

from syncfoley.sampling.edit import (AudioEdit, KeptVelocity, as_frame_mask, denoise_sigmas, extend, fit_length,
                                     resample_mask, time_mask)
from syncfoley.sampling.generate import SamplingOptions, generate_latents, prepare_velocity
from syncfoley.sampling.guidance import CFG
from syncfoley.sampling.noise import initial_noise, take_seeds
from syncfoley.sampling.samplers import SAMPLERS, get_sampler
from syncfoley.sampling.schedules import make_sigmas


@pytest.fixture(params=FAMILIES)
def family(request, tiny_models, tmp_path_factory):
    """(models, text, visual, latents) of a tiny set of each family (edit_fixtures: built once)."""
    built = family_set(request.param, tiny_models, tmp_path_factory.getbasetemp() / "edit_mmaudio")
    return built["models"], built["text"], built["visual"], built["latents"]


def sample(models, text, visual, edit=None, **options):
    options = SamplingOptions(**{"steps": 3, "seed": 5, **options})
    return generate_latents(models.model, text, visual, CFG(3.0), options, SECONDS, edit=edit)


# Schedules and masks -----------------------------------------------------------------------------------
def test_denoise_runs_the_last_steps_of_a_longer_schedule_as_ksampler():
    for schedule, shift in (("linear", 1.0), ("linear", 3.0), ("cosine", 1.0)):
        assert torch.equal(denoise_sigmas(schedule, 10, shift, 1.0), make_sigmas(schedule, 10, shift))
        assert torch.equal(denoise_sigmas(schedule, 10, shift, 0.6), make_sigmas(schedule, 16, shift)[-11:])
    assert denoise_sigmas("linear", 4, 1.0, 0.5).tolist() == [0.5, 0.375, 0.25, 0.125, 0.0]
    for bad in (0.0, -0.2, 1.01, float("nan")):
        with pytest.raises(ValueError, match=r"denoise: must be above 0 and at most 1"):
            denoise_sigmas("linear", 4, 1.0, bad)


def test_time_mask_redoes_the_range_in_full_and_feathers_into_the_kept_sound():
    mask = time_mask([(0.3, 0.6)], 50, 50.0, feather=0.1)
    assert mask[15:30].eq(1).all() and mask[:10].eq(0).all() and mask[35:].eq(0).all()
    assert mask[10:15].tolist() == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    assert mask[30:35].tolist() == pytest.approx([0.9, 0.7, 0.5, 0.3, 0.1])
    assert time_mask([(0.3, 0.6)], 50, 50.0).sum() == 15  # no feather: a hard edge
    union = time_mask([(0.1, 0.2), (0.5, 0.6)], 50, 50.0)
    assert union.sum() == 10 and union[5:10].eq(1).all() and union[25:30].eq(1).all()
    for bad in ((-0.1, 0.5), (0.5, 1.2), (0.6, 0.3)):
        with pytest.raises(ValueError, match=r"regenerate: .* is not a range inside the clip \(0-1.00 s\)"):
            time_mask([bad], 50, 50.0, name="regenerate")


def test_any_comfyui_mask_layout_reads_as_time_and_resamples_over_the_clip():
    image_mask = torch.zeros(1, 8, 100)
    image_mask[0, 3, 50:] = 1  # one marked row marks the frame
    assert torch.equal(as_frame_mask(image_mask), torch.cat([torch.zeros(50), torch.ones(50)])[None])
    assert as_frame_mask(torch.ones(4, 1, 2, 7)).shape == (4, 7) and as_frame_mask(torch.ones(3, 7)).shape == (1, 7)
    stretched = resample_mask(image_mask, 20)
    assert stretched.shape == (1, 20) and stretched[0, :9].eq(0).all() and stretched[0, 11:].eq(1).all()
    with pytest.raises(ValueError, match="noise_mask: holds NaN"):
        as_frame_mask(torch.tensor([0.0, float("nan")]))


def test_extend_pads_with_room_for_new_sound_that_ramps_into_the_old():
    latents = torch.ones(1, 3, 10)
    padded, mask = extend(latents, None, 2, 5, rate=50.0, feather=0.06)
    assert padded.shape == (1, 3, 17) and padded[..., :2].eq(0).all() and padded[..., 12:].eq(0).all()
    assert mask[0, :2].eq(1).all() and mask[0, 12:].eq(1).all()
    assert mask[0, 2:5].tolist() == pytest.approx([5 / 6, 1 / 2, 1 / 6]) and mask[0, 5:9].eq(0).all()


def test_lengths_off_by_codec_rounding_are_fitted_and_others_refused():
    latents = torch.zeros(1, 4, 100)
    assert fit_length(latents, None, 101)[0].shape[-1] == 101 and fit_length(latents, None, 98)[0].shape[-1] == 98
    _, mask = fit_length(latents, torch.zeros(1, 100), 102)
    assert mask[0, :100].eq(0).all() and mask[0, 100:].eq(1).all()  # padded frames are generated
    with pytest.raises(ValueError, match=r"latent: holds 100 latent frames but the sound to make has 150; extend"):
        fit_length(latents, None, 150)
    with pytest.raises(ValueError, match=r"latent: its noise_mask covers 90 latent frames but the audio has 100"):
        fit_length(latents, torch.zeros(1, 90), 100)


# Every solver keeps the kept frames --------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_solver_moves_kept_frames_along_their_noising_path(name):
    generator = torch.Generator().manual_seed(1)
    known, noise, target = (torch.randn(2, 4, 50, generator=generator) for _ in range(3))
    mask = time_mask([(0.3, 0.6)], 50, 50.0, feather=0.1)[None, None]
    velocity = lambda x, sigma: torch.sin(3 * x) + (noise - target)  # noqa: E731  a nonlinear field
    drift = []

    def check(info):
        path = (1 - info["sigma_next"]) * known + info["sigma_next"] * noise
        drift.append(float(((info["x"] - path) * (mask == 0)).abs().max()))

    out = get_sampler(name)(KeptVelocity(velocity, known, noise, mask), noise.clone(), make_sigmas("linear", 8), check)
    assert max(drift) < 1e-5 and len(drift) == 8
    assert float(((out - known) * (mask == 0)).abs().max()) < 1e-5
    assert float((out - known)[..., 15:30].abs().mean()) > 0.1  # the marked frames were generated


# Through generate_latents, both families -----------------------------------------------------------------
def test_without_a_latent_at_denoise_1_the_output_is_bitwise_todays(family):
    models, text, visual, _ = family
    windowed = {"takes": 2, "window_seconds": 1.0, "overlap_seconds": 0.25, "steps": 2}
    for options in ({"sampler": "heun"}, windowed) if models.family.name != "mmaudio" else ({"sampler": "heun"},):
        plain = sample(models, text, visual, **options)
        assert torch.equal(sample(models, text, visual, AudioEdit(), **options), plain)
        # today's loop, written out: the take's noise, the schedule, the solver, the VAE's space
        resolved = SamplingOptions(**{"steps": 3, "seed": 5, **options}).resolved(models.model)
        total = models.model.latent_length(SECONDS)
        with torch.no_grad():
            velocity, _ = prepare_velocity(models.model, text, visual.trimmed(SECONDS), CFG(3.0), resolved, total)
            noise = initial_noise(take_seeds(5, resolved.takes), models.model.latent_dim, total)
            latents = get_sampler(resolved.sampler)(velocity, noise, make_sigmas("linear", resolved.steps), None)
            assert torch.equal(models.model.to_vae(latents), plain)


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_a_masked_edit_keeps_the_rest_bitwise_and_makes_the_range_anew(family, sampler):
    models, text, visual, latents = family
    rate = models.model.latent_rate
    mask = time_mask([(0.5, 1.2)], latents.shape[-1], rate, feather=0.1)[None]
    edited = sample(models, text, visual, AudioEdit(latents, 1.0, mask), sampler=sampler, window_seconds=0)
    kept, marked = mask[0] == 0, mask[0] == 1
    assert torch.equal(edited[..., kept], latents[..., kept])
    assert (edited[..., marked] - latents[..., marked]).abs().mean() > 0.1
    if sampler == "euler":
        nothing = sample(models, text, visual, AudioEdit(latents, 1.0, torch.zeros_like(mask)))
        assert torch.equal(nothing, latents)  # a mask of zeros keeps the latent itself


def test_masked_windowed_sampling_and_several_takes_keep_the_rest(family):
    models, text, visual, latents = family
    mask = time_mask([(1.0, 1.6)], latents.shape[-1], models.model.latent_rate)[None]
    edited = sample(models, text, visual, AudioEdit(latents, 1.0, mask), takes=2, window_seconds=1.0,
                    overlap_seconds=0.25)
    kept = mask[0] == 0
    assert edited.shape[0] == 2 and torch.equal(edited[..., kept], latents.expand(2, -1, -1)[..., kept])
    assert not torch.equal(edited[0], edited[1])  # two takes, two seeds


def test_lower_denoise_stays_closer_to_the_latent(family):
    models, text, visual, latents = family
    distance = [float((sample(models, text, visual, AudioEdit(latents, d)) - latents).square().mean().sqrt())
                for d in (0.2, 0.5, 0.8, 1.0)]
    assert distance == sorted(distance) and distance[0] < 0.5 * distance[-1]


def test_extended_sound_keeps_the_known_part(family):
    models, text, visual, latents = family
    rate, length = models.model.latent_rate, latents.shape[-1]
    half = length // 2
    padded, mask = extend(latents[..., :half], None, 0, length - half, rate, feather=0.1)
    edited = sample(models, text, visual, AudioEdit(padded, 1.0, mask))
    kept = mask[0] == 0
    assert kept.sum() >= half - round(0.1 * rate) - 1
    assert torch.equal(edited[..., kept], latents[..., kept])
    assert not torch.equal(edited[..., half:], padded[..., half:])


def test_edit_errors_name_what_is_wrong(family):
    models, text, visual, latents = family
    with pytest.raises(ValueError, match=r"denoise: 0.5 starts from existing sound, but none was given"):
        AudioEdit(None, 0.5)
    with pytest.raises(ValueError, match=r"denoise: must be above 0 and at most 1"):
        AudioEdit(latents, 0.0)
    other = torch.zeros(1, models.model.latent_dim + 3, latents.shape[-1])
    with pytest.raises(ValueError, match=rf"latent: has {models.model.latent_dim + 3}-channel latents but .* samples "
                                         rf"{models.model.latent_dim}-channel ones; encode the audio with the VAE"):
        sample(models, text, visual, AudioEdit(other))
    with pytest.raises(ValueError, match=r"latent: holds 3 clips but 2 takes were asked for"):
        sample(models, text, visual, AudioEdit(latents.expand(3, -1, -1)), takes=2)
    with pytest.raises(ValueError, match=r"latent: its noise_mask covers"):
        sample(models, text, visual, AudioEdit(latents, 1.0, torch.zeros(1, latents.shape[-1] + 7)))
