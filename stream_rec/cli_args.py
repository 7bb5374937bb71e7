"""The `stream-rec` command line: every subcommand's flags, their types and the settings flags.

What each command does is in :mod:`stream_rec.cli`; this module only describes and checks the
arguments, so a bad one fails in argparse with one line before anything starts.
"""

from __future__ import annotations

import argparse
from typing import Any

from .cli_common import (
    _SPLITS,
    CliParser,
    _add_generator_args,
    _add_protocol_args,
    _add_settings,
    _fraction,
    _non_negative_float,
    _non_negative_int,
    _positive_float,
    _positive_int,
    settings_from,
)

__all__ = ["CliParser", "add_subcommands", "settings_from"]

_SECURITY = ("security_protocol", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "sasl_mechanism",
             "sasl_username", "sasl_password")
_KAFKA = ("bootstrap_servers", "events_topic", "recs_topic", "dlq_topic", "partitions", *_SECURITY)
_GROUP = ("session_timeout_s", "standby_replicas", "changelog_barrier")
_MODEL = ("bundles_dir", "bundle", "model_version", "bundles_topic", "providers", "intra_op_threads",
          "inter_op_threads", "encoder_cache_mb", "index", "hnsw_ef", "index_threads")
_SERVING = ("top_k", "filter_purchased", "filter_clicked", "coalesce", "cold_start_trending", "explain", "batch_max",
            "batch_wait_ms", "compute_thread", "session_gap_s", "max_purchased")
_WORKER = ("engine", "app_id", "data_dir", "worker_host", "worker_port", "model_poll_s", "log_level",
           "log_format")
_TOPICS = ("replication_factor", "min_insync_replicas", "producer_idempotence", "faust_table_views")
_INPUT = ("max_record_bytes", "max_clock_skew_s", "max_event_age_s", "dlq_max_original_bytes",
          "dlq_failure")
_GATEWAY = ("gateway_host", "gateway_port", "gateway_secret", "gateway_token_ttl_s",
            "gateway_latest_users", "gateway_cors_origins", "gateway_max_body_bytes",
            "gateway_rate_per_s")


def add_subcommands(
    sub: argparse._SubParsersAction[CliParser],
) -> dict[str, argparse.ArgumentParser]:
    """Add every subcommand and its flags to `sub`, in `--help` order; returns name -> its parser."""
    _add_demo(sub)
    _add_broker(sub)
    _add_worker(sub)
    _add_produce(sub)
    _add_generate(sub)
    _add_learn(sub)
    _add_publish(sub)
    _add_forget(sub)
    from .cli_model_args import add_model_subcommands

    add_model_subcommands(sub)  # train, cooccurrence, neighbours
    _add_evaluate(sub)
    _add_ablation(sub)
    _add_tail(sub)
    _add_replay(sub)
    _add_topics(sub)
    from .cli_ops import add_repartition

    add_repartition(sub, _KAFKA)
    _add_bench(sub)
    _add_gateway(sub)
    return dict(sub.choices)


def _add_demo(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("demo", help="embedded broker + worker + generated shoppers + live recommendations",
                       description="Start an embedded broker, train a model if none exists, start a worker, "
                       "stream generated shopper events and show live recommendations. Ctrl-C stops everything.")
    p.add_argument("--max-events", type=_positive_int, default=None,
                   help="stop after N events have their recommendations (default: run until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="headless: no live view; print a JSON summary as the last line")
    p.add_argument("--rate", type=_non_negative_float, default=None,
                   help="events per second offered (0 = as fast as possible; default 200 live, 500 headless)")
    p.add_argument("--invalid-rate", type=_fraction, default=0.0,
                   help="fraction of generated events made invalid on purpose (they go to the DLQ)")
    p.add_argument("--train-events", type=_positive_int, default=60_000,
                   help="generated events to train on when no bundle exists (default 60000)")
    p.add_argument("--retrain", action="store_true", help="train a new bundle even if one exists")
    p.add_argument("--timeout", type=_positive_int, default=180,
                   help="seconds to wait for the last recommendations in headless mode (default 180)")
    _add_generator_args(p, users=2000, items=3000)
    _add_settings(p, _KAFKA + _MODEL + _SERVING + ("engine", "log_level") + _GATEWAY)


def _add_broker(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (Tansu) on loopback")
    p.add_argument("--port", type=_positive_int, default=None, help="port on 127.0.0.1 (default: a free one)")


def _add_worker(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("worker", help="run a worker (--engine faust or direct): events in, recommendations out")
    p.add_argument("--processes", type=_positive_int, default=1,
                   help="worker processes in this group, one per core (each: --worker-port + i, "
                   "--data-dir/proc-i; restarted if one exits; default 1)")
    _add_settings(p, _KAFKA + _GROUP + _MODEL + _SERVING + _WORKER + _INPUT + _TOPICS)


def _add_produce(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("produce", help="send generated events or a JSONL file to the events topic")
    p.add_argument("--file", default=None, help="JSONL file of events (.gz too); default: generated events")
    p.add_argument("--count", type=_positive_int, default=10_000, help="generated events to send (default 10000)")
    p.add_argument("--rate", type=_non_negative_float, default=0.0, help="events per second (0 = flat out)")
    p.add_argument("--invalid-rate", type=_fraction, default=0.0, help="fraction of generated events made invalid")
    p.add_argument("--keep-time", action="store_true", help="keep generated timestamps instead of shifting them to now")
    _add_generator_args(p, users=2000, items=3000)
    _add_settings(p, _KAFKA)


def _add_generate(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("generate", help="write a generated event stream to a JSONL file",
                       description="The seeded shopper stream the demo and the tests use, written to a "
                       "file (.gz compresses): for `train --dataset events`, `evaluate`, `replay` and "
                       "`produce --file`. --launches-per-day makes the catalogue drift: new items "
                       "launched every day, trending for a few days, then retired.")
    p.add_argument("--out", required=True, help="the JSONL file to write (.jsonl or .jsonl.gz)")
    p.add_argument("--count", type=_positive_int, default=150_000, help="events (default 150000)")
    p.add_argument("--launches-per-day", type=_non_negative_float, default=0.0,
                   help="new items launched per simulated day (default 0: a fixed catalogue)")
    p.add_argument("--trend-days", type=_positive_float, default=2.0,
                   help="days a launched item's popularity takes to peak; retired after 6x (default 2)")
    p.add_argument("--backtrack-rate", type=_fraction, default=0.04,
                   help="share of clicks that go back to an item clicked earlier in the session "
                   "(default 0.04; at most 0.97 less --follow-related)")
    p.add_argument("--follow-related", type=_fraction, default=0.6,
                   help="share of clicks that follow one of the last click's related items, the "
                   "rest picked in the visit's category (default 0.6; lower: the visit's topic "
                   "matters more than its last click)")
    p.add_argument("--session-length", type=_positive_float, default=8.0,
                   help="mean events per visit (default 8; at most 60)")
    _add_generator_args(p, users=2000, items=3000)


def _add_forget(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("forget", help="forget users: their session state is deleted and their "
                       "recommendations tombstoned, by a forget event through the events topic")
    p.add_argument("users", nargs="+", metavar="USER", help="user id(s) to forget")
    _add_settings(p, _KAFKA)


def _add_evaluate(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("evaluate", help="score a bundle on a data set's test prefixes (offline, streaming)",
                       description="Score a model bundle on every test prefix of the standard Diginetica "
                       "split or of an event log (SR-GNN protocol): the ONNX encoder with exact search and "
                       "with the HNSW index, optionally the baselines and a replay through broker and worker. "
                       "Progress goes to stderr.")
    p.add_argument("--dataset", choices=(*_SPLITS, "events"), default="diginetica",
                   help="test data (default diginetica)")
    p.add_argument("--events-file", default=None, help="JSONL event log for --dataset events (.gz too)")
    p.add_argument("--data-root", default=None, help="directory holding data sets (default ../shared/data)")
    p.add_argument("--data-dir", default=None,
                   help="directory of a split's train_sessions.txt and test_prefixes.tsv (--dataset sessions; "
                   "default <data root>/<dataset>)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object (the last line)")
    p.add_argument("--baselines", action="store_true", help="also score POP, Item-KNN, SKNN and V-SKNN")
    p.add_argument("--baselines-only", action="store_true",
                   help="score only POP, Item-KNN, SKNN and V-SKNN (no bundle needed): what a model "
                   "has to beat on this data")
    p.add_argument("--streaming", action="store_true",
                   help="also replay the test sessions through a broker and a worker process and score "
                   "the recommendations topic (embedded broker unless --bootstrap-servers)")
    p.add_argument("--max-sessions", type=_positive_int, default=None,
                   help="only the first N test sessions (quick runs; default all)")
    _add_protocol_args(p)
    _add_incremental_args(p)
    _add_settings(p, ("bundles_dir", "bundle", "model_version", "providers", "intra_op_threads",
                      "inter_op_threads", "encoder_cache_mb", "hnsw_ef", "index_threads", "top_k",
                      "session_gap_s",
                      "bootstrap_servers", "partitions", "log_level", *_SECURITY))


def _add_incremental_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("incremental evaluation (issue 23)")
    g.add_argument("--incremental", action="store_true",
                   help="score the test sessions window by window in time order, the model frozen "
                   "and learning from each window after scoring it, beside V-SKNN frozen and rolling")
    g.add_argument("--windows", type=_positive_int, default=10,
                   help="--incremental: equal windows by position (default 10)")
    g.add_argument("--window", default=None, metavar="DURATION",
                   help="--incremental: windows by event time instead, e.g. 1d, 1h, 10m")
    _add_update_args(g)
    g.add_argument("--no-vsknn", action="store_true", help="--incremental: skip the V-SKNN rows")


def _add_learn(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("learn", help="keep the served model learning from the events topic",
                       description="Consume the events topic under its own consumer group, keep a "
                       "window of recent sessions on disk and, every --every, fine-tune the bundle in "
                       "service on the new sessions (plus a replay sample of older ones), give items "
                       "first seen since then rows, and publish a new bundle version when the guard "
                       "(the newest held-out sessions) finds it no worse by more than --margin points. "
                       "Workers polling the bundles directory swap to it.")
    p.add_argument("--every", default="50000", metavar="N|DURATION",
                   help="an update after N events or after a duration such as 10m (default 50000)")
    p.add_argument("--window-sessions", type=_positive_int, default=50_000,
                   help="sessions kept in the window (default 50000)")
    p.add_argument("--held-out", type=_fraction, default=0.1,
                   help="newest share of the new sessions the guard scores (default 0.1)")
    p.add_argument("--min-sessions", type=_positive_int, default=20,
                   help="fewer new sessions than this: the update is skipped (default 20)")
    p.add_argument("--margin", type=float, default=0.5,
                   help="publish unless HR@20 or MRR@20 is this many points below the serving "
                   "model on the held-out sessions (default 0.5)")
    p.add_argument("--guard-z", type=_non_negative_float, default=1.645,
                   help="a shortfall counts beyond --margin only by more than this many standard "
                   "errors of the two models' per-case difference (default 1.645: one-sided 95%%; "
                   "0: the plain margin)")
    p.add_argument("--early-fraction", type=_fraction, default=0.5,
                   help="with a duration --every: an item reaching --admit-count brings the next "
                   "update forward to this fraction of the interval (default 0.5; 0: never)")
    p.add_argument("--keep-local", type=_non_negative_int, default=5,
                   help="bundles this learner wrote kept in --bundles-dir, older ones deleted "
                   "(trained bundles never; 0 = keep all; default 5)")
    p.add_argument("--port", type=_non_negative_int, default=8790,
                   help="status port: /metrics, /stats, /health/live (0 = none; default 8790)")
    p.add_argument("--max-updates", type=_positive_int, default=None,
                   help="stop after N updates (default: run until stopped)")
    _add_update_args(p)
    _add_settings(p, (*_KAFKA, "app_id", "data_dir", "bundles_dir", "bundle", "bundles_topic", "worker_host",
                      "session_timeout_s", "batch_max", "log_level", *_INPUT))


def _add_publish(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("publish", help="send a bundle to the bundles topic (workers without a shared disk)",
                       description="Send a model bundle to the compacted --bundles-topic: every worker "
                       "started with the same --bundles-topic fetches it into its own bundles directory "
                       "and swaps to it (a worker with none waits for it at start). --keep N tombstones "
                       "all but the newest N versions on the topic.")
    p.add_argument("--keep", type=_positive_int, default=None,
                   help="then retire all but the newest N bundles on the topic")
    _add_settings(p, (*_KAFKA, "bundles_dir", "bundle", "model_version", "bundles_topic",
                      "replication_factor", "min_insync_replicas", "log_level"))


def _add_update_args(g: Any) -> None:
    g.add_argument("--update-lr", type=_positive_float, default=1e-3,
                   help="fine-tuning learning rate (default 0.001)")
    g.add_argument("--update-epochs", type=_positive_int, default=1,
                   help="passes over the new sessions and the replay sample (default 1)")
    g.add_argument("--replay", type=_non_negative_float, default=1.0,
                   help="older sessions replayed per new session (default 1)")
    g.add_argument("--admit-count", type=_positive_int, default=3,
                   help="occurrences before a new item gets a row (default 3)")
    g.add_argument("--init", choices=("cooccurrence", "mean"), default="cooccurrence",
                   help="a new item's first row: the mean of the items it co-occurs with, or of "
                   "all items (default cooccurrence)")
    g.add_argument("--checkpoint-dir", default=None,
                   help="for a bundle without weights.pt: the run directory it was trained in "
                   "(its selected model, before the refit pass)")


def _add_ablation(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("ablation", help="do searches and purchases help? train and score with and without them",
                       description="Train the session model on the generated stream with clicks only, with "
                       "clicks + searches and with every event type; score next-item HR@20/MRR@20 on the same "
                       "held-out targets. The last line is a JSON list of rows.")
    p.add_argument("--events", type=_positive_int, default=60_000, help="generated events (default 60000)")
    p.add_argument("--epochs", type=_positive_int, default=4, help="training epochs per variant (default 4)")
    p.add_argument("--dim", type=_positive_int, default=64, help="embedding size (default 64)")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", action="store_true", help="print only the JSON rows")
    _add_generator_args(p, users=2000, items=3000)


def _add_tail(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("tail", help="print recommendations as they arrive (one user or all)")
    p.add_argument("--user", default=None, help="only this user_id")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest retained record")
    p.add_argument("--max", type=_positive_int, default=None, help="stop after N records")
    p.add_argument("--json", action="store_true", help="print raw JSON records")
    _add_settings(p, ("bootstrap_servers", "recs_topic", *_SECURITY))


def _add_replay(sub: argparse._SubParsersAction[CliParser]) -> None:
    from .replay.args import add_replay_arguments

    p = sub.add_parser("replay", help="backfill: fold a recorded log (file or topic range) into the "
                       "session tables, optionally recommending to a topic or a file")
    add_replay_arguments(p)
    _add_settings(p, _KAFKA + _MODEL + _SERVING + ("app_id", "data_dir", "state_memory_mb",
                                                   "log_level", "log_format") + _INPUT[:3])


def _add_topics(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("topics", help="create or describe the topics (partitions, replication, "
                       "compaction of the changelog and recommendations, retention of events)")
    p.add_argument("action", choices=("create", "describe"), help="create the missing ones, or "
                   "describe them (exit 1 when one is missing or differs in a way that matters)")
    p.add_argument("--events-retention-hours", type=_non_negative_float, default=168.0,
                   help="retention of events and events.dlq when created (default 168: a week "
                   "of replay window)")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    _add_settings(p, _KAFKA + ("app_id", "replication_factor", "min_insync_replicas", "log_level"))


def _add_bench(sub: argparse._SubParsersAction[CliParser]) -> None:
    from .bench import parse_int_list

    p = sub.add_parser("bench", help="benchmark: events/s, latency, cost; relay baseline; micro",
                       description="Measure the whole pipeline on this machine: an embedded broker (or "
                       "--bootstrap-servers), a relay baseline over the same records, N workers at "
                       "saturation (preloaded backlog), at a fixed offered load and flat out; per-stage "
                       "time, CPU, RSS, state size, RocksDB size; encoder and index microbenchmarks. "
                       "Progress goes to stderr; the last line is one JSON object (see docs/benchmarks.md).")
    p.add_argument("--events", type=_positive_int, default=50_000,
                   help="events in the saturation backlog and in the flat-out phase (default 50000)")
    p.add_argument("--rate", type=_non_negative_float, default=5_000.0,
                   help="fixed offered load, events/s (default 5000)")
    p.add_argument("--rate-seconds", type=_non_negative_float, default=10.0,
                   help="seconds of fixed offered load (0 = skip; 600 = the 10-minute memory check; default 10)")
    p.add_argument("--workers", type=_positive_int, default=1, help="worker processes (default 1)")
    p.add_argument("--warmup", type=int, default=None,
                   help="events excluded at the start of saturation (default: 10%% of --events)")
    p.add_argument("--visit-gap-days", type=_non_negative_float, default=0.001,
                   help="mean days between one shopper's visits in the generated stream: 0.001 keeps a "
                   "micro-batch's events from distinct shoppers, as on a live site; the generator's "
                   "default 1.5 lets coalescing answer several events at once (default 0.001)")
    p.add_argument("--train-events", type=_positive_int, default=60_000,
                   help="generated events the benchmark model trains on, when no bundle is given (default 60000)")
    p.add_argument("--epochs", type=_positive_int, default=1, help="training epochs of the benchmark model (default 1)")
    p.add_argument("--no-micro", action="store_true", help="skip the encoder and index microbenchmarks")
    p.add_argument("--micro-batches", type=parse_int_list, default=(1, 16, 64, 256, 1024),
                   help="encoder batch sizes (default 1,16,64,256,1024)")
    p.add_argument("--micro-efs", type=parse_int_list, default=(16, 32, 64, 128, 256),
                   help="HNSW ef values (default 16,32,64,128,256)")
    p.add_argument("--micro-seconds", type=_non_negative_float, default=1.0,
                   help="seconds per microbenchmark point (default 1)")
    p.add_argument("--micro-queries", type=_positive_int, default=2_000,
                   help="real session vectors the index is queried with (default 2000)")
    p.add_argument("--state-users", type=_positive_int, default=1_000_000,
                   help="users written to RocksDB for the size figure (default 1000000)")
    p.add_argument("--profile", action="store_true", help="py-spy worker 0 at saturation; print its top frames")
    p.add_argument("--fetch-probe", action="store_true",
                   help="at the offered load, a plain consumer of the events topic beside the workers splits "
                   "their hop into the broker's fetch path and their own part (it adds a consumer's load: "
                   "compare runs with it to runs with it)")
    g = p.add_argument_group("learning from the stream (--learn, issue 23)")
    g.add_argument("--learn", action="store_true",
                   help="instead: the cost of one learner update over --learn-events events of a drifting "
                   "generated stream, and how soon new items are recommended live")
    g.add_argument("--learn-events", type=_positive_int, default=600_000,
                   help="events in the timed update's window (default 600000: 10 min at 1,000/s)")
    g.add_argument("--live-seconds", type=_non_negative_float, default=180.0,
                   help="seconds of the live phase (0 = skip it; default 180)")
    g.add_argument("--learn-rate", type=_positive_float, default=300.0,
                   help="events/s of the live phase (default 300)")
    g.add_argument("--with-learner", type=_non_negative_int, default=0, metavar="N",
                   help="run `stream-rec learn` beside the workers, an update every N events (the "
                   "pipeline's throughput with learning on; default 0: none)")
    g.add_argument("--learn-every", type=_positive_float, default=30.0,
                   help="seconds between the live learner's updates (default 30)")
    g.add_argument("--learn-early-fraction", type=_fraction, default=0.5,
                   help="the live learner's --early-fraction: an admitted item brings its next "
                   "update forward to this share of the interval (default 0.5, the learner's)")
    p.add_argument("--timeout", type=_positive_int, default=300,
                   help="seconds to wait for each phase before giving up (default 300)")
    p.add_argument("--dataset", choices=(*_SPLITS, "events"), default=None,
                   help="the served model (--bundle) on this data set's test events, as evaluate --streaming "
                   "replays them (every event answered, filters off): adds HR@20/MRR@20 from the "
                   "recommendations topic; --events is then their count (default: generated events)")
    p.add_argument("--events-file", default=None, help="JSONL event log for --dataset events (.gz too)")
    p.add_argument("--data-root", default=None, help="directory holding data sets (default ../shared/data)")
    p.add_argument("--data-dir", default=None, help="directory of a split (--dataset sessions)")
    p.add_argument("--max-sessions", type=_positive_int, default=None,
                   help="--dataset: only the first N test sessions (quick runs; default all)")
    _add_protocol_args(p)
    _add_generator_args(p, users=10_000, items=45_000)
    _add_settings(p, _KAFKA + _GROUP + _MODEL + _SERVING + ("engine", "log_level"))


def _add_gateway(sub: argparse._SubParsersAction[CliParser]) -> None:
    p = sub.add_parser("gateway", help="push gateway: recommendations to browsers (SSE, WebSocket), "
                       "POST /events, the demo shop",
                       description="Serve each user's latest recommendations over Server-Sent Events "
                       "(GET /users/U/stream) and WebSocket (/users/U/ws) to holders of a signed token "
                       "for U, accept events (POST /events) into the events topic, and serve the demo "
                       "shop at /. Binds --gateway-host (127.0.0.1).")
    p.add_argument("--shop-items", type=_non_negative_int, default=3000,
                   help="items of the demo shop's generated catalogue, as the demo's --items (0 = no shop; default 3000)")
    p.add_argument("--mint-token", metavar="USER", default=None,
                   help="print a token for USER (signed with --gateway-secret) and exit")
    _add_settings(p, _KAFKA + ("app_id", "session_timeout_s", "max_record_bytes", "max_clock_skew_s",
                               "max_event_age_s", "log_level") + _GATEWAY)
