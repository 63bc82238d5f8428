"""What a training run reports, and the listener that receives it.

The Trainer calls these hooks from the thread it runs on. The CLI's listener
prints a progress bar; the GUI's (gui/worker.py) re-emits each event as a Qt
signal. Payloads are small dataclasses of plain Python values (floats, ints,
strings, dicts of floats) so they cross threads and processes safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StageEvent:
    """A phase before or after training: loading data, building, evaluating.

    `fraction` is 0..1 where known (a download), else None (busy).
    """

    stage: str
    text: str
    fraction: float | None = None


@dataclass
class RunStarted:
    run_id: str
    run_dir: str
    name: str
    epochs: int
    steps_per_epoch: int
    batch_size: int
    train_size: int
    val_size: int
    test_size: int
    class_names: list[str]
    params: dict[str, int]
    validation_partial: bool
    config: dict = field(default_factory=dict)


@dataclass
class Progress:
    """Sent a few times a second during an epoch (never per batch)."""

    epoch: int  # 1-based
    epochs: int
    batch: int  # batches finished in this epoch
    steps: int
    images_per_second: float
    elapsed: float  # seconds since training started
    eta: float  # seconds left for the whole run (estimate)
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class EpochEnded:
    epoch: int  # 1-based
    epochs: int
    logs: dict[str, float]
    elapsed: float
    epoch_seconds: float
    best_epoch: int
    best_value: float | None
    monitor: str


@dataclass
class RunEnded:
    """status: "finished", "stopped" or "failed" (reason says why).

    `test_metrics` are of the `evaluated_split`: "test", or "validation" when
    the dataset has no test split."""

    run_id: str
    status: str
    reason: str
    elapsed: float
    test_metrics: dict[str, float] = field(default_factory=dict)
    epochs_done: int = 0
    evaluated_split: str = ""


class Listener:
    """Receives a run's events; override what you need."""

    def on_stage(self, event: StageEvent) -> None:
        pass

    def on_run_started(self, event: RunStarted) -> None:
        pass

    def on_progress(self, event: Progress) -> None:
        pass

    def on_epoch_ended(self, event: EpochEnded) -> None:
        pass

    def on_run_ended(self, event: RunEnded) -> None:
        pass

    def on_log(self, text: str) -> None:
        pass
