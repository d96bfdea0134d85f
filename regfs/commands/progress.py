"""What ``regfs prefetch`` reports as layers progress, and how it shows it: a rich progress
bar on a terminal, a plain line per layer otherwise (logs, CI), nothing with ``--quiet``.

Application layer. rich is imported only when a bar is made: ``regfs.cli`` imports every
command's module, and rich's ~75 ms would otherwise delay every mount's start.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from regfs.commands.status import human_size
from regfs.layers.layer_ref import LayerRef

if TYPE_CHECKING:
    from rich.progress import TaskID


@dataclass(slots=True)
class Outcome:
    """What became of one layer asked for: how much of it is cached, or why not all."""

    layer: LayerRef
    name: str
    tag: str | None = None
    """The tag the image was named by, if it was: recorded with the layer's use."""
    pin: str | None = None
    """The reference its image is pinned under (``regfs prefetch --pin``)."""
    access: str = ""
    cached: int = 0
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and self.cached >= (self.layer.descriptor.size or 0)


@dataclass(slots=True)
class Reporter:
    """What a front end (a progress bar, plain lines) is told as layers progress."""

    started: Callable[[int, int], None] = lambda layers, size: None
    """(layers, their total bytes) once every image is resolved."""
    received: Callable[[int], None] = lambda size: None
    finished: Callable[[Outcome], None] = lambda outcome: None
    received_by_layer: dict[LayerRef, int] = field(default_factory=dict)


class FrontEnd:
    """A context manager that reports through ``reporter`` while it is entered."""

    def __init__(self) -> None:
        self.reporter = Reporter()

    def __enter__(self) -> FrontEnd:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None


class Lines(FrontEnd):
    """A line per layer when it is done, for logs."""

    def __init__(self) -> None:
        super().__init__()
        self.reporter.finished = self._finished

    @staticmethod
    def _finished(outcome: Outcome) -> None:
        size = outcome.layer.descriptor.size or 0
        if outcome.error is not None:
            state = f"FAILED: {outcome.error}"
        elif outcome.complete:
            state = f"cached and verified ({human_size(size)}; {outcome.access})"
        else:
            state = f"{human_size(outcome.cached)} of {human_size(size)} cached (cache too small?)"
        print(f"{outcome.name}: {state}", flush=True)


class Bar(FrontEnd):
    """One bar for everything asked for: bytes, rate, time left, and layers done."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        super().__init__()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task: TaskID | None = None
        self._layers = 0
        self._done = 0
        self.reporter.started = self._started
        self.reporter.received = self._received
        self.reporter.finished = self._finished

    def __enter__(self) -> Bar:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def _started(self, layers: int, size: int) -> None:
        self._layers = layers
        self._task = self._progress.add_task(self._description(), total=size)

    def _received(self, size: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, size)

    def _finished(self, outcome: Outcome) -> None:
        self._done += 1
        if self._task is not None:
            self._progress.update(self._task, description=self._description())
        if outcome.error is not None:
            self._progress.console.print(f"{outcome.name}: FAILED: {outcome.error}")

    def _description(self) -> str:
        return f"layers {self._done}/{self._layers}"


def progress_front_end(*, quiet: bool) -> FrontEnd:
    if quiet:
        return FrontEnd()
    return Bar() if sys.stdout.isatty() else Lines()
