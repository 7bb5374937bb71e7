"""Data sets and the SR-GNN evaluation protocol: sessions, splits, and events of our contract."""

from .diginetica import (
    check_stats,
    load_standard_split,
    preprocess_item_views,
    raw_to_events,
    split_to_events,
)
from .eventlog import (
    ProtocolOptions,
    SessionSplit,
    SplitStats,
    augment,
    split_event_log,
    split_events,
)

__all__ = [
    "ProtocolOptions",
    "SessionSplit",
    "SplitStats",
    "augment",
    "check_stats",
    "load_standard_split",
    "preprocess_item_views",
    "raw_to_events",
    "split_event_log",
    "split_events",
    "split_to_events",
]
