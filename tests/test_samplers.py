"""Samplers integrate analytic flow fields with their designed order of accuracy."""
from __future__ import annotations

import math

import pytest
import torch

from syncfoley.sampling.samplers import SAMPLERS, euler, get_sampler
from syncfoley.sampling.schedules import cosine_sigmas, linear_sigmas, make_sigmas

MU, STD = 0.3, 0.5  # the "data" is N(MU, STD^2) per dimension


def gaussian_flow_velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Exact velocity of x = (1 - sigma) data + sigma noise for Gaussian data.

    The deterministic trajectory from noise e is x(sigma) = (1 - sigma) MU + g(sigma) e with
    g = sqrt((1 - sigma)^2 STD^2 + sigma^2), so dx/dsigma = -MU + g'/g (x - (1 - sigma) MU).
    """
    sigma = sigma.double()
    g2 = (1 - sigma) ** 2 * STD**2 + sigma**2
    dg_over_g = (-(1 - sigma) * STD**2 + sigma) / g2
    return -MU + dg_over_g * (x - (1 - sigma) * MU)


def exact_endpoint(noise: torch.Tensor) -> torch.Tensor:
    return MU + STD * noise


@pytest.fixture(scope="module")
def noise():
    return torch.randn(4, 8, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def integrate(name, noise, steps, schedule=linear_sigmas):
    sigmas = schedule(steps).double()
    return SAMPLERS[name](gaussian_flow_velocity, noise.clone(), sigmas)


SCHEDULES = {"linear": linear_sigmas, "shifted": lambda n: linear_sigmas(n, shift=3.0), "cosine": cosine_sigmas}


@pytest.mark.parametrize("name, order, steps, schedules", [
    ("euler", 1, 16, SCHEDULES), ("heun", 2, 8, SCHEDULES), ("midpoint", 2, 8, SCHEDULES), ("rk4", 4, 4, SCHEDULES),
    # DPM-Solver's order holds in log-SNR steps; uniform-sigma schedules keep O(1) log-SNR steps at
    # both ends, so its asymptotic order only shows on a schedule dense at both ends.
    ("dpmpp_2m", 2, 32, {"cosine": cosine_sigmas}),
])
def test_error_order(name, order, steps, schedules, noise):
    for label, schedule in schedules.items():
        errors = [(integrate(name, noise, n, schedule) - exact_endpoint(noise)).abs().max().item()
                  for n in (steps, 2 * steps)]
        observed = math.log2(errors[0] / errors[1])
        assert observed > order - 0.35, f"{name}/{label}: observed order {observed:.2f}, errors {errors}"


def test_samplers_update_in_fp32_whatever_the_model_returns(noise):
    def bf16_velocity(x, sigma):
        return gaussian_flow_velocity(x, sigma).to(torch.bfloat16)

    out = euler(bf16_velocity, noise.float(), linear_sigmas(8))
    assert out.dtype == torch.float32


def test_callback_reports_every_step_and_can_interrupt(noise):
    seen = []
    integrate_with = lambda cb: SAMPLERS["heun"](gaussian_flow_velocity, noise.float(), linear_sigmas(5), cb)  # noqa: E731
    integrate_with(lambda info: seen.append((info["i"], info["steps"], float(info["sigma"]))))
    assert [s[0] for s in seen] == list(range(5)) and {s[1] for s in seen} == {5}
    assert seen[0][2] == 1.0

    class Stop(Exception):
        pass

    calls = []

    def interrupt(info):
        calls.append(info["i"])
        if info["i"] == 1:
            raise Stop()

    with pytest.raises(Stop):
        integrate_with(interrupt)
    assert calls == [0, 1]


def test_schedules():
    torch.testing.assert_close(linear_sigmas(50), torch.linspace(1, 0, 51), rtol=0, atol=0)
    shifted = linear_sigmas(10, shift=5.0)
    assert shifted[0] == 1 and shifted[-1] == 0 and bool((shifted[1:] < shifted[:-1]).all())
    assert shifted[5] == pytest.approx(5 * 0.5 / (1 + 4 * 0.5))
    cosine = make_sigmas("cosine", 10)
    assert cosine[0] == 1 and cosine[-1] == 0 and bool((cosine[1:] < cosine[:-1]).all())
    with pytest.raises(ValueError, match="unknown schedule 'nope'"):
        make_sigmas("nope", 10)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        linear_sigmas(0)
    with pytest.raises(ValueError, match="unknown sampler 'ddim'; choose one of euler"):
        get_sampler("ddim")
