"""Prometheus metrics of the learner (``GET /metrics`` on its status port): what it took in, the
window, each update's outcome, the guard's scores and the bundle it last published."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram, Info, generate_latest
from prometheus_client import Counter as PromCounter

from .learner import UpdateOutcome

__all__ = ["LearnerMetrics"]

_P = "stream_rec_learner"
_SECONDS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


class LearnerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.events = PromCounter(f"{_P}_events", "Valid events put into the window.", registry=r)
        self.invalid = PromCounter(
            f"{_P}_invalid_records",
            "Invalid records skipped (never trained on), by reason code.",
            ["reason"],
            registry=r,
        )
        self.window = Gauge(f"{_P}_window_sessions", "Sessions in the window.", registry=r)
        self.updates = PromCounter(
            f"{_P}_updates",
            "Updates by outcome: published, items_only (the fine-tune refused by the guard, "
            "the new items' rows published alone), refused (guard), skipped.",
            ["outcome"],
            registry=r,
        )
        self.items_added = PromCounter(
            f"{_P}_items_added", "Items given rows in published bundles.", registry=r
        )
        self.update_seconds = Histogram(
            f"{_P}_update_seconds", "Seconds of one update.", buckets=_SECONDS, registry=r
        )
        self.guard = Gauge(
            f"{_P}_guard_score",
            "The last guard's scores (percent) on the held-out sessions.",
            ["model", "metric"],
            registry=r,
        )
        self.published = Info(
            f"{_P}_bundle", "The bundle the learner last published (or started from).", registry=r
        )

    def record(self, out: UpdateOutcome) -> None:
        outcome = "skipped" if out.skipped else ("published" if out.published else "refused")
        if out.published and out.fallback is not None:
            outcome = "items_only"
        self.updates.labels(outcome).inc()
        if not out.skipped:
            self.update_seconds.observe(out.seconds)
        d = out.decision
        if d is not None:
            for model, hr, mrr in (
                ("candidate", d.candidate_hr, d.candidate_mrr),
                ("serving", d.serving_hr, d.serving_mrr),
            ):
                self.guard.labels(model, "hr@20").set(hr)
                self.guard.labels(model, "mrr@20").set(mrr)
        if out.published is not None:
            self.items_added.inc(out.items_added)
            self.published.info({"version": out.published.name})

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
