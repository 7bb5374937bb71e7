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
from typing import Any

import numpy as np

from ..core.features import ModelInputs
from ..core.item_neighbours import MAX_OWN, MAX_RECENT, ItemNeighbours, last_known_rows
from ..errors import ConfigError
from ..serving.bundle import ModelBundle
from ..serving.compose import logit_scale
from .blend_weight import blended_ranker, choose_blend
from .examples import Example, Session, pad_examples
from .validation import held_out_cases

__all__ = [
    "add_item_neighbours",
    "rechoose_ef",
    "served_hnsw",
    "validation_blend_inputs",
    "selected_queries",
]

log = logging.getLogger("stream_rec.item_blend")
_ENCODE_BATCH = 512


def validation_blend_inputs(
    bundle: ModelBundle, sessions: Sequence[Session], n_valid: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(session vectors, target columns, last known item rows) of every prefix of the last
    ``n_valid`` sessions, encoded by the bundle's ONNX encoder (length-sorted batches)."""
    prefixes, targets = held_out_cases(
        sessions, n_valid, bundle.vocab, bundle.query_buckets, bundle.max_len
    )
    vectors = np.zeros((len(prefixes), bundle.dim), np.float32)
    encoder = bundle.encoder(providers="cpu", intra_op_threads=1)
    order = np.argsort([len(p[0]) for p in prefixes], kind="stable")
    for lo in range(0, len(order), _ENCODE_BATCH):
        part = order[lo : lo + _ENCODE_BATCH]
        batch = [
            Example(it, ty, qu, np.zeros(len(it), np.int64))
            for it, ty, qu in (prefixes[i] for i in part)
        ]
        items, types, queries, _ = (t.numpy() for t in pad_examples(batch))
        vectors[part] = encoder.encode(ModelInputs(items, types, queries))
    return vectors, targets, last_known_rows([p[0] for p in prefixes], MAX_OWN)


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
    if bundle.manifest.get("architecture", {}).get("repeat"):
        say("item-neighbour blend: the model has a repeat head, and the blend and the head do "
            "not combine yet; the bundle stays the model alone")
        return None
    n_valid = _valid_sessions(bundle, sessions, bundle_path)
    rows = [bundle.vocab.rows_for_hashes(np.asarray(s[0], np.int64)) for s in sessions]
    n_items = len(bundle.vocab)
    t0 = time.perf_counter()
    if n_valid == 0:
        say(
            "item-neighbour blend: no validation slice to choose a weight on; "
            "the bundle stays the model alone"
        )
        return None
    # The bundle's own vectors choose the served ef; the weight is tuned on ``queries`` if given.
    served, targets, last = validation_blend_inputs(bundle, sessions, n_valid)
    vectors = served
    if queries is not None:
        if len(queries) != len(targets):
            raise ConfigError(
                f"{len(queries):,} validation vectors for {len(targets):,} validation cases"
            )
        vectors = queries
    else:  # every recipe ends with the refit pass
        say(
            "item-neighbour blend: the bundle's encoder was refitted on the validation slice; "
            "give the run's checkpoint (--checkpoint-dir) to tune on the model before it"
        )
    tuning = ItemNeighbours.build(rows[: len(rows) - n_valid], n_items)
    scale = logit_scale(bundle)
    table_vectors = bundle.item_vectors if item_vectors is None else item_vectors
    choice = choose_blend(vectors, targets, last, tuning, table_vectors, scale)
    weight = choice.weight
    say(
        "item-neighbour blend on validation ("
        + ", ".join(
            f"{t['recent']:g} items w {t['weight']:g} repeat {t['repeat']:g}/"
            f"{t['repeat_decay']:g}{'' if t['own_window'] == MAX_RECENT else ' all'}: "
            f"{t['hr@20']:.2f} / {t['mrr@20']:.2f}"
            for t in choice.tried
        )
        + f"): the last {choice.recent} items, weight {weight:g}, the session's own items "
        f"{choice.repeat:g} (decay {choice.repeat_decay:g}, the last {choice.own_window}) "
        f"({time.perf_counter() - t0:.0f}s)"
    )
    if weight <= 0 and choice.repeat <= 0:
        return None
    table = choice.table(ItemNeighbours.build(rows, n_items))
    selection = {
        "rule": "best validation HR@20 + MRR@20 through the serving blend over exact search "
        "(the number of the session's last items and the weight, then the session's own items' "
        "repeat, decay and window, then the weight again), table of the sessions before the "
        "validation slice",
        "cases": len(targets),
        "tried": choice.tried,
    }
    hnsw = served_hnsw(bundle, served, targets, last, choice.table(tuning), weight, say)
    path = with_item_neighbours(
        bundle,
        bundles_dir,
        table,
        weight,
        selection,
        note=f"{len(sessions):,} training sessions",
        hnsw=hnsw,
    )
    say(f"bundle with the item-neighbour blend written to {path}")
    return path


def served_hnsw(
    bundle: ModelBundle,
    vectors: np.ndarray,
    targets: np.ndarray,
    last: np.ndarray,
    table: ItemNeighbours,
    weight: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The bundle's manifest ``hnsw`` entry with the ef chosen through the blend as served: the
    smallest whose blended HR@20 and MRR@20 on the validation prefixes (``vectors`` from the
    bundle's own encoder, ``table`` built without the validation sessions) are within
    MAX_HNSW_COST of the same blend over exact search. The blend's own candidates make up for
    some of what HNSW misses, so it can serve at a smaller ef than the model alone needs."""
    from ..runtime.index import ExactIndex, HnswIndex
    from ..serving.bundle import HNSW
    from .validation import MAX_HNSW_COST, choose_ef

    info = dict(bundle.manifest.get("hnsw", {}))
    model_ef, model_selection = info.get("ef"), info.pop("ef_selection", None)
    if isinstance(model_selection, dict) and "model_ef" in model_selection:  # chosen so before
        model_ef, model_selection = (
            model_selection["model_ef"],
            model_selection.get("model_selection"),
        )
    rank = blended_ranker(last, table, bundle.item_vectors, logit_scale(bundle), weight)
    t0 = time.perf_counter()
    hnsw = HnswIndex.load(bundle.path / HNSW, bundle.item_vectors)
    ef, tried = choose_ef(hnsw, ExactIndex(bundle.item_vectors), vectors, targets, rank=rank)
    info["ef"] = ef
    info["ef_selection"] = {
        "rule": f"smallest ef costing <= {MAX_HNSW_COST} points HR@20 and MRR@20 against exact "
        "search on validation, through the served item-neighbour blend",
        "cases": len(targets),
        "tried": tried,
        "model_ef": model_ef,
        "model_selection": model_selection,
    }
    say(
        f"HNSW ef through the served blend: {ef} (the model alone: {model_ef}; "
        + ", ".join(
            f"ef {t['ef']}: {-t['hr@20_cost']:+.2f} / {-t['mrr@20_cost']:+.2f}" for t in tried
        )
        + f"; {time.perf_counter() - t0:.0f}s)"
    )
    return info


def rechoose_ef(
    bundle_path: str | Path,
    bundles_dir: str | Path,
    sessions: Sequence[Session],
    progress: Callable[[str], None] | None = None,
) -> Path:
    """A new version of a blended bundle whose HNSW ef is chosen through its blend
    (:func:`served_hnsw`); the model, table and weight unchanged. For bundles written before
    ``neighbours`` chose it."""
    from .bundle_writer import with_item_neighbours

    say = progress or log.info
    bundle = ModelBundle.load(bundle_path)
    table = bundle.item_neighbours()
    if table is None:
        raise ConfigError(
            f"{bundle_path} has no item-neighbour blend: run `stream-rec neighbours` "
            "without --ef-only first"
        )
    n_valid = _valid_sessions(bundle, sessions, bundle_path)
    if n_valid == 0:
        raise ConfigError(f"{bundle_path} was trained without a validation slice: no ef to choose")
    vectors, targets, last = validation_blend_inputs(bundle, sessions, n_valid)
    rows = [bundle.vocab.rows_for_hashes(np.asarray(s[0], np.int64)) for s in sessions]
    tuning = ItemNeighbours.build(rows[: len(rows) - n_valid], len(bundle.vocab))
    weight = bundle.item_neighbours_weight
    hnsw = served_hnsw(bundle, vectors, targets, last, tuning.shaped_like(table), weight, say)
    entry = bundle.manifest["item_neighbours"]
    path = with_item_neighbours(
        bundle,
        bundles_dir,
        table,
        weight,
        entry.get("selection", {}),
        note=str(entry.get("note", "")),
        hnsw=hnsw,
    )
    say(f"bundle with the blend's ef written to {path}")
    return path


def _valid_sessions(bundle: ModelBundle, sessions: Sequence[Session], where: str | Path) -> int:
    """The bundle's validation slice size, after checking ``sessions`` are its training sessions."""
    training = bundle.manifest.get("training", {})
    if training.get("sessions") not in (None, len(sessions)):
        raise ConfigError(
            f"{where} was trained on {training['sessions']:,} sessions; got "
            f"{len(sessions):,}: give the same data options as its training"
        )
    return int(training.get("valid_sessions") or 0)


def selected_queries(
    run_dir: str | Path, bundle: ModelBundle, sessions: Sequence[Session]
) -> tuple[np.ndarray, np.ndarray]:
    """(validation prefixes' vectors, item vectors) of the run's selected model before its refit:
    the best state in the run directory's last checkpoint (`stream-rec train --checkpoint-dir`)."""
    import torch

    from .checkpoint import selected_model
    from .validation import validation_queries

    model = selected_model(run_dir, len(bundle.vocab))
    if model is None:
        raise ConfigError(f"{run_dir} holds no checkpoint with a selected model")
    n_valid = int(bundle.manifest.get("training", {}).get("valid_sessions") or 0)
    prefixes, _ = held_out_cases(
        sessions, n_valid, bundle.vocab, bundle.query_buckets, bundle.max_len
    )
    with torch.no_grad():
        items = model.item_vectors().numpy().astype(np.float32)
    return validation_queries(model, prefixes), items
