"""CFG exactly as the reference, SyncCFG and its anchors, takes and seeds."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from conftest import max_abs_error_ratio, random_text_features, random_visual_features

from syncfoley.sampling.features import TextFeatures
from syncfoley.sampling.generate import SamplingOptions, generate_latents
from syncfoley.sampling.guidance import CFG, SyncCFG, branch_inputs
from syncfoley.sampling.noise import initial_noise

SECONDS = 2.0  # 100 latents, 16 SigLIP2 frames, 5 Synchformer segments


@pytest.fixture(scope="module")
def conditions():
    return random_text_features(), random_visual_features(SECONDS)


def reference_euler_cfg(model, noise, text, visual, steps, scale):
    """The reference's denoising loop, written out as it is in HunyuanVideo-Foley."""
    sigmas = torch.linspace(1, 0, steps + 1)
    timesteps = (sigmas[:-1] * 1000).to(torch.float32)
    latents = noise
    clip, sync = visual.clip, visual.sync
    for i, t in enumerate(timesteps):
        latent_input = torch.cat([latents] * 2)
        t_expand = t.repeat(latent_input.shape[0])
        clip_input = torch.cat([model.null_clip(1, clip.shape[1]), clip])
        sync_input = torch.cat([model.null_sync(1, sync.shape[1]), sync])
        text_input = torch.cat([text.negative, text.positive])
        with torch.no_grad():
            prediction = model(latent_input, t_expand, text_input, clip_input, sync_input).to(torch.float32)
        uncond, cond = prediction.chunk(2)
        prediction = uncond + scale * (cond - uncond)
        latents = latents.to(torch.float32) + prediction * (sigmas[i + 1] - sigmas[i])
    return latents


def test_euler_cfg_reproduces_the_reference_loop(parity_dit, conditions):
    text, visual = conditions
    noise = initial_noise([7], 128, 100)
    ours = generate_latents(parity_dit, text, visual, CFG(4.5), SamplingOptions(steps=4), noise=noise)
    reference = reference_euler_cfg(parity_dit, noise, text, visual, steps=4, scale=4.5)
    # Bitwise on some CPUs; elsewhere BLAS blocks a batch of 1 (our per-branch text projections) and a
    # batch of 2 (the reference's) differently, which moves the last bits only.
    assert max_abs_error_ratio(ours, reference) < 1e-5


def test_sync_cfg_with_zero_sync_scale_equals_cfg(parity_dit, conditions):
    text, visual = conditions
    options = SamplingOptions(steps=3, seed=3)
    cfg = generate_latents(parity_dit, text, visual, CFG(4.5), options)
    for anchor in ("static", "shift"):
        sync = generate_latents(parity_dit, text, visual, SyncCFG(4.5, 0.0, anchor), options)
        assert torch.equal(sync, cfg)
    different = generate_latents(parity_dit, text, visual, SyncCFG(4.5, 2.0), options)
    assert (different - cfg).abs().max() > 1e-3


@pytest.fixture(scope="module")
def parity_dit_fp64(parity):
    from syncfoley.models.dit import FoleyDiT

    return FoleyDiT.from_checkpoint(parity("hvf_tiny")[1], dtype=torch.float64)


@pytest.mark.parametrize("guidance", [CFG(4.5), SyncCFG(4.5, 2.0, "static"), SyncCFG(3.0, 1.0, "shift", 0.32)])
def test_batched_and_sequential_guidance_agree(parity_dit, parity_dit_fp64, conditions, guidance):
    text, visual = conditions
    run = lambda model, batched: generate_latents(  # noqa: E731
        model, text, visual, guidance, SamplingOptions(steps=3, takes=2, batched_guidance=batched))
    # In fp64 the two schedules of the same arithmetic agree to rounding: any mix-up of branches,
    # takes or chunks would show far above 1e-6.
    torch.testing.assert_close(run(parity_dit_fp64, True), run(parity_dit_fp64, False), rtol=0, atol=1e-6)
    # In fp32, BLAS blocks a batch of 6 differently from a batch of 2: the results differ by rounding.
    batched, sequential = run(parity_dit, True), run(parity_dit, False)
    assert (batched - sequential).abs().max() <= 1e-5 * batched.abs().max()


def test_takes_have_their_own_seeds(parity_dit, conditions):
    text, visual = conditions
    two = generate_latents(parity_dit, text, visual, CFG(4.5), SamplingOptions(steps=2, seed=10, takes=2))
    second_alone = generate_latents(parity_dit, text, visual, CFG(4.5), SamplingOptions(steps=2, seed=11))
    assert two.shape == (2, 128, 100)
    assert (two[0] - two[1]).abs().max() > 0.1
    torch.testing.assert_close(two[1:], second_alone, rtol=0, atol=1e-5)


def test_noise_depends_on_the_seed_alone():
    a = initial_noise([5, 6], 128, 50)
    torch.testing.assert_close(a[1:], initial_noise([6], 128, 50), rtol=0, atol=0)
    # Time-major draws: a longer clip starts with the same noise.
    torch.testing.assert_close(initial_noise([5], 128, 200)[..., :50], a[:1], rtol=0, atol=0)


def test_static_anchor_holds_the_first_frame_in_both_streams(conditions):
    _, visual = conditions
    anchor = visual.static_anchor()
    assert anchor.clip.shape == visual.clip.shape and anchor.sync.shape == visual.sync.shape
    assert torch.equal(anchor.clip, visual.static_clip.expand_as(visual.clip))
    segments = anchor.sync.unflatten(1, (-1, 8))
    assert segments.shape[1] == 5 and torch.equal(segments, visual.static_sync.unsqueeze(1).expand_as(segments))
    bare = type(visual)(visual.clip, visual.sync, SECONDS)
    with pytest.raises(ValueError, match="no static-frame encoding"):
        bare.static_anchor()


def test_time_shifted_anchor_moves_each_stream_by_its_own_rate(conditions):
    _, visual = conditions
    shifted = visual.shifted(0.64)  # 0.64 s = 5 SigLIP2 frames (rounded from 5.12) = 2 segments
    assert shifted.clip.shape == visual.clip.shape and shifted.sync.shape == visual.sync.shape
    assert torch.equal(shifted.clip[:, 5:], visual.clip[:, :-5])
    assert torch.equal(shifted.clip[:, :5], visual.clip[:, :1].expand(-1, 5, -1))  # held first frame
    assert torch.equal(shifted.sync[:, 16:], visual.sync[:, :-16])
    earlier = visual.shifted(-0.32)
    assert torch.equal(earlier.sync[:, :-8], visual.sync[:, 8:])


def test_windows_slice_each_stream_at_its_rate():
    visual = random_visual_features(8.0)  # 64 frames, 24 segments
    window = visual.window(0.32 * 5, 2.0)
    assert window.clip.shape[1] == 16 and window.sync.shape[1] == 5 * 8
    assert torch.equal(window.clip, visual.clip[:, 13:29])  # round(1.6 s * 8) = 13
    assert torch.equal(window.sync, visual.sync[:, 40:80])
    assert torch.equal(visual.window(0, 8.0).sync, visual.sync)
    with pytest.raises(ValueError, match="cover 8.00 s"):
        visual.trimmed(9.0)


def test_sync_cfg_needs_a_video():
    text = TextFeatures(torch.zeros(1, 4, 768), torch.zeros(1, 4, 768))
    with pytest.raises(ValueError, match="SyncCFG needs a video"):
        branch_inputs(SyncCFG(4.5, 1.0), text, None)
    assert set(branch_inputs(CFG(4.5), text, None)) == {"uncond", "cond"}
    assert branch_inputs(CFG(1.0), text, None).keys() == {"cond"}
    with pytest.raises(ValueError, match="unknown SyncCFG anchor 'blur'"):
        SyncCFG(4.5, 1.0, anchor="blur")


def test_text_to_audio_needs_a_duration(parity_dit):
    text = random_text_features()
    with pytest.raises(ValueError, match="give the duration"):
        generate_latents(parity_dit, text, None, CFG(4.5), SamplingOptions(steps=1))
    latents = generate_latents(parity_dit, text, None, CFG(4.5), SamplingOptions(steps=1), duration=1.0)
    assert latents.shape == (1, 128, 50) and torch.isfinite(latents).all()


class HostReads(TorchDispatchMode):
    """Records ops that read tensor values back to the host: on a GPU each one stalls the stream."""

    READS = {"aten::_local_scalar_dense", "aten::equal", "aten::is_nonzero", "aten::nonzero", "aten::masked_select",
             "aten::_unique2", "aten::unique_consecutive", "aten::unique_dim"}

    def __init__(self):
        super().__init__()
        self.step, self.reads = None, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in self.READS:
            self.reads.append((self.step, func._schema.name))
        return func(*args, **(kwargs or {}))


def test_the_host_read_spy_sees_item():
    with HostReads() as spy:
        torch.ones(2).sum().item()
    assert spy.reads == [(None, "aten::_local_scalar_dense")]


@pytest.mark.parametrize("sampler, guidance, window", [
    ("euler", SyncCFG(4.5, 1.0, form="harmony", interval=(0.3, 0.8)), None), ("heun", SyncCFG(4.5, 1.0), None), ("dpmpp_2m", CFG(4.5), 1.0),
    ("rk4", SyncCFG(4.5, 0.5), 1.0),
])
def test_sampling_steps_never_read_back_to_the_host(parity_dit, conditions, sampler, guidance, window):
    text, visual = conditions
    options = SamplingOptions(steps=4, sampler=sampler, takes=2, window_seconds=window, overlap_seconds=0.5,
                              batched_guidance=sampler != "heun")
    spy = HostReads()

    def callback(info):
        spy.step = info["i"] + 1  # what runs from here on belongs to the next step

    with spy:
        generate_latents(parity_dit, text, visual, guidance, options, callback=callback)
    assert spy.step == 4
    # Reads while preparing (before step 1's callback) are allowed; none may happen between steps.
    assert [read for read in spy.reads if read[0] is not None] == []


# SyncCFG's formula on hand-made velocities: distinct powers of two, so every term's sign and scale shows.
U, C, A = torch.tensor([1.0, -2.0]), torch.tensor([4.0, 8.0]), torch.tensor([16.0, 32.0])
BRANCHES = {"uncond": U, "cond": C, "anchor": A}


def test_sync_term_sign_is_pinned():
    # CFG (10, 28) + 2 * (cond - anchor) = (10 - 24, 28 - 48); with anchor - cond it would be (34, 76).
    out = SyncCFG(3.0, 2.0).combine(BRANCHES)
    torch.testing.assert_close(out, torch.tensor([-14.0, -20.0]), rtol=0, atol=0)


def test_harmony_form_takes_the_anchor_as_the_base():
    # Without text CFG: anchor + 2 * (cond - anchor) = (16 - 24, 32 - 48).
    alone = SyncCFG(1.0, 2.0, form="harmony")
    assert alone.branches == ("cond", "anchor")
    torch.testing.assert_close(alone.combine(BRANCHES), torch.tensor([-8.0, -16.0]), rtol=0, atol=0)
    # With it: uncond + 3 (anchor - uncond) + 2 (cond - anchor) = (1 + 45 - 24, -2 + 102 - 48).
    both = SyncCFG(3.0, 2.0, form="harmony")
    torch.testing.assert_close(both.combine(BRANCHES), torch.tensor([22.0, 52.0]), rtol=0, atol=0)
    # ... which is the "add" form at sync scale 2 - 3, and plain CFG at sync scale = scale.
    torch.testing.assert_close(both.combine(BRANCHES), SyncCFG(3.0, -1.0).combine(BRANCHES))
    torch.testing.assert_close(SyncCFG(3.0, 3.0, form="harmony").combine(BRANCHES), CFG(3.0).combine(BRANCHES))
    assert SyncCFG(3.0, 0.0, form="harmony").branches == ("uncond", "cond", "anchor")  # CFG on the anchor


@pytest.mark.parametrize("form", ["add", "harmony"])
def test_interval_applies_the_sync_term_only_inside(form):
    guidance = SyncCFG(3.0, 2.0, form=form, interval=(0.2, 0.6))
    inside = SyncCFG(3.0, 2.0, form=form).combine(BRANCHES)
    for sigma, expected in ((0.2, inside), (0.5, inside), (0.6, inside), (0.7, CFG(3.0).combine(BRANCHES)),
                            (0.1, CFG(3.0).combine(BRANCHES))):
        torch.testing.assert_close(guidance.combine(BRANCHES, torch.tensor(sigma)), expected)
    # Per-sample sigmas broadcast over each sample.
    batch = {name: v.expand(2, 3, 2) for name, v in BRANCHES.items()}
    out = guidance.combine(batch, torch.tensor([0.5, 0.9]))
    torch.testing.assert_close(out[0], inside.expand(3, 2))
    torch.testing.assert_close(out[1], CFG(3.0).combine(BRANCHES).expand(3, 2))
    with pytest.raises(ValueError, match="needs the step's sigma"):
        guidance.combine(BRANCHES)
    with pytest.raises(ValueError, match="0 <= low <= high <= 1"):
        SyncCFG(3.0, 2.0, interval=(0.8, 0.2))
    with pytest.raises(ValueError, match="choose one of add, harmony"):
        SyncCFG(3.0, 2.0, form="ratio")


def test_interval_in_sampling_changes_only_the_steps_inside(parity_dit, conditions):
    """Sampled with an interval that holds no step's sigma, SyncCFG is CFG; with one holding the first
    step only, it is neither CFG nor SyncCFG on every step."""
    text, visual = conditions
    options = SamplingOptions(steps=2, seed=3)  # sigmas 1 and 1/2
    cfg = generate_latents(parity_dit, text, visual, CFG(4.5), options)
    sync = generate_latents(parity_dit, text, visual, SyncCFG(4.5, 2.0), options)
    never = generate_latents(parity_dit, text, visual, SyncCFG(4.5, 2.0, interval=(0.01, 0.2)), options)
    first = generate_latents(parity_dit, text, visual, SyncCFG(4.5, 2.0, interval=(0.9, 1.0)), options)
    assert (never - cfg).abs().max() <= 1e-6 * cfg.abs().max()
    assert (first - cfg).abs().max() > 1e-3 and (first - sync).abs().max() > 1e-3


def test_without_a_guidance_the_models_own_cfg_applies(parity_dit, conditions):
    from syncfoley.families import as_flow

    text, visual = conditions
    options = SamplingOptions(steps=1, seed=3)
    default = generate_latents(parity_dit, text, visual, None, options)
    own = as_flow(parity_dit).defaults.cfg_scale
    assert own > 1.0
    assert torch.equal(default, generate_latents(parity_dit, text, visual, CFG(own), options))
    assert not torch.equal(default, generate_latents(parity_dit, text, visual, CFG(1.0), options))
