"""What single sampler steps compute, on fields where the answer is known in closed form: the data
estimate the previews show, and DPM-Solver++(2M)'s extrapolation over unequal steps (which the
error-order tests cannot see: a wrong step ratio changes the error's constant, not its order)."""
from __future__ import annotations

import math

import pytest
import torch

from syncfoley.sampling.samplers import SAMPLERS, dpmpp_2m

MU, STD = 0.3, 0.5  # the data is N(MU, STD^2) per dimension


def gaussian_velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """dx/dsigma of the probability-flow ODE of x = (1 - sigma) data + sigma noise."""
    sigma = sigma.double()
    g2 = (1 - sigma) ** 2 * STD**2 + sigma**2
    return -MU + (sigma - (1 - sigma) * STD**2) / g2 * (x - (1 - sigma) * MU)


def posterior_mean(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[data | x] by Bayes for Gaussian data: what `x - sigma * v` must equal."""
    a = 1 - sigma
    return MU + a * STD**2 / (a * a * STD**2 + sigma * sigma) * (x - a * MU)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_previews_show_the_posterior_mean_of_the_step_start(name):
    noise = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sigmas = torch.linspace(1, 0, 6, dtype=torch.float64)
    starts, reports = [noise], []

    def callback(info):
        reports.append((float(info["sigma"]), info["denoised"]))
        starts.append(info["x"])

    SAMPLERS[name](gaussian_velocity, noise.clone(), sigmas, callback)
    assert len(reports) == 5
    torch.testing.assert_close(reports[0][1], torch.full_like(noise, MU))  # pure noise says nothing but the mean
    for (sigma, denoised), start in zip(reports, starts):
        torch.testing.assert_close(denoised, posterior_mean(start, sigma))


def log_snr(sigma: float) -> float:
    return math.log((1 - sigma) / sigma)


def sigma_at(lam: float) -> float:
    return 1 / (1 + math.exp(lam))


def test_dpmpp_2m_extrapolates_the_data_prediction_to_the_middle_of_unequal_steps():
    """With a data prediction D equal to the log-SNR itself, the second step's linear extrapolation
    from the last two predictions lands on D at the middle of the step (in log-SNR), whatever the
    ratio of the two step sizes; the steps are exponential-integrator steps
    x' = (sigma' / sigma) x + alpha' (1 - e^-h) D."""
    lambdas = [-1.0, 0.0, 2.0]  # steps of 1 then 2
    sigmas = torch.tensor([sigma_at(lam) for lam in lambdas], dtype=torch.float64)

    def velocity(x, sigma):  # D(x, sigma) = x - sigma v = log-SNR(sigma)
        return (x - log_snr(float(sigma))) / sigma

    x0 = torch.tensor([0.7, -1.2], dtype=torch.float64)
    s0, s1, s2 = sigmas.tolist()
    x1 = (s1 / s0) * x0 + (1 - s1) * (1 - math.exp(-1.0)) * lambdas[0]  # first step: no history yet
    x2 = (s2 / s1) * x1 + (1 - s2) * (1 - math.exp(-2.0)) * (lambdas[1] + 2.0 / 2)
    torch.testing.assert_close(dpmpp_2m(velocity, x0.clone(), sigmas), x2, rtol=1e-12, atol=1e-12)
