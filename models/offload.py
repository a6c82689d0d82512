"""Block-wise weight offloading: the DiT runs on the GPU while most of its blocks live in CPU memory.

The first `resident` blocks stay on the compute device. Every other block keeps its weights in
pinned CPU memory; just before it runs they are copied to the device, and the copy of the *next*
streamed block starts at the same time on a side stream, so transfers overlap computation. After a
block runs its device copy is dropped. Peak weight memory is the resident blocks plus two streamed
blocks, whatever the depth.

The CUDA stream calls go through `CudaStreams`; passing another object with the same methods
(`streams=`) runs the same scheduling without a GPU, which is how the ordering is tested.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class CudaStreams:
    """The stream API the offloader uses: a side stream, running work on it, events, the compute
    stream, and telling the allocator that a tensor made on one stream is used on another."""

    @staticmethod
    def side_stream(device: torch.device):
        return torch.cuda.Stream(device)

    @staticmethod
    def use(stream):
        return torch.cuda.stream(stream)

    @staticmethod
    def event():
        return torch.cuda.Event()

    @staticmethod
    def current():
        return torch.cuda.current_stream()

    @staticmethod
    def record_stream(tensor: torch.Tensor, stream) -> None:
        tensor.record_stream(stream)


class _StreamedBlock:
    def __init__(self, block: nn.Module, pin: bool, streams=CudaStreams):
        self.block = block
        self.streams = streams
        self.params = [p for p in block.parameters()] + [b for b in block.buffers()]
        self.storage = [t.data.pin_memory() if pin else t.data for t in self.params]
        for tensor, stored in zip(self.params, self.storage):
            tensor.data = stored
        self.ready: torch.cuda.Event | None = None
        self.staged = False

    def stage(self, device: torch.device, stream) -> None:
        """Copy the weights to `device` (on `stream` when given) unless already there."""
        if self.staged:
            return
        context = self.streams.use(stream) if stream is not None else _null()
        with context:
            for tensor, stored in zip(self.params, self.storage):
                tensor.data = stored.to(device, non_blocking=True, copy=True)
            if stream is not None:
                self.ready = self.streams.event()
                self.ready.record(stream)
        self.staged = True

    def wait(self) -> None:
        if self.ready is not None:
            current = self.streams.current()
            current.wait_event(self.ready)
            for tensor in self.params:  # memory made on the side stream is used on this one
                self.streams.record_stream(tensor.data, current)
            self.ready = None

    def release(self) -> None:
        for tensor, stored in zip(self.params, self.storage):
            tensor.data = stored
        self.staged = False


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class BlockOffloader:
    """Attach to a FoleyDiT: `BlockOffloader(model, device, resident=4).attach()`; `detach()` undoes it.

    Copies run on a side stream on CUDA devices, or wherever `streams` (see `CudaStreams`) is given.
    """

    def __init__(self, model: nn.Module, device: str | torch.device, resident: int = 0, pin_memory: bool | None = None,
                 streams=None):
        self.model = model
        self.device = torch.device(device)
        self.resident = max(0, resident)
        use_cuda = self.device.type == "cuda"
        self.pin = use_cuda if pin_memory is None else pin_memory
        self.streams = streams or CudaStreams
        self.stream = self.streams.side_stream(self.device) if use_cuda or streams is not None else None
        self.streamed: list[_StreamedBlock] = []
        self.handles = []

    @property
    def blocks(self) -> list[nn.Module]:
        return block_sequence(self.model)

    def attach(self) -> "BlockOffloader":
        blocks = self.blocks
        streamed = blocks[self.resident:]
        streamed_ids = {id(b) for b in streamed}
        # Everything but the streamed blocks goes to the device once.
        for child in self.model.children():
            if not isinstance(child, nn.ModuleList):
                child.to(self.device)
        for param in self.model._parameters.values():
            if param is not None:
                param.data = param.data.to(self.device)
        for block in blocks:
            if id(block) not in streamed_ids:
                block.to(self.device)
            else:
                block.to("cpu")
        self.streamed = [_StreamedBlock(block, self.pin, self.streams) for block in streamed]
        for i, entry in enumerate(self.streamed):
            following = self.streamed[(i + 1) % len(self.streamed)]
            self.handles.append(entry.block.register_forward_pre_hook(self._before(entry, following)))
            self.handles.append(entry.block.register_forward_hook(self._after(entry)))
        return self

    def _before(self, entry: _StreamedBlock, following: _StreamedBlock):
        def hook(module, args):
            entry.stage(self.device, self.stream)
            entry.wait()
            if following is not entry:  # start the next block's copy while this one computes
                following.stage(self.device, self.stream)
        return hook

    def _after(self, entry: _StreamedBlock):
        def hook(module, args, output):
            entry.release()
        return hook

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        for entry in self.streamed:
            entry.release()
        self.streamed.clear()

    def streamed_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for entry in self.streamed for t in entry.storage)


def block_sequence(model: nn.Module) -> list[nn.Module]:
    """The blocks a network runs one after another: the members of its own `nn.ModuleList`s, in the
    order they are registered (the Foley DiT's triple then single blocks, MMAudio's joint then fused
    blocks)."""
    return [block for child in model.children() if isinstance(child, nn.ModuleList) for block in child]


@contextmanager
def blocks_streamed(model: nn.Module, device: str | torch.device, resident: int, home: str | torch.device = "cpu"):
    """Run `model` on `device` holding at most `resident` of its blocks there, the rest streamed;
    afterwards the whole model goes back to `home`. With `resident` >= the block count it is moved
    whole."""
    if resident >= len(block_sequence(model)):
        with moved_to([model], device, home):
            yield None
        return
    offloader = BlockOffloader(model, device, resident).attach()
    try:
        yield offloader
    finally:
        offloader.detach()
        model.to(home)


@contextmanager
def moved_to(modules: list[nn.Module], device: str | torch.device, home: str | torch.device = "cpu"):
    """Run with `modules` on `device`; afterwards they go back to `home`."""
    device, home = torch.device(device), torch.device(home)
    for module in modules:
        module.to(device)
    try:
        yield
    finally:
        if device != home:
            for module in modules:
                module.to(home)
