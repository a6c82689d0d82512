"""The EMA's formula on hand-made tensors: shadow <- d * shadow + (1 - d) * param, with the decay
ramping as min(decay, (1 + n) / (10 + n)); its state round trip and the applied weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from syncfoley.training.checkpoints import EMA


def hand_made_parameters() -> dict[str, nn.Parameter]:
    return {"w": nn.Parameter(torch.tensor([0.0, 10.0, -4.0])), "b": nn.Parameter(torch.tensor([2.0]))}


def test_first_updates_follow_the_ramp():
    params = hand_made_parameters()
    ema = EMA(params, decay=0.999)
    with torch.no_grad():
        params["w"].copy_(torch.tensor([1.0, 0.0, 4.0]))
        params["b"].fill_(3.0)
    ema.update()  # n = 0: d = 1/10, so the shadow moves 90 % of the way to the parameters
    torch.testing.assert_close(ema.shadow["w"], torch.tensor([0.9, 1.0, 3.2]))
    torch.testing.assert_close(ema.shadow["b"], torch.tensor([2.9]))
    with torch.no_grad():
        params["w"].zero_()
    ema.update()  # n = 1: d = 2/11
    torch.testing.assert_close(ema.shadow["w"], torch.tensor([0.9, 1.0, 3.2]) * 2 / 11)
    assert ema.updates == 2


def test_decay_caps_the_ramp():
    params = {"p": nn.Parameter(torch.tensor([0.0]))}
    ema = EMA(params, decay=0.5)
    ema.updates = 100  # the ramp (101/110) is past the cap: d = 0.5
    with torch.no_grad():
        params["p"].fill_(8.0)
    ema.update()
    torch.testing.assert_close(ema.shadow["p"], torch.tensor([4.0]))
    ema.update()
    torch.testing.assert_close(ema.shadow["p"], torch.tensor([6.0]))


def test_distance_to_a_constant_target_shrinks_by_the_decay_each_update():
    params = {"p": nn.Parameter(torch.tensor([0.0]))}
    ema = EMA(params, decay=0.9)
    with torch.no_grad():
        params["p"].fill_(1.0)
    remaining = 1.0
    for n in range(5):  # ramping: 1/10, 2/11, 3/12, 4/13, 5/14
        ema.update()
        remaining *= min(0.9, (1 + n) / (10 + n))
        assert ema.shadow["p"].item() == pytest.approx(1 - remaining, rel=1e-6)
    ema.updates = 1000
    for _ in range(3):  # capped: 0.9
        ema.update()
        remaining *= 0.9
        assert ema.shadow["p"].item() == pytest.approx(1 - remaining, rel=1e-6)


def test_shadow_is_fp32_and_a_copy():
    params = {"p": nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.bfloat16))}
    ema = EMA(params, decay=0.9)
    assert ema.shadow["p"].dtype == torch.float32
    with torch.no_grad():
        params["p"].fill_(5.0)
    torch.testing.assert_close(ema.shadow["p"], torch.tensor([1.0, 2.0]))  # not a view of the parameter


def test_state_round_trip_keeps_the_update_count():
    params = hand_made_parameters()
    ema = EMA(params, decay=0.999)
    with torch.no_grad():
        params["w"].fill_(1.0)
    for _ in range(3):
        ema.update()
    restored = EMA(hand_made_parameters(), decay=0.999)
    restored.load_state_dict({k: v.clone() for k, v in ema.state_dict().items()})
    assert restored.updates == 3
    assert all(torch.equal(restored.shadow[n], ema.shadow[n]) for n in ema.shadow)
    with torch.no_grad():
        restored.parameters["w"].fill_(1.0)
    ema.update(), restored.update()  # the fourth update ramps alike (d = 4/13) in both
    assert all(torch.equal(restored.shadow[n], ema.shadow[n]) for n in ema.shadow)
    with pytest.raises(ValueError, match="lacks 1 parameters .*other trainable parameters"):
        EMA(hand_made_parameters(), 0.9).load_state_dict({"w": torch.zeros(3), "__updates__": torch.tensor(1)})


def test_applied_swaps_the_average_in_and_restores_the_parameters():
    params = hand_made_parameters()
    ema = EMA(params, decay=0.999)
    with torch.no_grad():
        params["w"].fill_(1.0)
    ema.update()
    with ema.applied():
        torch.testing.assert_close(params["w"].detach(), torch.tensor([0.9, 1.9, 0.5]))
    torch.testing.assert_close(params["w"].detach(), torch.tensor([1.0, 1.0, 1.0]))
