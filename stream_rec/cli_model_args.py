"""The `stream-rec` flags of the commands that make bundles: train, cooccurrence, neighbours."""

from __future__ import annotations

import argparse

from .cli_common import (
    _SPLITS,
    CliParser,
    _add_generator_args,
    _add_protocol_args,
    _add_settings,
    _fraction,
    _non_negative_float,
    _non_negative_int,
    _number,
    _positive_int,
)
from .model.recipes import ORDERS, REFIT_TAIL_MAX

__all__ = ["add_model_subcommands"]


def add_model_subcommands(sub: argparse._SubParsersAction[CliParser]) -> None:
    _add_train(sub)
    _add_cooccurrence(sub)
    _add_neighbours(sub)
    _add_incremental(sub)


# --refit-tail: bounded here as in TrainConfig, so a bad value is refused before any data loads
_refit_tail = _number(float, lambda v: 0 <= v <= REFIT_TAIL_MAX, f"a number from 0 to {REFIT_TAIL_MAX:g}")


def _rates(text: str) -> tuple[float, ...]:
    """``--refit-rates``: comma-separated learning rates, each in (0, 1]."""
    try:
        rates = tuple(float(part) for part in text.split(","))
    except ValueError:
        rates = ()
    if not rates or any(not 0.0 < r <= 1.0 for r in rates):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated learning rates in (0, 1], e.g. 5e-4,3e-4; got {text!r}")
    return rates


def _add_data_args(p: argparse.ArgumentParser) -> None:
    """Where a data set's files are (train, cooccurrence and neighbours read the same sessions)."""
    p.add_argument("--events-file", default=None, help="JSONL event log for --dataset events")
    p.add_argument("--data-root", default=None, help="directory holding data sets (default ../shared/data)")
    p.add_argument("--data-dir", default=None,
                   help="directory of a split's train_sessions.txt and test_prefixes.tsv (--dataset sessions; "
                   "default <data root>/<dataset>)")


def _add_train(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("train", help="train a session Transformer and write a model bundle")
    p.add_argument("--dataset", choices=("generated", *_SPLITS, "events"), default="generated",
                   help="training data (default generated; sessions = any split in the standard format)")
    p.add_argument("--events", type=_positive_int, default=60_000, help="generated events to train on (default 60000)")
    _add_data_args(p)
    p.add_argument("--epochs", type=_positive_int, default=None, help="training epochs (default: per data set)")
    p.add_argument("--dim", type=_positive_int, default=None, help="embedding size (default: per data set)")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch threads; with N > 1 the refit's soup also "
                   "runs N refits at a time, one process each (default: all cores)")
    p.add_argument("--lr", type=_non_negative_float, default=None, help="Adam learning rate (default: per data set)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="sessions per step (default: per data set)")
    p.add_argument("--dropout", type=_fraction, default=None, help="dropout inside the blocks (default: per data set)")
    p.add_argument("--scale", type=_non_negative_float, default=None,
                   help="cosine -> logit scale of the softmax (default: per data set)")
    p.add_argument("--max-minutes", type=_non_negative_float, default=None,
                   help="stop training after this long, 0 = no limit (default: per data set; the standard splits 60)")
    p.add_argument("--lr-decay-every", type=_non_negative_int, default=None,
                   help="epochs between x0.1 learning-rate decays, 0 = never (default: per data set)")
    p.add_argument("--negatives", type=_non_negative_int, default=None,
                   help="sampled softmax with N shared uniform negatives, 0 = full softmax (default: per data set)")
    p.add_argument("--repeat", action=argparse.BooleanOptionalAction, default=None,
                   help="the model's repeat head: a learned bonus for the session's own items (default: per data set)")
    p.add_argument("--distill", type=_fraction, default=None,
                   help="weight of V-SKNN's next-item distribution (over each session's past) in the training "
                   "target, 0 = off (default: per data set)")
    p.add_argument("--readout", choices=("last", "core"), default=None,
                   help="session vector: the last position's output, or core = a learned weighted sum of the "
                   "session's item embeddings (one space for sessions and items; default: per data set)")
    p.add_argument("--positions", choices=("reverse", "forward"), default=None,
                   help="position embeddings counted from the last event (reverse) or the first (forward) "
                   "(default: per data set)")
    p.add_argument("--item-dropout", type=_fraction, default=None,
                   help="core readout: dropout on the summed item embeddings and the scoring table "
                   "(default: per data set)")
    p.add_argument("--recency", action=argparse.BooleanOptionalAction, default=None,
                   help="core readout: a learned weight bias by each item's distance from the newest event "
                   "(default: per data set)")
    p.add_argument("--transition", action=argparse.BooleanOptionalAction, default=None,
                   help="core readout: add a learned linear map of the newest event's output to the "
                   "weighted sum (first-order transitions; default: per data set)")
    p.add_argument("--mixed-scoring", action=argparse.BooleanOptionalAction, default=None,
                   help="with --global-neighbours: score items as the encoder reads them (their row "
                   "plus the gated mean of their neighbours), so rare items borrow their neighbours' "
                   "place (default: per data set)")
    p.add_argument("--attend", action=argparse.BooleanOptionalAction, default=None,
                   help="core readout: the newest event's output also queries the weights of the "
                   "session's items (default: per data set)")
    p.add_argument("--refit-soup", type=_positive_int, default=None, metavar="K",
                   help="after selection, average K refits on the validation slice (seeds differ) when its "
                   "halves say the average beats one; 1 = one refit (default: per data set)")
    p.add_argument("--global-neighbours", type=_non_negative_int, default=None, metavar="K",
                   help="the encoder's global item graph: each item's K Item-KNN neighbours mixed into its "
                   "embedding by a learned gate (GCE-GNN), 0 = off (default: per data set)")
    p.add_argument("--refit-rates", type=_rates, default=None, metavar="R[,R...]",
                   help="the refit's candidate learning rates beside the last decayed one and the initial "
                   "one, chosen on the validation slice's halves, e.g. 5e-4 (default: per data set)")
    p.add_argument("--refit-tail", type=_refit_tail, default=None, metavar="X",
                   help="the refit first learns the newest training sessions, X times as many as the "
                   "sessions it refits on, 0 = the validation slice alone (default: per data set)")
    p.add_argument("--order", choices=ORDERS, default=None,
                   help="batches shuffled across each epoch, or chronological: each epoch runs through "
                   "time and ends on the newest sessions (default: per data set)")
    p.add_argument("--teacher-run", default=None, metavar="DIR",
                   help="a finished run's --checkpoint-dir: its selected model (before its refit) is a second "
                   "teacher for --distill, mixed with V-SKNN's (default: V-SKNN alone)")
    p.add_argument("--teacher-mix", type=_fraction, default=0.5, metavar="M",
                   help="the teacher run's share of the soft target, the rest V-SKNN's; 1 = that model alone "
                   "(default 0.5)")
    p.add_argument("--item-neighbours", action=argparse.BooleanOptionalAction, default=None,
                   help="after the model bundle, a second version that blends an item-neighbour table if it "
                   "helps on validation (default: per data set, on)")
    p.add_argument("--patience", type=_non_negative_int, default=None,
                   help="stop after N epochs without a better validation HR@20 + MRR@20, 0 = never (default 2)")
    p.add_argument("--max-sessions", type=_positive_int, default=None,
                   help="train on the last N training sessions only (quick runs)")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="run directory for the options and a checkpoint after every epoch, kept after the "
                   "run (default: a new one under <bundles dir>/.runs/, removed once the bundle is written)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the stopped run in DIR from its last completed epoch with the options it "
                   "was started with; only --threads and --max-minutes may be given anew, and "
                   "--refit-rates, --refit-soup and --refit-tail (a finished run refits again with them)")
    _add_protocol_args(p)
    _add_generator_args(p, users=2000, items=3000)
    _add_settings(p, ("bundles_dir", "log_level"))


def _add_cooccurrence(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("cooccurrence", help="a new bundle version that blends session co-occurrence "
                       "(V-SKNN over the training sessions) into the model's scores")
    p.add_argument("--bundle", required=True, help="the bundle whose model to keep")
    p.add_argument("--dataset", choices=(*_SPLITS, "events"), default="diginetica",
                   help="whose training sessions (default diginetica)")
    _add_data_args(p)
    p.add_argument("--weight", type=_fraction, default=0.6,
                   help="blend weight of co-occurrence, 0-1 (default 0.6: chosen on Diginetica's validation slice)")
    _add_protocol_args(p)
    _add_settings(p, ("bundles_dir", "log_level"))


def _add_neighbours(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("neighbours", help="a new bundle version that blends an item-neighbour table (each "
                       "item's co-occurring items, looked up per answer) and a share for the session's own "
                       "items into the model's scores, the weight and the share chosen on the bundle's "
                       "validation slice")
    p.add_argument("--bundle", required=True, help="the bundle whose model to keep")
    p.add_argument("--dataset", choices=("generated", *_SPLITS, "events"), default="diginetica",
                   help="the bundle's training data, with the same data options as its training (default diginetica)")
    p.add_argument("--events", type=_positive_int, default=60_000, help="generated events (default 60000)")
    _add_data_args(p)
    p.add_argument("--max-sessions", type=_positive_int, default=None,
                   help="the last N training sessions only (as the bundle was trained)")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="the bundle's training run directory (train --checkpoint-dir): the weight is tuned "
                   "with its selected model before the refit pass, which trained on the validation slice")
    p.add_argument("--ef-only", action="store_true",
                   help="for a bundle that blends already: keep its table and weight, choose HNSW's ef "
                   "through the blend as served (bundles written before `neighbours` chose it so)")
    _add_protocol_args(p)
    _add_generator_args(p, users=2000, items=3000)
    _add_settings(p, ("bundles_dir", "log_level"))


def _add_incremental(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("incremental", help="a new bundle version with the incremental encoder (a new event "
                       "encodes one position; for bundles written before `train` exported it)")
    p.add_argument("--bundle", required=True, help="the bundle whose model to keep (needs its weights.pt)")
    _add_settings(p, ("bundles_dir", "log_level"))
