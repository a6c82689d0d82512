"""Progress for the commands: tqdm bars with time left on a terminal, nothing when output is piped."""
from __future__ import annotations

import sys


def wanted(requested: bool = True, stream=None) -> bool:
    """Bars only when asked for and the stream is a terminal (logs and pipes get the result lines)."""
    stream = stream or sys.stderr
    return requested and hasattr(stream, "isatty") and stream.isatty()


def bar(total: float | None, description: str, unit: str = "it", enabled: bool | None = None, stream=None, **options):
    """A tqdm bar on stderr; `enabled=None` means: when stderr is a terminal."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    enabled = wanted(True, stream) if enabled is None else enabled
    return tqdm(total=total, desc=description, unit=unit, file=stream, disable=not enabled, dynamic_ncols=True,
                **options)


class StageProgress:
    """`progress(stage, done, total)`: one bar per stage of a run (video, sampling, decoding, ...),
    each closed when the next stage starts."""

    def __init__(self, enabled: bool | None = None, stream=None, units: dict[str, str] | None = None):
        self.stream = stream or sys.stderr
        self.enabled = wanted(True, self.stream) if enabled is None else enabled
        self.units = units or {}
        self.stage: str | None = None
        self.current = None

    def __call__(self, stage: str, done: float, total: float | None = None) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.current = bar(total, stage, self.units.get(stage, "it"), self.enabled, self.stream)
        if total is not None and total != self.current.total:
            self.current.total = total
        self.current.n = done
        self.current.refresh()

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
        self.current, self.stage = None, None

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
