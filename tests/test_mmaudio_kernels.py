"""MMAudio's inference kernels (`models/mmaudio_kernels.py`) compute what the plain modules compute.

With autograd off the network takes the kernels; with it on (training) the plain modules. Both are
checked against each other on a small random network of the release's layout (a full and a pre-only
joint block, a fused block; v1 and v2), in CFG's shape and others; the parity vectors of
`test_mmaudio_net.py` check the kernel path against the release itself.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from syncfoley.models import mmaudio_config
from syncfoley.models.mmaudio import MMAudioConditions
from syncfoley.models.mmaudio_kernels import _per_tap, columns, condition_rows, distinct_batch
from syncfoley.models.ops import set_precision
from syncfoley.perf.reference_mmaudio import random_features, random_network

TOLERANCE = 2e-5


def close(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.fixture(scope="module", params=[False, True], ids=["v1", "v2"])
def net(request):
    return random_network(mmaudio_config.sized(20, 2, 3, 1, v2=request.param), seed=3)


def cfg_batch(net, seconds=1.0):
    """The conditional and the empty branch at the same latents, as the sampler batches them."""
    clip, sync, text, noise = random_features(net.config, seconds)
    with torch.no_grad():
        conditions = MMAudioConditions.cat([net.empty_conditions(1, noise.shape[1]),
                                            net.prepare(clip, sync, text, noise.shape[1])])
    return noise.repeat(2, 1, 1), torch.tensor([0.3, 0.3]), conditions


def both_paths(net, x, t, conditions):
    with torch.no_grad():
        fast = net.velocity(x, t, conditions)
    with torch.enable_grad():
        plain = net.velocity(x, t, conditions).detach()
    return fast, plain


def test_kernels_compute_the_modules_function(net):
    x, t, conditions = cfg_batch(net)
    fast, plain = both_paths(net, x, t, conditions)
    assert close(fast, plain) < TOLERANCE
    # Latents that differ per sample (no shared input projection), other times, batch 3, 1 latent.
    other = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    assert close(*both_paths(net, other, torch.tensor([0.1, 0.9]), conditions)) < TOLERANCE
    with torch.no_grad():
        three, single = net.empty_conditions(3, 40), net.empty_conditions(1, 1)
    assert close(*both_paths(net, torch.randn(3, 40, 20), torch.tensor([0.2, 0.5, 0.7]), three)) < TOLERANCE
    assert close(*both_paths(net, torch.randn(1, 1, 20), torch.tensor([0.5]), single)) < TOLERANCE


def test_kernels_leave_wrapped_layers_to_them(net):
    """peft wraps the layers it adapts: a wrapped convolution must run as its wrapper says."""

    class Wrapped(nn.Module):
        def __init__(self, base):
            super().__init__()
            self.base = base

        def forward(self, x):  # a Conv1d's contract: channel-first
            return self.base(x) + 0.5

    ffn = net.fused_blocks[0].ffn
    x, t, conditions = cfg_batch(net)
    with torch.no_grad():
        before = net.velocity(x, t, conditions)
    original = ffn.w2
    try:
        ffn.w2 = Wrapped(original)
        fast, plain = both_paths(net, x, t, conditions)
    finally:
        ffn.w2 = original
    assert close(fast, plain) < TOLERANCE and close(fast, before) > 1e-3


def test_kernels_take_fp8_weights_through_their_scales(net):
    import copy

    stored = set_precision(copy.deepcopy(net), torch.float32, torch.float8_e4m3fn)
    x, t, conditions = cfg_batch(net)
    fast, plain = both_paths(stored, x, t, conditions)
    assert close(fast, plain) < TOLERANCE
    with torch.no_grad():
        assert 1e-4 < close(fast, net.velocity(x, t, conditions)) < 0.1  # fp8-rounded, not another function


def test_convolutions_as_matrix_products():
    x = torch.randn(2, 9, 6, generator=torch.Generator().manual_seed(0))
    for out_dim, k in ((5, 3), (3, 7), (4, 1)):
        weight = torch.randn(out_dim, 6, k)
        expected = F.conv1d(x.transpose(1, 2), weight, padding=k // 2).transpose(1, 2)
        torch.testing.assert_close(F.linear(columns(x, k), weight.flatten(1)), expected)
        torch.testing.assert_close(_per_tap(x, weight, None), expected)
    # Strided multi-axis inputs (attention output as [B, L, heads, D]) count their trailing axes as channels.
    split = x.unflatten(-1, (2, 3)).transpose(0, 1).transpose(0, 1)
    torch.testing.assert_close(columns(split, 3), columns(x, 3))


def test_condition_rows_share_a_samples_repeated_tokens():
    tokens = torch.randn(2, 6, 4)
    tokens[1, 3:] = tokens[1, :3]  # the second sample repeats its first three tokens
    index = torch.tensor([0, 0, 1, 2, 3, 4, 5, 5])
    with torch.no_grad():
        rows, samples, latent_rows = condition_rows(tokens, index)
    assert rows.shape[0] == 6 + 3 and samples.tolist() == [0] * 6 + [1] * 3
    torch.testing.assert_close(rows[latent_rows], tokens[:, index], rtol=0, atol=0)
    plain_rows, plain_samples, plain_latent_rows = condition_rows(tokens, index)  # autograd on: every token
    assert plain_rows.shape[0] == 12 and torch.equal(plain_rows[plain_latent_rows], tokens[:, index])


def test_distinct_batch_finds_the_branches_shared_latents():
    a, b = torch.randn(1, 5, 3), torch.randn(1, 5, 3)
    with torch.no_grad():
        assert distinct_batch(torch.cat([a, a]))[1] == 2
        first, copies = distinct_batch(torch.cat([a, b, a, b]))  # two takes, two branches
        assert copies == 2 and torch.equal(first, torch.cat([a, b]))
        assert distinct_batch(torch.cat([a, b, b]))[1] == 1
    assert distinct_batch(torch.cat([a, a]))[1] == 1  # autograd on: no shortcuts
