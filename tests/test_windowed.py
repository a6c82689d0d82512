"""Long videos: window plans, seamless blending, equality with plain sampling, bounded memory."""
from __future__ import annotations

import pytest
import torch
from conftest import random_text_features, random_visual_features

from syncfoley.perf.memory import track_peak_memory
from syncfoley.sampling.generate import SamplingOptions, generate_latents, prepare_velocity
from syncfoley.sampling.guidance import CFG, SyncCFG
from syncfoley.sampling.samplers import SAMPLERS
from syncfoley.sampling.schedules import linear_sigmas
from syncfoley.sampling.windowed import Window, WindowedVelocity, blend_weights, plan_windows

# Six seconds in two-second windows overlapping by half a second, as the sampler plans them.
SIX_SECONDS = [Window(0, 100), Window(64, 100), Window(128, 100), Window(192, 108)]


@pytest.mark.parametrize("total, window, overlap, grid", [
    (3000, 500, 50, 16), (1234, 500, 100, 16), (510, 500, 50, 16), (2000, 300, 150, 1), (900, 500, 0, 16),
])
def test_window_plans_cover_the_clip_on_the_segment_grid(total, window, overlap, grid):
    windows = plan_windows(total, window, overlap, grid)
    assert windows[0].start == 0 and windows[-1].end == total
    assert all(w.start % grid == 0 for w in windows)
    assert all(window <= w.length < window + grid for w in windows) or len(windows) == 1
    for a, b in zip(windows, windows[1:]):
        assert b.start > a.start and a.end - b.start >= overlap  # consecutive windows overlap enough
    weights = torch.zeros(total)
    for w, weight in zip(windows, blend_weights(windows, total)):
        weights[w.start:w.end] += weight
    torch.testing.assert_close(weights, torch.ones(total))


def test_short_clip_is_one_window():
    assert plan_windows(400, 500, 50, 16) == [Window(0, 400)]
    with pytest.raises(ValueError, match="overlap .* shorter than the window"):
        plan_windows(1000, 100, 100)


def test_blending_leaves_no_seam_for_a_local_field():
    """For a velocity that depends on each frame alone, windows must reproduce it exactly."""
    def local_field(x, sigma):
        return torch.sin(3 * x) * (1 + sigma)

    total = 1000
    windows = plan_windows(total, 300, 64, 16)
    blended = WindowedVelocity(windows, [local_field] * len(windows), total)
    x = torch.randn(2, 8, total)
    torch.testing.assert_close(blended(x, torch.tensor(0.5)), local_field(x, torch.tensor(0.5)))


def test_blend_weights_ramp_linearly_across_each_overlap():
    """Inside an overlap of L latents the outgoing window's weight falls 1 - (k + 0.5) / L while the
    incoming one's rises (k + 0.5) / L; outside the overlaps a window has weight 1."""
    assert plan_windows(300, 100, 25, 16) == SIX_SECONDS
    weights = blend_weights(SIX_SECONDS, 300)
    rise = (torch.arange(36) + 0.5) / 36
    for i, (a, b) in enumerate(zip(SIX_SECONDS, SIX_SECONDS[1:])):
        assert a.end - b.start == 36
        torch.testing.assert_close(weights[i][b.start - a.start:], 1 - rise)
        torch.testing.assert_close(weights[i + 1][:36], rise)
    torch.testing.assert_close(weights[0][:64], torch.ones(64))
    torch.testing.assert_close(weights[1][36:64], torch.ones(28))
    torch.testing.assert_close(weights[3][36:], torch.ones(72))


def crossfade(windows: list[Window], levels: list[float], total: int) -> torch.Tensor:
    """Per-window constants, each held on its own span and faded linearly into the next over the
    overlap (latent centres at (k + 0.5) / L), written out without blend_weights."""
    out = torch.empty(total, dtype=torch.float64)
    for i, window in enumerate(windows):
        out[window.start:window.end] = levels[i]
    for (a, b), (level_a, level_b) in zip(zip(windows, windows[1:]), zip(levels, levels[1:])):
        length = a.end - b.start
        for k in range(length):
            out[b.start + k] = level_a + (level_b - level_a) * (k + 0.5) / length
    return out


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_multi_window_sampling_of_window_specific_fields_crossfades_at_the_seams(sampler):
    """Each window's velocity is its own constant, so sampling from noise moves every latent by
    minus the blended constant: the result shows the blend itself, seam by seam."""
    levels = [0.0, 8.0, -4.0, 12.0]
    fields = [lambda x, sigma, c=c: torch.full_like(x, c) for c in levels]
    velocity = WindowedVelocity(SIX_SECONDS, fields, 300)
    noise = torch.randn(2, 3, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sampled = SAMPLERS[sampler](velocity, noise.clone(), linear_sigmas(4).double())
    moved = noise - sampled  # the integral of the velocity over sigma from 1 to 0, sign flipped
    expected = crossfade(SIX_SECONDS, levels, 300)
    torch.testing.assert_close(moved, expected.expand_as(moved), rtol=0, atol=1e-5)
    # No seam: neighbouring latents differ by at most one ramp step of the largest level change.
    steps = (moved[..., 1:] - moved[..., :-1]).abs().max()
    assert steps <= 16.0 / 36 + 1e-5, f"a jump of {steps:.3f} between neighbouring latents"


@pytest.mark.parametrize("guidance", [CFG(4.5), SyncCFG(4.5, 1.0, "shift", 0.32)])
def test_windowed_sampling_equals_plain_sampling_up_to_the_window_length(parity_dit, guidance):
    text, visual = random_text_features(), random_visual_features(2.0)
    plain = generate_latents(parity_dit, text, visual, guidance, SamplingOptions(steps=2, seed=4))
    windowed = generate_latents(parity_dit, text, visual, guidance,
                                SamplingOptions(steps=2, seed=4, window_seconds=2.0, overlap_seconds=0.5))
    assert torch.equal(plain, windowed)


def test_windows_take_visual_features_of_their_own_time_span(parity_dit):
    text, visual = random_text_features(), random_visual_features(6.0)
    options = SamplingOptions(window_seconds=2.0, overlap_seconds=0.5, batched_guidance=False)
    velocity, windows = prepare_velocity(parity_dit, text, visual, CFG(4.5), options, 300)
    assert windows == [Window(0, 100), Window(64, 100), Window(128, 100), Window(192, 108)]
    second = windows[1]
    features = visual.window(second.start / 50, second.length / 50)
    expected = parity_dit.prepare(text.positive, features.clip, features.sync, second.length)
    prepared = velocity.velocities[1].branches[1]  # the conditional branch of window 2
    torch.testing.assert_close(prepared.visual, expected.visual)
    torch.testing.assert_close(prepared.sync, expected.sync)
    # Text keys/values are computed once and shared by every window.
    assert prepared.text_kv is velocity.velocities[3].branches[1].text_kv


def _sampling_peak(model, seconds, window_seconds):
    text, visual = random_text_features(), random_visual_features(seconds)
    options = SamplingOptions(steps=1, window_seconds=window_seconds, overlap_seconds=1.0)
    with track_peak_memory() as peak:
        latents = generate_latents(model, text, visual, CFG(4.5), options)
    assert latents.shape[-1] == int(seconds * 50) and torch.isfinite(latents).all()
    return peak.peak_bytes


def test_sixty_seconds_fit_in_the_memory_of_ten(parity_dit):
    ten = _sampling_peak(parity_dit, 10.0, window_seconds=10.0)
    sixty = _sampling_peak(parity_dit, 60.0, window_seconds=10.0)
    assert sixty <= 1.5 * ten, f"60 s peak {sixty / 2**20:.1f} MiB vs 10 s {ten / 2**20:.1f} MiB"
    # The measure can tell: without windows, 60 s needs far more.
    assert _sampling_peak(parity_dit, 60.0, window_seconds=None) > 3 * ten
