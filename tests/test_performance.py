"""Memory and speed variants compute what the plain model computes: offloading, fp8, compile."""
from __future__ import annotations

import pytest
import torch

from syncfoley.models.dit import FoleyDiT
from syncfoley.models.offload import BlockOffloader
from syncfoley.perf.memory import track_peak_memory


@pytest.fixture()
def model_and_inputs(parity):
    _, state_dict, io = parity("hvf_tiny")
    model = FoleyDiT.from_checkpoint(state_dict)
    return model, io


def velocity(model, io):
    with torch.no_grad():
        return model(io["x"], io["t"], io["text"], io["clip"], io["sync"])


@pytest.mark.parametrize("resident", [0, 1, 3])
def test_block_offloading_gives_identical_outputs(model_and_inputs, resident):
    model, io = model_and_inputs
    expected = velocity(model, io)
    offloader = BlockOffloader(model, "cpu", resident=resident).attach()
    streamed = offloader.streamed
    assert len(streamed) == 4 - resident
    seen = {}

    def spy(entry):
        def hook(module, args, output):  # runs before the offloader's release hook
            seen[id(entry)] = all(t.data_ptr() != s.data_ptr() for t, s in zip(entry.params, entry.storage))
        return hook

    spies = [entry.block.register_forward_hook(spy(entry), prepend=True) for entry in streamed]
    torch.testing.assert_close(velocity(model, io), expected, rtol=0, atol=0)
    # Each streamed block ran on a staged copy of its weights and let it go afterwards.
    assert seen and all(seen.values()) and len(seen) == len(streamed)
    assert all(not entry.staged or entry is streamed[0] for entry in streamed)
    for handle in spies:
        handle.remove()
    offloader.detach()
    assert all(t.data_ptr() == s.data_ptr() for e in streamed for t, s in zip(e.params, e.storage))
    torch.testing.assert_close(velocity(model, io), expected, rtol=0, atol=0)


def test_offloading_bounds_the_weights_in_use(model_and_inputs):
    model, io = model_and_inputs
    offloader = BlockOffloader(model, "cpu", resident=0).attach()
    block_bytes = max(sum(t.numel() * t.element_size() for t in e.storage) for e in offloader.streamed)
    with track_peak_memory() as offloaded:
        velocity(model, io)
    offloader.detach()
    with track_peak_memory() as plain:
        velocity(model, io)
    # Staged weights add at most two blocks (the running one and the prefetched one).
    assert offloaded.peak_bytes - plain.peak_bytes <= 2 * block_bytes + 2**20
    assert offloader.streamed == []


def test_compiled_blocks_match_the_plain_model(model_and_inputs):
    model, io = model_and_inputs
    expected = velocity(model, io)
    torch._dynamo.reset()
    model.compile_blocks(backend="aot_eager", dynamic=False)
    compiled = [vars(b)["forward"] for b in [*model.triple_blocks, *model.single_blocks]]
    model.compile_blocks(backend="aot_eager")  # a second call leaves the compiled blocks alone
    assert [vars(b)["forward"] for b in [*model.triple_blocks, *model.single_blocks]] == compiled
    torch.testing.assert_close(velocity(model, io), expected, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


@pytest.mark.parametrize("kernel, padding, length", [(3, 1, 37), (3, 0, 20), (5, 2, 16), (1, 0, 9)])
def test_token_conv_is_the_same_convolution(kernel, padding, length):
    from syncfoley.models.ops import TokenConv1d

    torch.manual_seed(0)
    layer = TokenConv1d(24, 40, kernel, padding=padding)
    x = torch.randn(3, 24, length)
    expected = torch.nn.functional.conv1d(x, layer.weight, layer.bias, padding=padding)
    out = layer(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # The Conv1d contract holds: channels-first in and out, gradients flow to the weight.
    out.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.shape == layer.weight.shape
