"""Flow-matching ODE samplers as plain functions `(velocity, x, sigmas, callback) -> x`.

`velocity(x, sigma)` returns dx/dsigma for the path `x = (1 - sigma) * data + sigma * noise`; sigma
goes from 1 to 0. Samplers know nothing of guidance or networks. Updates run in fp32 (as the
reference does) whatever the network computes in. `callback(info)` runs after every step with
`{"i", "steps", "x", "sigma", "sigma_next", "denoised"}`; raising from it stops sampling (that is
how interruption works).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None] | None


def _working_precision(x: torch.Tensor) -> torch.Tensor:
    """fp32 for half-precision inputs; fp64 stays fp64 (analytic tests integrate in double)."""
    return x if x.dtype == torch.float64 else x.float()


def _v(velocity: Velocity, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return velocity(x, sigma).to(x.dtype)


def _report(callback: Callback, i: int, sigmas: torch.Tensor, x: torch.Tensor, denoised: torch.Tensor):
    if callback is not None:
        callback({"i": i, "steps": len(sigmas) - 1, "x": x, "sigma": sigmas[i], "sigma_next": sigmas[i + 1],
                  "denoised": denoised})


def _steps(sigmas: torch.Tensor):
    values = sigmas.tolist()  # one host read up front, none inside the loop
    return [(i, sigmas[i], sigmas[i + 1], values[i + 1] - values[i]) for i in range(len(values) - 1)]


@torch.no_grad()
def euler(velocity: Velocity, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback = None) -> torch.Tensor:
    """First order; with the linear schedule this is the reference loop exactly."""
    x = _working_precision(x)
    for i, sigma, _, dt in _steps(sigmas):
        v = _v(velocity, x, sigma)
        denoised = x - sigma * v
        x = x + v * dt
        _report(callback, i, sigmas, x, denoised)
    return x


@torch.no_grad()
def heun(velocity: Velocity, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback = None) -> torch.Tensor:
    """Second order (trapezoidal predictor-corrector), two evaluations per step."""
    x = _working_precision(x)
    for i, sigma, sigma_next, dt in _steps(sigmas):
        v1 = _v(velocity, x, sigma)
        v2 = _v(velocity, x + v1 * dt, sigma_next)
        denoised = x - sigma * v1
        x = x + (v1 + v2) * (dt / 2)
        _report(callback, i, sigmas, x, denoised)
    return x


@torch.no_grad()
def midpoint(velocity: Velocity, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback = None) -> torch.Tensor:
    """Second order, two evaluations per step (the second at the half step)."""
    x = _working_precision(x)
    for i, sigma, sigma_next, dt in _steps(sigmas):
        v1 = _v(velocity, x, sigma)
        v2 = _v(velocity, x + v1 * (dt / 2), (sigma + sigma_next) / 2)
        denoised = x - sigma * v1
        x = x + v2 * dt
        _report(callback, i, sigmas, x, denoised)
    return x


@torch.no_grad()
def rk4(velocity: Velocity, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback = None) -> torch.Tensor:
    """Classical fourth-order Runge-Kutta, four evaluations per step."""
    x = _working_precision(x)
    for i, sigma, sigma_next, dt in _steps(sigmas):
        half = (sigma + sigma_next) / 2
        k1 = _v(velocity, x, sigma)
        k2 = _v(velocity, x + k1 * (dt / 2), half)
        k3 = _v(velocity, x + k2 * (dt / 2), half)
        k4 = _v(velocity, x + k3 * dt, sigma_next)
        denoised = x - sigma * k1
        x = x + (k1 + 2 * k2 + 2 * k3 + k4) * (dt / 6)
        _report(callback, i, sigmas, x, denoised)
    return x


@torch.no_grad()
def dpmpp_2m(velocity: Velocity, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(2M) on the data prediction `x - sigma * v`: second order, one evaluation per step.

    On the path x = alpha * data + sigma * noise (alpha = 1 - sigma) with h the step in
    log(alpha / sigma), a step is x' = (sigma' / sigma) x + alpha' (1 - e^-h) D, where D
    extrapolates the data predictions of this and the previous step. Steps touching sigma = 1 or
    sigma = 0 have an infinite h and are first order (D = this step's prediction).
    """
    x = _working_precision(x)
    values = sigmas.double().tolist()
    previous_denoised, previous_h = None, math.inf
    for i, sigma, _, _ in _steps(sigmas):
        s, s_next = values[i], values[i + 1]
        denoised = x - sigma * _v(velocity, x, sigma)
        alpha, alpha_next = 1 - s, 1 - s_next
        decay = (alpha * s_next) / (s * alpha_next)  # e^-h
        h = -math.log(decay) if decay > 0 else math.inf
        if previous_denoised is not None and math.isfinite(h) and math.isfinite(previous_h):
            r = previous_h / h
            estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous_denoised
        else:
            estimate = denoised
        x = (s_next / s) * x + (alpha_next * (1 - decay)) * estimate
        previous_denoised, previous_h = denoised, h
        _report(callback, i, sigmas, x, denoised)
    return x


SAMPLERS = {"euler": euler, "heun": heun, "midpoint": midpoint, "rk4": rk4, "dpmpp_2m": dpmpp_2m}
EVALUATIONS_PER_STEP = {"euler": 1, "heun": 2, "midpoint": 2, "rk4": 4, "dpmpp_2m": 1}


def get_sampler(name: str):
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}") from None
