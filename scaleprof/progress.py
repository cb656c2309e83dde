"""The terminal display of a running study: which run, which epoch, live throughput.

On a terminal it is a rich progress bar per run; elsewhere (CI logs, `ray job submit` logs) it
prints one plain line per change, so the log still tells the story.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from scaleprof.plan import PlannedRun
from scaleprof.records import RunStatus


def _throughput_text(progress: dict[str, Any], run: PlannedRun | None = None) -> str:
    value = progress.get("epoch_throughput")
    if value:
        data = run.experiment.data if run is not None else None
        tokens = f" ({value * data.seq_len:,.0f} tokens/s)" if data is not None and data.is_tokens else ""
        return f"{value:,.0f} samples/s this epoch{tokens}"
    return "measuring" if progress.get("ranks") else "starting workers"


def _fold(run: PlannedRun) -> str:
    return f", fold {run.fold + 1}/{run.folds}" if run.fold is not None else ""


class TerminalProgress:
    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self._live = self.console.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last_line = ""
        self._total = 0

    def _run_label(self, run: PlannedRun) -> str:
        where = f"{run.placement.workers} worker(s), {run.series}{_fold(run)}"
        return f"run {run.index}/{self._total} {run.placement.name} ({where})"

    def study_started(self, study_dir: Path, runs: int, ray_address: str) -> None:
        self._total = runs
        self.console.print(
            f"Study {study_dir.name}: {runs} run(s) on Ray at {ray_address}", markup=False, highlight=False
        )
        self.console.print(f"Writing to {study_dir}", markup=False, highlight=False)

    def run_started(self, run: PlannedRun, total: int, epochs: int) -> None:
        self._total = total
        label = self._run_label(run)
        if self._live:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("epochs  {task.fields[info]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(escape(label), total=epochs, info="starting workers")
        else:
            self.console.print(f"{label}: starting workers", markup=False, highlight=False)
        self._label = label
        self._epochs = epochs
        self._last_wait_line = -float("inf")

    def run_waiting(self, run: PlannedRun, text: str) -> None:
        """A placement waiting for the autoscaler's nodes: the bar's text, or one plain line per 30 s."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, info=text)
            return
        now = time.monotonic()
        if now - self._last_wait_line >= 30:
            self.console.print(f"{self._label}: {text}", markup=False, highlight=False)
            self._last_wait_line = now

    def run_progress(self, run: PlannedRun, progress: dict[str, Any]) -> None:
        if not progress.get("ranks"):
            return
        done = progress.get("epochs_done", 0)
        info = f"epoch {min(progress['epoch'] + 1, self._epochs)}, {_throughput_text(progress, run)}"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, info=info)
            return
        line = f"{self._label}: epoch {min(progress['epoch'] + 1, self._epochs)}/{self._epochs}"
        if line != self._last_line:  # one line per epoch in plain logs
            self.console.print(f"{line}, {_throughput_text(progress, run)}", markup=False, highlight=False)
            self._last_line = line

    def run_finished(self, run: PlannedRun, record: dict[str, Any]) -> None:
        self._label = self._run_label(run)
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        status = record["status"]
        style = {
            RunStatus.OK: "green",
            RunStatus.SKIPPED: "yellow",
            RunStatus.FAILED: "red",
            RunStatus.UNMEASURED: "red",
        }.get(status, "")
        detail = f" ({record['wall_s']:.1f}s)" if "wall_s" in record else ""
        reason = f": {escape(record['reason'])}" if record.get("reason") else ""
        self.console.print(f"{escape(self._label)}: [{style}]{status}[/{style}]{detail}{reason}", highlight=False)

    def inference_started(self, devices: Sequence[str]) -> None:
        self.console.print(f"inference benchmark on {', '.join(devices)}", markup=False, highlight=False)
