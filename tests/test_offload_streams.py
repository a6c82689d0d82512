"""Block streaming's stream logic: the order of copies, events, waits, record_stream and releases,
checked without a GPU through a recording stand-in for the CUDA stream API; on a CUDA machine, the
real streams give the resident model's output with copies issued on the side stream."""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from syncfoley.models.offload import BlockOffloader, CudaStreams

MAIN, SIDE = "main", "side"


class ToyDiT(nn.Module):
    """The attributes the offloader reads (`triple_blocks`, `single_blocks`) around a chain of Linears."""

    def __init__(self, triple: int = 2, single: int = 3, width: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(width, width)
        self.triple_blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(triple))
        self.single_blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(single))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in [*self.triple_blocks, *self.single_blocks]:
            x = torch.tanh(block(x))
        return x


class FakeStream:
    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def wait_event(self, event: "FakeEvent") -> None:
        self.log.append(("wait", self.name, event.number))


class FakeEvent:
    def __init__(self, number: int, log: list):
        self.number, self.log = number, log

    def record(self, stream: FakeStream) -> None:
        self.log.append(("record", self.number, stream.name))


class RecordingStreams:
    """`CudaStreams`' methods, writing what is asked of them into `log` (blocks named by index)."""

    def __init__(self):
        self.log: list[tuple] = []
        self.active: list[str] = []  # the streams whose context is open, innermost last
        self.main = FakeStream(MAIN, self.log)
        self.events = 0
        self.owner = lambda tensor: None  # set by the test: which block a tensor belongs to

    def side_stream(self, device):
        return FakeStream(SIDE, self.log)

    @contextmanager
    def use(self, stream: FakeStream):
        self.active.append(stream.name)
        try:
            yield
        finally:
            self.active.pop()

    def event(self) -> FakeEvent:
        self.events += 1
        return FakeEvent(self.events, self.log)

    def current(self) -> FakeStream:
        return self.main

    def record_stream(self, tensor: torch.Tensor, stream: FakeStream) -> None:
        self.log.append(("record_stream", self.owner(tensor), stream.name))


class CopySpy(TorchDispatchMode):
    """Logs every copy made from a block's CPU storage, with the stream whose context was open."""

    def __init__(self, streams: RecordingStreams, storages: dict[int, int]):
        super().__init__()
        self.streams, self.storages = streams, storages

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default and args[0].data_ptr() in self.storages:
            stream = self.streams.active[-1] if self.streams.active else MAIN
            self.streams.log.append(("copy", self.storages[args[0].data_ptr()], stream))
        return func(*args, **(kwargs or {}))


def attach_recorded(model: ToyDiT, resident: int):
    streams = RecordingStreams()
    offloader = BlockOffloader(model, "cpu", resident=resident, streams=streams).attach()
    blocks = offloader.blocks
    streams.owner = lambda tensor: next(
        (i for i, b in enumerate(blocks) for p in b.parameters() if p.data_ptr() == tensor.data_ptr()), None)
    for i, block in enumerate(blocks):  # the offloader's hooks were registered first
        block.register_forward_pre_hook(lambda m, a, i=i: streams.log.append(("run", i)))
        block.register_forward_hook(lambda m, a, o, i=i: streams.log.append(("ran", i)), prepend=True)
    for entry in offloader.streamed:  # after the offloader's release hook: back on the CPU storage?
        entry.block.register_forward_hook(lambda m, a, o, e=entry: streams.log.append(
            ("released", blocks.index(e.block), on_storage(e))))
    storages = {s.data_ptr(): blocks.index(e.block) for e in offloader.streamed for s in e.storage}
    return offloader, streams, CopySpy(streams, storages)


def on_storage(entry) -> bool:
    return all(p.data_ptr() == s.data_ptr() for p, s in zip(entry.params, entry.storage))


# What the schedule must be, block by block (two tensors per Linear: weight and bias); events are
# numbered in the order they are made.
def stage(block: int, event: int) -> list[tuple]:
    return [("copy", block, SIDE)] * 2 + [("record", event, SIDE)]


def wait(block: int, event: int) -> list[tuple]:
    return [("wait", MAIN, event)] + [("record_stream", block, MAIN)] * 2


def run(block: int) -> list[tuple]:
    return [("run", block), ("ran", block)]


def run_and_release(block: int) -> list[tuple]:
    return run(block) + [("released", block, True)]


def test_stream_schedule_copies_ahead_waits_records_and_releases():
    model = ToyDiT()
    x = torch.randn(3, 8)
    with torch.no_grad():
        expected = model(x)
    offloader, streams, spy = attach_recorded(model, resident=1)
    with torch.no_grad(), spy:
        first = model(x)
        second = model(x)
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(second, expected, rtol=0, atol=0)

    # Block 0 is resident: it runs with no stream work. Blocks 1..4 are streamed: each one's copy is
    # issued on the side stream while the block before it computes, the compute stream waits for
    # its event and marks its tensors as used there before it runs, and its copy is dropped after.
    schedule = (run(0) + stage(1, 1) + wait(1, 1) + stage(2, 2) + run_and_release(1)
                + wait(2, 2) + stage(3, 3) + run_and_release(2)
                + wait(3, 3) + stage(4, 4) + run_and_release(3)
                + wait(4, 4) + stage(1, 5) + run_and_release(4))  # the next forward's first block, ahead
    second_pass = (run(0) + wait(1, 5) + stage(2, 6) + run_and_release(1)
                   + wait(2, 6) + stage(3, 7) + run_and_release(2)
                   + wait(3, 7) + stage(4, 8) + run_and_release(3)
                   + wait(4, 8) + stage(1, 9) + run_and_release(4))
    assert streams.log == schedule + second_pass

    streams.log.clear()
    entries = list(offloader.streamed)
    offloader.detach()
    assert all(on_storage(e) for e in entries)
    with torch.no_grad():  # detached: the hooks are gone and the weights are the CPU storage again
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    assert [entry for entry in streams.log if entry[0] not in ("run", "ran", "released")] == []


def test_a_single_streamed_block_is_not_prefetched_onto_itself():
    model = ToyDiT(triple=1, single=1)
    offloader, streams, spy = attach_recorded(model, resident=1)
    with torch.no_grad(), spy:
        model(torch.randn(2, 8))
        model(torch.randn(2, 8))
    assert streams.log == (run(0) + stage(1, 1) + wait(1, 1) + run_and_release(1)
                           + run(0) + stage(1, 2) + wait(1, 2) + run_and_release(1))
    offloader.detach()


def test_without_a_stream_api_on_the_cpu_nothing_asks_for_streams(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the CPU path must not touch the stream API")

    for name in ("side_stream", "use", "event", "current", "record_stream"):
        monkeypatch.setattr(CudaStreams, name, staticmethod(refuse))
    model = ToyDiT()
    x = torch.randn(3, 8)
    with torch.no_grad():
        expected = model(x)
    offloader = BlockOffloader(model, "cpu", resident=2).attach()
    assert offloader.stream is None
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    offloader.detach()


class SpyingCudaStreams(CudaStreams):
    """The real CUDA API, noting which stream each copy and event ran on."""

    copies_on: list = []
    events_on: list = []
    marked_for: list = []

    @classmethod
    @contextmanager
    def use(cls, stream):
        with torch.cuda.stream(stream):
            cls.copies_on.append(torch.cuda.current_stream())
            yield

    @classmethod
    def event(cls):
        log = cls.events_on

        class Event(torch.cuda.Event):
            def record(self, stream=None):
                log.append(stream)
                super().record(stream)

        return Event()

    @classmethod
    def record_stream(cls, tensor, stream):
        cls.marked_for.append(stream)
        tensor.record_stream(stream)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_streaming_gives_the_resident_output_with_copies_on_the_side_stream():
    from syncfoley.perf.bench import random_dit, random_features

    model = random_dit("tiny", "2,2")
    text, visual = random_features(model, 2.0)
    length = model.config.latent_length(2.0)
    inputs = [torch.randn(2, model.config.latent_dim, length), torch.full((2,), 500.0),
              text.positive.expand(2, -1, -1), visual.clip.expand(2, -1, -1), visual.sync.expand(2, -1, -1)]
    inputs = [t.cuda() for t in inputs]
    with torch.no_grad():
        resident = model.cuda()(*inputs)
    model.cpu()
    offloader = BlockOffloader(model, "cuda", resident=1, streams=SpyingCudaStreams).attach()
    entries = list(offloader.streamed)
    try:
        assert all(s.is_pinned() for e in entries for s in e.storage)  # async copies need pinned memory
        with torch.no_grad():
            streamed = [model(*inputs) for _ in range(2)]
        torch.cuda.synchronize()
    finally:
        offloader.detach()
    for output in streamed:
        torch.testing.assert_close(output, resident, rtol=0, atol=0)
    side, compute = offloader.stream, torch.cuda.current_stream()
    assert side != compute
    assert SpyingCudaStreams.copies_on and all(s == side for s in SpyingCudaStreams.copies_on)
    assert SpyingCudaStreams.events_on and all(s == side for s in SpyingCudaStreams.events_on)
    assert SpyingCudaStreams.marked_for and all(s == compute for s in SpyingCudaStreams.marked_for)
    assert all(p.device.type == "cpu" for e in entries for p in e.params)  # released to pinned CPU memory
