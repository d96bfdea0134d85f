"""How ``regfs prefetch`` shows its progress: a rich progress bar on a terminal, a plain
line per layer otherwise (logs, CI), nothing with ``--quiet``.

Application layer.
"""

from __future__ import annotations

import sys
from types import TracebackType

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from regfs.commands.prefetch import Outcome, Reporter
from regfs.commands.status import human_size


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
