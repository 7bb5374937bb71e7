"""A bundle's item-neighbour blend: tune its weight on validation, then write the served version.

:func:`add_item_neighbours` takes a model bundle and the sessions it was trained on (in their
order, so its validation slice is the same last share), encodes every held-out prefix with the
bundle's own ONNX encoder, chooses the weight (:mod:`.blend_weight`, with a table of the other
sessions), and when the blend helps writes a new bundle version that carries the table of every
training session and that weight. The model bundle stays: it is the "Transformer alone" row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..core.features import ModelInputs
from ..core.item_neighbours import ItemNeighbours
from ..errors import ConfigError
from ..serving.bundle import ModelBundle
from .blend_weight import choose_blend_weight
from .examples import Rows, Session, featurize_sessions
from .validation import valid_cases

__all__ = ["add_item_neighbours", "validation_blend_inputs", "selected_queries"]

log = logging.getLogger("stream_rec.item_blend")
_ENCODE_BATCH = 512


def _padded(prefixes: Sequence[Rows]) -> ModelInputs:
    length = max(len(p[0]) for p in prefixes)
    q = prefixes[0][2].shape[1]
    items = np.zeros((len(prefixes), length), np.int64)
    types = np.zeros((len(prefixes), length), np.int64)
    queries = np.zeros((len(prefixes), length, q), np.int64)
    for i, (it, ty, qu) in enumerate(prefixes):
        n = len(it)
        items[i, length - n :], types[i, length - n :], queries[i, length - n :] = it, ty, qu
    return ModelInputs(items, types, queries)


def validation_blend_inputs(
    bundle: ModelBundle, sessions: Sequence[Session], n_valid: int, encode: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(session vectors, target columns, last known item rows) of every prefix of the last
    ``n_valid`` sessions, encoded by the bundle's ONNX encoder (length-sorted batches)."""
    featurized = featurize_sessions(
        sessions[len(sessions) - n_valid :], bundle.vocab, bundle.query_buckets
    )
    prefixes, targets = valid_cases(featurized, bundle.max_len)
    vectors = np.zeros((len(prefixes), bundle.dim), np.float32)
    if encode:
        encoder = bundle.encoder(providers="cpu", intra_op_threads=1)
        order = np.argsort([len(p[0]) for p in prefixes], kind="stable")
        for lo in range(0, len(order), _ENCODE_BATCH):
            part = order[lo : lo + _ENCODE_BATCH]
            vectors[part] = encoder.encode(_padded([prefixes[i] for i in part]))
    last = np.zeros(len(prefixes), np.int64)
    for i, (items, _, _) in enumerate(prefixes):
        known = items[items > 0]
        last[i] = known[-1] if len(known) else 0
    return vectors, targets, last


def add_item_neighbours(
    bundle_path: str | Path,
    bundles_dir: str | Path,
    sessions: Sequence[Session],
    progress: Callable[[str], None] | None = None,
    queries: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
) -> Path | None:
    """Tune and write the blend version of ``bundle_path`` (None when the best weight is 0).

    ``sessions`` are the bundle's training sessions in training order (item hashes, types,
    query hashes); their count must be the manifest's, so the validation slice is the same.
    ``queries`` and ``item_vectors``: the validation prefixes' vectors and the item table of the
    selected model *before* its refit pass (which trains on the validation slice; the bundle is
    after it). Without them the bundle's own encoder and table score, which flatters the model
    when it was refitted.
    """
    from .bundle_writer import with_item_neighbours

    say = progress or log.info
    bundle = ModelBundle.load(bundle_path)
    training = bundle.manifest.get("training", {})
    if training.get("sessions") not in (None, len(sessions)):
        raise ConfigError(
            f"{bundle_path} was trained on {training['sessions']:,} sessions; got "
            f"{len(sessions):,}: give the same data options as its training"
        )
    n_valid = int(training.get("valid_sessions") or 0)
    rows = [bundle.vocab.rows_for_hashes(np.asarray(s[0], np.int64)) for s in sessions]
    n_items = len(bundle.vocab)
    t0 = time.perf_counter()
    if n_valid == 0:
        say(
            "item-neighbour blend: no validation slice to choose a weight on; "
            "the bundle stays the model alone"
        )
        return None
    vectors, targets, last = validation_blend_inputs(
        bundle, sessions, n_valid, encode=queries is None
    )
    if queries is not None:
        if len(queries) != len(targets):
            raise ConfigError(
                f"{len(queries):,} validation vectors for {len(targets):,} validation cases"
            )
        vectors = queries
    elif training.get("hyperparameters", {}).get("refit", True) and n_valid:
        say(
            "item-neighbour blend: the bundle's encoder was refitted on the validation slice; "
            "give the run's checkpoint (--checkpoint-dir) to tune on the model before it"
        )
    tuning = ItemNeighbours.build(rows[: len(rows) - n_valid], n_items)
    scale = (
        float(bundle.manifest.get("scale", 1.0)) if bundle.manifest.get("normalized", True) else 1.0
    )
    table_vectors = bundle.item_vectors if item_vectors is None else item_vectors
    weight, tried = choose_blend_weight(vectors, targets, last, tuning, table_vectors, scale)
    say(
        "item-neighbour blend on validation ("
        + ", ".join(f"w {t['weight']:g}: {t['hr@20']:.2f} / {t['mrr@20']:.2f}" for t in tried)
        + f"): weight {weight:g} ({time.perf_counter() - t0:.0f}s)"
    )
    if weight <= 0:
        return None
    table = ItemNeighbours.build(rows, n_items)
    selection = {
        "rule": "best validation HR@20 + MRR@20 through the serving blend over exact search, "
        "table of the sessions before the validation slice",
        "cases": len(targets),
        "tried": tried,
    }
    path = with_item_neighbours(
        bundle, bundles_dir, table, weight, selection, note=f"{len(sessions):,} training sessions"
    )
    say(f"bundle with the item-neighbour blend written to {path}")
    return path


def selected_queries(
    run_dir: str | Path, bundle: ModelBundle, sessions: Sequence[Session]
) -> tuple[np.ndarray, np.ndarray]:
    """(validation prefixes' vectors, item vectors) of the run's selected model before its refit:
    the best state in the run directory's last checkpoint (`stream-rec train --checkpoint-dir`)."""
    import torch

    from .checkpoint import load_checkpoint
    from .recipes import load_options, model_config_for
    from .sasrec import SessionTransformer
    from .validation import validation_queries

    n_items = len(bundle.vocab)
    state = load_checkpoint(run_dir, n_items)
    if state is None or state.best_state is None:
        raise ConfigError(f"{run_dir} holds no checkpoint with a selected model")
    model = SessionTransformer(model_config_for(load_options(run_dir), n_items))
    model.load_state_dict(state.best_state)
    n_valid = int(bundle.manifest.get("training", {}).get("valid_sessions") or 0)
    featurized = featurize_sessions(
        sessions[len(sessions) - n_valid :], bundle.vocab, bundle.query_buckets
    )
    prefixes, _ = valid_cases(featurized, bundle.max_len)
    with torch.no_grad():
        items = model.item_vectors().numpy().astype(np.float32)
    return validation_queries(model, prefixes), items
