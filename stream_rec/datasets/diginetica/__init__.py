"""DIGINETICA (CIKM Cup 2016): the standard SR-GNN split, the raw CSV files, and events from both.

Files (see ``<data root>/diginetica/SOURCE.md``; never copied into the repository):

- ``train_sessions.txt`` and ``test_prefixes.tsv``: the standard split of SR-GNN / GCE-GNN and the
  papers after them. **Its item ids are SR-GNN's renumbering 1..43,097 (order of first appearance
  in training); nothing in these files maps them back to the raw ``itemId`` s**, so they cannot be
  joined with purchases or product categories.
- ``train-item-views.csv`` (raw; only a 12k-row sample ships here), ``train-purchases.csv``,
  ``product-categories.csv``: raw ids, ``;``-separated. :func:`preprocess_item_views` applies
  SR-GNN's preprocessing to the views and gives the same :class:`SessionSplit` type.

:func:`split_to_events` and :func:`raw_to_events` turn either into events of our contract, so
one set of files drives training, offline evaluation and the streaming replay.
"""

from .files import DATA_ROOT_ENV, data_root, diginetica_dir
from .raw import (
    ItemView,
    Purchase,
    preprocess_item_views,
    raw_to_events,
    read_item_views,
    read_product_categories,
    read_purchases,
)
from .standard import (
    DEFAULT_START_TS_MS,
    DIGINETICA_STATS,
    TEST_FILE,
    TRAIN_FILE,
    check_stats,
    load_standard_split,
    read_test_prefixes,
    read_train_sessions,
    sessions_from_prefixes,
    split_to_events,
)

__all__ = [
    "DATA_ROOT_ENV",
    "DIGINETICA_STATS",
    "DEFAULT_START_TS_MS",
    "TRAIN_FILE",
    "TEST_FILE",
    "ItemView",
    "Purchase",
    "data_root",
    "diginetica_dir",
    "read_train_sessions",
    "read_test_prefixes",
    "sessions_from_prefixes",
    "load_standard_split",
    "check_stats",
    "read_item_views",
    "read_purchases",
    "read_product_categories",
    "preprocess_item_views",
    "raw_to_events",
    "split_to_events",
]
