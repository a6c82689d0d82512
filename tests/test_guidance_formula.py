"""Guidance formulas pinned on hand-made velocities, where every term's sign and scale shows, and
the prompt and video each branch is given.

CFG: v_u + s (v_c - v_u). SyncCFG: that plus s_sync (v_c - v_anchor), the anchor being the
positive prompt with the first frame held ("static") or the video moved in time ("shift").
"""
from __future__ import annotations

import pytest
import torch
from conftest import random_text_features, random_visual_features

from syncfoley.sampling.guidance import ANCHOR, CFG, COND, UNCOND, SyncCFG, branch_inputs

# Distinct powers of two, so every weighted sum has one decomposition.
V = {UNCOND: torch.tensor([1.0, -2.0]), COND: torch.tensor([4.0, 8.0]), ANCHOR: torch.tensor([16.0, 32.0])}


def test_cfg_combine():
    # 1 + 3 * (4 - 1) = 10 ; -2 + 3 * (8 + 2) = 28
    torch.testing.assert_close(CFG(3.0).combine(V), torch.tensor([10.0, 28.0]), rtol=0, atol=0)
    assert CFG(3.0).branches == (UNCOND, COND)


def test_cfg_at_scale_one_or_below_is_the_conditional_branch_alone():
    for scale in (1.0, 0.5):
        assert CFG(scale).branches == (COND,)
        torch.testing.assert_close(CFG(scale).combine({COND: V[COND]}), V[COND], rtol=0, atol=0)


def test_sync_cfg_combine():
    # CFG part (10, 28) + 0.5 * (cond - anchor) = (10 - 6, 28 - 12)
    out = SyncCFG(3.0, 0.5).combine(V)
    torch.testing.assert_close(out, torch.tensor([4.0, 16.0]), rtol=0, atol=0)
    assert SyncCFG(3.0, 0.5).branches == (UNCOND, COND, ANCHOR)


@pytest.mark.parametrize("scale, sync_scale", [(4.5, 1.0), (3.0, -2.0), (1.0, 2.0), (7.0, 0.0)])
def test_sync_cfg_is_cfg_plus_the_sync_term(scale, sync_scale):
    v = {name: torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(i)) for i, name in enumerate(V)}
    cfg = v[COND] if scale <= 1.0 else v[UNCOND] + scale * (v[COND] - v[UNCOND])
    expected = cfg + sync_scale * (v[COND] - v[ANCHOR])
    guidance = SyncCFG(scale, sync_scale)
    torch.testing.assert_close(guidance.combine({n: v[n] for n in guidance.branches}), expected)


def test_sync_cfg_moves_away_from_the_anchor():
    """The sync term pushes the prediction from the anchor towards the condition: with the CFG part
    fixed, a larger sync scale increases the distance to the anchor's prediction."""
    distances = [(SyncCFG(2.0, s).combine(V) - V[ANCHOR]).norm().item() for s in (0.0, 0.5, 1.0)]
    assert distances[0] < distances[1] < distances[2]


def test_sync_cfg_without_sync_scale_needs_no_anchor():
    assert SyncCFG(3.0, 0.0).branches == (UNCOND, COND)
    torch.testing.assert_close(SyncCFG(3.0, 0.0).combine({UNCOND: V[UNCOND], COND: V[COND]}),
                               torch.tensor([10.0, 28.0]), rtol=0, atol=0)


def assert_same_video(actual, expected):
    assert torch.equal(actual.clip, expected.clip) and torch.equal(actual.sync, expected.sync)


@pytest.mark.parametrize("anchor", ["static", "shift"])
def test_branch_inputs_pair_each_branch_with_its_prompt_and_video(anchor):
    text, visual = random_text_features(), random_visual_features(2.0)
    inputs = branch_inputs(SyncCFG(4.5, 1.0, anchor, 0.32), text, visual)
    assert list(inputs) == [UNCOND, COND, ANCHOR]
    assert inputs[UNCOND][0] is text.negative and inputs[UNCOND][1] is None  # learned null video
    assert inputs[COND][0] is text.positive and inputs[COND][1] is visual
    assert inputs[ANCHOR][0] is text.positive  # the anchor differs from the condition in its video only
    static, shifted = visual.static_anchor(), visual.shifted(0.32)
    assert not torch.equal(static.sync, shifted.sync)  # so the check below tells them apart
    assert_same_video(inputs[ANCHOR][1], static if anchor == "static" else shifted)
