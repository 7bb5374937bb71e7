"""The encoder's global item graph (GCE-GNN, Wang et al., SIGIR 2020, in a Transformer's terms).

GCE-GNN's lead over SR-GNN on Diginetica comes mostly from a global graph: each item of a
session is represented by its own embedding plus an aggregate of the items it co-occurs with
across all sessions. Here the graph is Item-KNN's similarity
(:mod:`stream_rec.core.item_neighbours`, the table the served blend uses): each item's best
``global_neighbours`` rows and their normalised scores, built at training time from the
training sessions (never the validation slice; the refit's graph adds the slice it trains on).
The encoder reads ``E[i] + g * sum_j w_ij E[j]`` (``g`` a learned per-dimension gate starting
at 0: an untrained gate is the plain model) for each item entering the Transformer and the
core sum; items are still scored against the plain table ``E``, unless ``mixed_scoring``
scores them as the encoder reads them too (a rarely clicked item then borrows its neighbours'
place).

Serving pays nothing for it: :func:`encoder_view` bakes the mixed table into a copy of the model
whose encoder is a plain lookup again; that copy is what gets exported to ONNX (the full and the
incremental graphs), while the bundle's item vectors come from the model itself.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from .examples import Rows
from .sasrec import SessionTransformer

__all__ = ["item_rows", "set_neighbours", "encoder_view", "mixed_table"]


def item_rows(*parts: Sequence[Rows]) -> list[np.ndarray]:
    """The item rows of every featurized session of ``parts``: what a graph is built from (a
    refit's graph learns the sessions it trains on too, never those it is scored on)."""
    return [rows[0] for part in parts for rows in part]


def set_neighbours(model: SessionTransformer, sessions: Sequence[np.ndarray]) -> int:
    """Fill ``model``'s neighbour table from ``sessions`` (arrays of item rows; 0 = none);
    returns how many item rows got at least one neighbour. A no-op (0) when the model has none."""
    k = model.config.global_neighbours
    if not k:
        return 0
    from ..core.item_neighbours import ItemNeighbours

    table = ItemNeighbours.build(list(sessions), model.config.n_items, n_neighbors=k)
    with torch.no_grad():
        model.neighbour_rows.copy_(torch.from_numpy(table.rows))
        model.neighbour_weights.copy_(torch.from_numpy(table.scores))
    return int((table.rows[:, 0] > 0).sum())


def mixed_table(model: SessionTransformer) -> torch.Tensor:
    """(n_items + 1, D) every row as the encoder reads it (:meth:`SessionTransformer.item_repr`)."""
    with torch.no_grad():
        rows = torch.arange(model.config.n_items + 1)
        return model.item_repr(rows).detach().clone()


def encoder_view(model: SessionTransformer) -> SessionTransformer:
    """``model`` itself without a global graph; otherwise an eval-mode copy whose item table is
    the mixed one and whose encoder looks it up plainly: the same session vectors (to float
    rounding), for export only (its item table is not the scoring table)."""
    if not model.config.global_neighbours:
        return model
    view = copy.deepcopy(model).eval()
    with torch.no_grad():
        view.item_emb.weight.copy_(mixed_table(model))
    view.config = replace(model.config, global_neighbours=0)
    return view
