"""The objective: flow-matching convention, logit-normal times, condition dropout, REPA's reach."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_training_support import small_dit

from syncfoley.training.config import ObjectiveConfig
from syncfoley.training.objective import Draws, FlowMatchingLoss, draw, flow_matching_pair, logit_normal, repa_loss

LATENT = 50  # 1 s


def fake_batch(model, batch: int = 2, seed: int = 0, repa_dim: int = 12) -> dict[str, torch.Tensor]:
    c = model.config
    g = torch.Generator().manual_seed(seed)
    clip_len, sync_len = model.visual_lengths(LATENT)
    return {
        "latent_mean": torch.randn(batch, c.latent_dim, LATENT, generator=g),
        "latent_logvar": torch.full((batch, c.latent_dim, LATENT), -4.0),
        "text": torch.randn(batch, 7, c.text_dim, generator=g),
        "clip": torch.randn(batch, clip_len, c.clip_dim, generator=g),
        "sync": torch.randn(batch, sync_len, c.sync_dim, generator=g),
        "repa": torch.randn(batch, 2 * LATENT, repa_dim, generator=g),
    }


def fixed_draws(model, batch: int = 2, drop_visual=False, drop_text=False) -> Draws:
    g = torch.Generator().manual_seed(5)
    full = lambda v: torch.full((batch,), v)  # noqa: E731
    return Draws(torch.randn(batch, model.config.latent_dim, LATENT, generator=g), torch.tensor([0.3, 0.8])[:batch],
                 full(drop_visual), full(drop_text))


def test_flow_matching_follows_the_reference_convention():
    x0, noise = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    x, target = flow_matching_pair(x0, noise, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(x[0], x0[0])  # s = 0 is data
    torch.testing.assert_close(x[1], noise[1])  # s = 1 is pure noise
    torch.testing.assert_close(target, noise - x0)
    x, _ = flow_matching_pair(x0, noise, torch.tensor([0.25, 0.25]))
    torch.testing.assert_close(x, 0.75 * x0 + 0.25 * noise)


def test_times_are_logit_normal_and_draws_replay_from_the_generator_state():
    s = logit_normal(20000, torch.Generator().manual_seed(0), mean=0.5, std=2.0)
    logits = torch.logit(s.double())
    assert 0 < s.min() and s.max() < 1
    assert logits.mean().item() == pytest.approx(0.5, abs=0.05) and logits.std().item() == pytest.approx(2.0, abs=0.05)
    settings = ObjectiveConfig(drop_visual=0.5, drop_text=0.5)
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    first = draw(g, (64, 4, 10), settings)
    g.set_state(state)
    again = draw(g, (64, 4, 10), settings)
    assert all(torch.equal(getattr(first, f), getattr(again, f)) for f in ("noise", "sigmas", "drop_visual", "drop_text"))
    assert 10 < int(first.drop_visual.sum()) < 54  # about half are dropped


def test_dropout_uses_the_learned_null_video_and_the_empty_prompt():
    model = small_dit().eval()
    null_text = torch.randn(7, model.config.text_dim)
    loss = FlowMatchingLoss(model, ObjectiveConfig(repa_weight=0), null_text)
    batch = fake_batch(model)
    dropped = loss(batch, fixed_draws(model, drop_visual=True, drop_text=True))["flow"]
    nulls = {**batch, "text": null_text.expand(2, -1, -1), "clip": model.null_clip(2, batch["clip"].shape[1]),
             "sync": model.null_sync(2, batch["sync"].shape[1])}
    by_hand = loss(nulls, fixed_draws(model))["flow"]
    kept = loss(batch, fixed_draws(model))["flow"]
    assert torch.equal(dropped, by_hand) and not torch.equal(dropped, kept)
    # The dropped video is exactly what `prepare(..., clip=None, sync=None)` gives at inference.
    x = torch.randn(2, model.config.latent_dim, LATENT)
    conditions = model.prepare(batch["text"], None, None, LATENT)
    manual = model.prepare(batch["text"], nulls["clip"], nulls["sync"], LATENT)
    torch.testing.assert_close(model.velocity(x, torch.tensor(500.0), conditions),
                               model.velocity(x, torch.tensor(500.0), manual))


def test_repa_changes_the_gradients_of_the_blocks_up_to_its_layer_only():
    model = small_dit(single_blocks=3)
    settings = ObjectiveConfig(repa_weight=0.5, repa_depth=2)
    with_repa = FlowMatchingLoss(model, settings, torch.zeros(7, model.config.text_dim), repa_dim=12)
    without = FlowMatchingLoss(model, replace(settings, repa_weight=0.0), torch.zeros(7, model.config.text_dim))
    batch, draws = fake_batch(model), fixed_draws(model)

    def gradients(module):
        model.zero_grad(set_to_none=True)
        parts = module(batch, draws)
        parts["loss"].backward()
        return parts, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    parts, repa = gradients(with_repa)
    _, plain = gradients(without)
    assert parts["repa"] > 0 and parts["loss"] > parts["flow"]
    after = [n for n in plain if n.startswith(("single_blocks.2.", "final_layer."))]
    # Below: every parameter that gets a gradient at all (the last triple block's visual stream and
    # the unused null features get none).
    below = [n for n in plain if n.startswith(("single_blocks.0.", "single_blocks.1.", "triple_blocks.", "time_in.",
                                               "sync_in.", "cond_in.")) and plain[n].abs().max() > 0]
    assert len(after) == 13 and len(below) > 40
    assert all(torch.equal(repa[n], plain[n]) for n in after)
    assert [n for n in below if torch.allclose(repa[n], plain[n], rtol=1e-4, atol=1e-8)] == []


def test_repa_loss_is_one_minus_cosine_on_pooled_frames():
    projected = torch.randn(2, 5, 4)
    assert repa_loss(projected, projected.repeat_interleave(3, dim=1)).item() == pytest.approx(0.0, abs=1e-6)
    assert repa_loss(projected, -projected).item() == pytest.approx(2.0, abs=1e-6)


def test_repa_on_a_missing_block_or_without_targets_is_refused():
    model = small_dit(single_blocks=2)
    with pytest.raises(ValueError, match="output of single block 8 but the model has 2"):
        FlowMatchingLoss(model, ObjectiveConfig(repa_depth=8), torch.zeros(7, 32), repa_dim=4)
    with pytest.raises(ValueError, match="cache holds none"):
        FlowMatchingLoss(model, ObjectiveConfig(repa_depth=1), torch.zeros(7, 32), repa_dim=None)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients_with_adapters_and_repa():
    from syncfoley.training.config import LoraSettings
    from syncfoley.training.lora import add_lora

    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the adapters' and the projector's initial weights
        model = small_dit(single_blocks=3)
        add_lora(model, LoraSettings(rank=2))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.fill_(0.01)
        model.gradient_checkpointing = checkpointing
        loss = FlowMatchingLoss(model, ObjectiveConfig(repa_depth=2), torch.zeros(7, 32), repa_dim=12).train()
        parts = loss(fake_batch(model), fixed_draws(model))
        parts["loss"].backward()
        results.append((parts["loss"], {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (plain, plain_grads), (checkpointed, checkpointed_grads) = results
    assert torch.equal(plain, checkpointed) and plain_grads.keys() == checkpointed_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-5, atol=1e-7)
