"""Peak memory of a block of code: the CUDA allocator's high-water mark on GPUs, and on CPUs a
tracker that counts the bytes of every tensor storage created inside the block while it lives.

Memory that existed before the block (weights, inputs) is not counted, so the figure is the
working memory the block needed.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


@dataclass
class PeakMemory:
    peak_bytes: int = 0

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


class _StorageTracker(TorchDispatchMode):
    """Counts storages created by dispatched ops; a storage is freed when its last tensor dies."""

    def __init__(self, result: PeakMemory):
        super().__init__()
        self.result = result
        self.live_bytes = 0
        self.refs: dict[int, list[int]] = {}  # storage pointer -> [tensor count, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu" and not tensor.is_meta:
                self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if key == 0 or nbytes == 0:
            return
        entry = self.refs.get(key)
        if entry is None:
            entry = self.refs[key] = [0, nbytes]
            self.live_bytes += nbytes
            self.result.peak_bytes = max(self.result.peak_bytes, self.live_bytes)
        entry[0] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int):
        entry = self.refs.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] <= 0:
            self.live_bytes -= entry[1]
            del self.refs[key]


@contextmanager
def track_peak_memory(device: str | torch.device = "cpu"):
    """`with track_peak_memory(device) as peak: ...` then read `peak.peak_bytes`."""
    device = torch.device(device)
    result = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            yield result
        finally:
            torch.cuda.synchronize(device)
            result.peak_bytes = torch.cuda.max_memory_allocated(device) - baseline
        return
    with _StorageTracker(result):
        yield result
