"""Progress on a terminal: a bar over the nodes of a run, a bar per sampling loop, and Ctrl-C."""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

from .execute import Listener


class StepBar:
    """What `host().progress(total)` returns in the runner: absolute updates onto a tqdm bar."""

    def __init__(self, bar):
        self.bar = bar

    def update(self, value: int, total: int | None = None) -> None:
        if total and total != self.bar.total:
            self.bar.total = total
        self.bar.n = value
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class TqdmProgress(Listener):
    """One bar over the nodes to execute (named after the running node) and, below it, one bar per
    `host().progress(...)` a node opens (sampling steps), closed when the node finishes."""

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.nodes_bar = None
        self.current = ""
        self.step_bars: list[StepBar] = []

    def _tqdm(self, **kwargs):
        from tqdm import tqdm

        return tqdm(file=self.stream, disable=not self.enabled, dynamic_ncols=True, **kwargs)

    def run_started(self, plan, to_execute) -> None:
        self.nodes_bar = self._tqdm(total=len(to_execute), desc="nodes", unit="node", position=0)

    def node_started(self, node_id: str, class_type: str) -> None:
        self.current = f"{class_type} #{node_id}"
        if self.nodes_bar is not None:
            self.nodes_bar.set_description(self.current)

    def node_finished(self, node_id: str, class_type: str, cached: bool) -> None:
        self._close_steps()
        if not cached and self.nodes_bar is not None:
            self.nodes_bar.update(1)

    def run_finished(self) -> None:
        self._close_steps()
        if self.nodes_bar is not None:
            self.nodes_bar.set_description("done")
            self.nodes_bar.close()
            self.nodes_bar = None

    def step_bar(self, total: int, description: str = "") -> StepBar:
        """The host's progress_factory."""
        bar = StepBar(self._tqdm(total=total, desc=description or self.current or "steps", unit="step",
                                 position=1, leave=False))
        self.step_bars.append(bar)
        return bar

    def _close_steps(self) -> None:
        for bar in self.step_bars:
            bar.close()
        self.step_bars.clear()


@contextmanager
def stop_on_ctrl_c(event: threading.Event, stream=None):
    """First Ctrl-C asks the nodes to stop at their next step (the host's interrupt event); a second
    one aborts at once. Outside the main thread (no signals there) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stream = stream or sys.stderr

    def handler(signum, frame):
        if event.is_set():
            raise KeyboardInterrupt
        event.set()
        print("\nstopping at the next step (Ctrl-C again to abort now)", file=stream, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
