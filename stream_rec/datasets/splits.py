"""Standard session splits in the two-file format (``train_sessions.txt``, ``test_prefixes.tsv``).

Diginetica (SR-GNN's split) and Nowplaying (GCE-GNN's split) are named instances whose statistics
are checked against their SOURCE.md; ``sessions`` is any other split in the same format, read from
``--data-dir`` with its statistics reported, not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .diginetica.files import data_root
from .diginetica.standard import DIGINETICA_STATS, check_stats, load_standard_split
from .eventlog import SessionSplit, SplitStats

__all__ = ["NOWPLAYING_STATS", "KNOWN_SPLITS", "STANDARD_DATASETS", "NamedSplit", "load_named_split"]

# GCE-GNN's Nowplaying split as ../shared/data/nowplaying/SOURCE.md states it.
NOWPLAYING_STATS = SplitStats(
    train_sessions=128_077,
    train_clicks=953_381,
    train_pairs=825_304,
    test_sessions=14_479,
    test_clicks=104_303,
    test_prefixes=89_824,
    items=60_416,
    unseen_test_items=0,
)

KNOWN_SPLITS: dict[str, SplitStats] = {"diginetica": DIGINETICA_STATS, "nowplaying": NOWPLAYING_STATS}
STANDARD_DATASETS = (*KNOWN_SPLITS, "sessions")


@dataclass(frozen=True)
class NamedSplit:
    split: SessionSplit
    stats: SplitStats
    directory: Path
    checked: bool  # the statistics equal the data set's SOURCE.md

    def describe(self) -> str:
        return (", ".join(f"{k} {v:,}" for k, v in self.stats.as_dict().items())
                + (" (as SOURCE.md states)" if self.checked else ""))


def split_dir(dataset: str, data_root_dir: str | Path | None = None, data_dir: str | Path | None = None) -> Path:
    """Where ``dataset``'s two files are: ``data_dir`` if given, else ``<data root>/<dataset>``."""
    if dataset not in STANDARD_DATASETS:
        raise ConfigError(f"--dataset {dataset!r}: expected one of {', '.join(STANDARD_DATASETS)}")
    if data_dir is not None:
        return Path(data_dir)
    if dataset == "sessions":
        raise ConfigError("--dataset sessions needs --data-dir DIR (train_sessions.txt, test_prefixes.tsv)")
    return data_root(data_root_dir) / dataset


def load_named_split(
    dataset: str, data_root_dir: str | Path | None = None, data_dir: str | Path | None = None
) -> NamedSplit:
    """The split of ``dataset``; a named one's statistics are checked (DataError naming each
    number that differs from SOURCE.md)."""
    directory = split_dir(dataset, data_root_dir, data_dir)
    split = load_standard_split(directory)
    expected = KNOWN_SPLITS.get(dataset)
    stats = check_stats(split, expected) if expected is not None else split.stats()
    return NamedSplit(split, stats, directory, expected is not None)
