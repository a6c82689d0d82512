"""Peak memory of a block of code: the CUDA allocator's high-water mark on GPUs, and on CPUs a
tracker that counts the bytes of every tensor storage created inside the block while it lives
(memory that libraries allocate for themselves, e.g. oneDNN scratch space, is not seen).

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
    device_peak_bytes: int | None = None  # on GPUs: everything allocated at the peak, weights included

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


class _StorageTracker(TorchDispatchMode):
    """Counts the bytes of storages that dispatched ops create, until each storage dies.

    A storage is followed itself (not the tensors that show it), so memory kept alive by another
    tensor, e.g. a copy assigned to `param.data`, stays counted; an output that shares an input's
    storage (a view of a weight, an in-place result) is not new memory and is not counted.
    """

    def __init__(self, result: PeakMemory):
        super().__init__()
        self.result = result
        self.live_bytes = 0
        self.live: dict[int, int] = {}  # storage pointer -> bytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {_pointer(t) for t in tree_flatten((args, kwargs))[0] if _on_cpu(t)}
        for tensor in tree_flatten(out)[0]:
            if _on_cpu(tensor) and _pointer(tensor) not in inputs:
                self._track(tensor.untyped_storage())
        return out

    def _track(self, storage) -> None:
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if key == 0 or nbytes == 0 or key in self.live:
            return
        self.live[key] = nbytes
        self.live_bytes += nbytes
        self.result.peak_bytes = max(self.result.peak_bytes, self.live_bytes)
        weakref.finalize(storage, self._release, key)

    def _release(self, key: int) -> None:
        self.live_bytes -= self.live.pop(key, 0)


def _on_cpu(tensor) -> bool:
    return isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu" and not tensor.is_meta


def _pointer(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


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
            result.device_peak_bytes = torch.cuda.max_memory_allocated(device)
            result.peak_bytes = result.device_peak_bytes - baseline
        return
    with _StorageTracker(result):
        yield result
