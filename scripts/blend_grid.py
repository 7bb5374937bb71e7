"""Validation-only: the item-neighbour blend's shape (table width, the index candidates its softmax
is normalised over, the session's last items) around what `train` tunes (the weight, 1/3/5 items).

    .venv/bin/python scripts/blend_grid.py --bundle B --checkpoint-dir RUN [--dataset diginetica]
        [--neighbours 30,50] [--candidates 20,40] [--recent 1,3]

Scores the run's validation prefixes with its selected model *before* the refit (as `train`
tunes the weight), through the serving function over exact search, with tables built from the
other training sessions; prints HR@20 / MRR@20 per (width, candidates, items, weight) and the
best of each (width, candidates) by `train`'s rule (HR@20 + MRR@20). No test data is read.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from stream_rec.core.item_neighbours import MAX_RECENT, ItemNeighbours, last_known_rows
from stream_rec.model.blend_weight import BLEND_WEIGHTS, choose_blend
from stream_rec.model.build import TrainOptions
from stream_rec.model.item_blend import selected_queries
from stream_rec.model.training_data import training_data
from stream_rec.model.validation import held_out_cases, selection_score
from stream_rec.serving.bundle import ModelBundle
from stream_rec.serving.compose import logit_scale


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--checkpoint-dir", required=True)
    ap.add_argument("--dataset", default="diginetica")
    ap.add_argument("--neighbours", type=_ints, default=[30, 50])
    ap.add_argument("--candidates", type=_ints, default=[20, 40])
    ap.add_argument("--recent", type=_ints, default=[1, 3])
    ap.add_argument("--max-sessions", type=int, default=None, help="as the run was trained")
    ap.add_argument("--weights", default=None, help="comma-separated blend weights (train's grid)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    bundle = ModelBundle.load(args.bundle)
    data = training_data(TrainOptions(dataset=args.dataset, max_sessions=args.max_sessions), print)
    sessions = data.sessions
    n_valid = int(bundle.manifest.get("training", {}).get("valid_sessions") or 0)
    queries, items = selected_queries(args.checkpoint_dir, bundle, sessions)
    prefixes, targets = held_out_cases(
        sessions, n_valid, bundle.vocab, bundle.query_buckets, bundle.max_len
    )
    last = last_known_rows([p[0] for p in prefixes], MAX_RECENT)
    rows = [bundle.vocab.rows_for_hashes(np.asarray(s[0], np.int64)) for s in sessions]
    tuning = rows[: len(rows) - n_valid]
    scale = logit_scale(bundle)
    weights = [float(w) for w in args.weights.split(",")] if args.weights else BLEND_WEIGHTS
    print(f"{len(targets):,} validation prefixes, {time.perf_counter() - t0:.0f}s", flush=True)
    for width in args.neighbours:
        table = ItemNeighbours.build(tuning, len(bundle.vocab), n_neighbors=width)
        for cands in args.candidates:
            shaped = ItemNeighbours(table.rows, table.scores, candidates=cands)
            choice = choose_blend(
                queries, targets, last, shaped, items, scale, weights=weights, recents=args.recent,
                repeats=(0.0,),
            )
            recent, weight, tried = choice.recent, choice.weight, choice.tried
            best = max(tried, key=lambda t: selection_score(t["hr@20"], t["mrr@20"]))
            alone = next(t for t in tried if t["weight"] == 0)
            print(
                f"width {width} candidates {cands}: best {recent} items w {weight:g} "
                f"{best['hr@20']:.2f} / {best['mrr@20']:.2f} (alone {alone['hr@20']:.2f} / "
                f"{alone['mrr@20']:.2f}); "
                + ", ".join(
                    f"{t['recent']} w {t['weight']:g} {t['hr@20']:.2f}/{t['mrr@20']:.2f}"
                    for t in tried
                    if t["weight"] <= 0.4
                )
                + f" [{time.perf_counter() - t0:.0f}s]",
                flush=True,
            )


if __name__ == "__main__":
    main()
