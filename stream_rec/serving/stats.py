"""What a worker counts, for its /stats page and the tests (both engines)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WorkerStats"]


@dataclass
class WorkerStats:
    events: int = 0
    dead_letters: int = 0
    processing_errors: int = 0  # events whose processing raised (dead-lettered)
    dlq_failures: int = 0  # dead letters that could not be written
    recommendations: int = 0
    batches: int = 0
    state_resets: int = 0
    model_swaps: int = 0
