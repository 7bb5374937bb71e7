"""`stream-rec`: one entry point, one subcommand per job. Run `stream-rec <command> --help`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence

from .cli_args import CliParser, add_subcommands, settings_from
from .cli_learn import cmd_evaluate, cmd_generate, cmd_learn, cmd_publish
from .cli_ops import cmd_repartition
from .errors import StreamRecError

__all__ = ["main", "build_parser"]


# ------------------------------------------------------------------------------- commands
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoOptions, run_demo

    opts = DemoOptions(
        max_events=args.max_events,
        json=args.json,
        rate=args.rate,
        invalid_rate=args.invalid_rate,
        users=args.users,
        items=args.items,
        seed=args.seed,
        train_events=args.train_events,
        timeout_s=args.timeout,
        retrain=args.retrain,
    )
    summary = run_demo(settings_from(args), opts)
    return 0 if summary.get("unanswered_users", 0) == 0 else 1


def _cmd_broker(args: argparse.Namespace) -> int:
    from .kafka.embedded import EmbeddedBroker

    with EmbeddedBroker(port=args.port) as broker:
        print("workers on this broker (Tansu 0.6) need --changelog-barrier "
              "(STREAM_REC_CHANGELOG_BARRIER=true) for exact changelog recovery", file=sys.stderr)
        broker.serve_forever()
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if not settings.bootstrap_servers:
        raise StreamRecError(
            "the worker needs a Kafka: pass --bootstrap-servers HOST:PORT or set "
            "STREAM_REC_BOOTSTRAP_SERVERS (`stream-rec broker` starts an embedded one)"
        )
    if settings.bundles_topic and not (settings.bundle or settings.model_version):
        from .kafka.bundle_topic import fetch_first_bundle

        asyncio.run(fetch_first_bundle(settings))
    if args.processes > 1:
        from .kafka.supervisor import Supervisor

        return Supervisor(settings, args.processes).run()
    if settings.engine == "direct":
        from topologies.direct import run_direct_worker

        run_direct_worker(settings)
    else:
        from topologies.worker import run_worker

        run_worker(settings)
    return 0


def _cmd_produce(args: argparse.Namespace) -> int:
    from .kafka.produce import ProduceOptions, produce

    settings = settings_from(args)
    if not settings.bootstrap_servers:
        raise StreamRecError("produce needs --bootstrap-servers HOST:PORT (or STREAM_REC_BOOTSTRAP_SERVERS)")
    opts = ProduceOptions(
        file=args.file, count=args.count, rate=args.rate, invalid_rate=args.invalid_rate,
        users=args.users, items=args.items, seed=args.seed, live_time=not args.keep_time,
    )
    n = produce(settings, opts)
    print(f"produced {n} records to {settings.events_topic}", file=sys.stderr)
    return 0


def _cmd_forget(args: argparse.Namespace) -> int:
    from .kafka.produce import forget_records, send_records

    settings = settings_from(args)
    if not settings.bootstrap_servers:
        raise StreamRecError("forget needs --bootstrap-servers HOST:PORT (or STREAM_REC_BOOTSTRAP_SERVERS)")
    n = asyncio.run(send_records(settings, forget_records(args.users), 0.0, progress=False))
    print(f"sent {n} forget event(s) to {settings.events_topic}", file=sys.stderr)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .model.build import TrainOptions, resume_bundle, train_bundle
    from .settings import env_name

    settings = settings_from(args)
    if args.resume:
        print(resume_bundle(settings, args.resume, threads=args.threads, max_minutes=args.max_minutes,
                            refit_rates=args.refit_rates, refit_soup=args.refit_soup,
                            refit_tail=args.refit_tail,
                            bundles_dir_given=args.bundles_dir is not None
                            or env_name("bundles_dir") in os.environ))
        return 0
    opts = TrainOptions(
        dataset=args.dataset, events=args.events, users=args.users, items=args.items,
        seed=args.seed, epochs=args.epochs, dim=args.dim, threads=args.threads,
        data_root=args.data_root, data_dir=args.data_dir, events_file=args.events_file, lr=args.lr,
        batch_size=args.batch_size, dropout=args.dropout, scale=args.scale,
        max_minutes=args.max_minutes, max_sessions=args.max_sessions, negatives=args.negatives,
        repeat=args.repeat, patience=args.patience, lr_decay_every=args.lr_decay_every,
        distill=args.distill, readout=args.readout, positions=args.positions,
        item_dropout=args.item_dropout, recency=args.recency, transition=args.transition, attend=args.attend,
        mixed_scoring=args.mixed_scoring,
        item_neighbours=args.item_neighbours, refit_soup=args.refit_soup,
        global_neighbours=args.global_neighbours, order=args.order, refit_rates=args.refit_rates,
        refit_tail=args.refit_tail,
        teacher_run=args.teacher_run, teacher_mix=args.teacher_mix,
        checkpoint_dir=args.checkpoint_dir,
        min_item_count=args.min_item_count, test_days=args.test_days,
    )
    path = train_bundle(settings, opts)
    print(path)
    return 0


def _cmd_cooccurrence(args: argparse.Namespace) -> int:
    from .model.build import TrainOptions, add_cooccurrence

    settings = settings_from(args)
    opts = TrainOptions(dataset=args.dataset, data_root=args.data_root, data_dir=args.data_dir,
                        events_file=args.events_file,
                        min_item_count=args.min_item_count, test_days=args.test_days)
    print(add_cooccurrence(settings, opts, args.bundle, args.weight))
    return 0


def _cmd_neighbours(args: argparse.Namespace) -> int:
    from .model.build import TrainOptions
    from .model.item_blend import add_item_neighbours
    from .model.training_data import training_data

    def progress(line: str) -> None:
        print(f"[neighbours] {line}", file=sys.stderr, flush=True)

    settings = settings_from(args)
    opts = TrainOptions(dataset=args.dataset, events=args.events, users=args.users, items=args.items,
                        seed=args.seed, data_root=args.data_root, data_dir=args.data_dir,
                        events_file=args.events_file, max_sessions=args.max_sessions,
                        min_item_count=args.min_item_count, test_days=args.test_days)
    data = training_data(opts, progress)
    if args.ef_only:
        from .model.item_blend import rechoose_ef

        print(rechoose_ef(args.bundle, settings.bundles_dir, data.sessions, progress))
        return 0
    queries = items = None
    if args.checkpoint_dir:
        from .model.item_blend import selected_queries
        from .serving.bundle import ModelBundle

        queries, items = selected_queries(args.checkpoint_dir, ModelBundle.load(args.bundle), data.sessions)
    path = add_item_neighbours(args.bundle, settings.bundles_dir, data.sessions, progress, queries=queries,
                               item_vectors=items)
    print(path or args.bundle)
    return 0


def _cmd_incremental(args: argparse.Namespace) -> int:
    from .learn.weights import load_model
    from .model.bundle_writer import with_incremental
    from .serving.bundle import ModelBundle

    settings = settings_from(args)
    bundle = ModelBundle.load(args.bundle)
    path = with_incremental(bundle, settings.bundles_dir, load_model(bundle))
    print(path)
    return 0


def _cmd_ablation(args: argparse.Namespace) -> int:
    import orjson

    from .evaluation.ablation import AblationOptions, generated_sessions, run_ablation

    sessions = generated_sessions(args.events, args.users, args.items, args.seed)
    rows = run_ablation(
        sessions,
        AblationOptions(epochs=args.epochs, dim=args.dim, seed=args.seed, threads=args.threads),
        progress=lambda m: print(f"[ablation] {m}", file=sys.stderr, flush=True),
    )
    if not args.json:
        print(f"{'variant':<26} {'HR@20':>7} {'MRR@20':>7} {'cases':>7} {'cold':>6}")
        for r in rows:
            print(f"{r['variant']:<26} {r['hr@20']:>7.2f} {r['mrr@20']:>7.2f} {r['cases']:>7} {r['cold_cases']:>6}")
    print(orjson.dumps(rows).decode())
    return 0


def _cmd_tail(args: argparse.Namespace) -> int:
    from .kafka.tail import tail

    settings = settings_from(args)
    if not settings.bootstrap_servers:
        raise StreamRecError("tail needs --bootstrap-servers HOST:PORT (or STREAM_REC_BOOTSTRAP_SERVERS)")
    tail(settings, user=args.user, from_beginning=args.from_beginning, limit=args.max, as_json=args.json)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import orjson

    from .bench import BenchOptions, run_bench
    from .bench.served import ServedOptions

    if args.learn:
        from .bench.learning import LearnBenchOptions, run_learn_bench

        learn = LearnBenchOptions(update_events=args.learn_events, live_seconds=args.live_seconds,
                                  rate=args.learn_rate, every_s=args.learn_every,
                                  early_fraction=args.learn_early_fraction,
                                  train_events=args.train_events, epochs=args.epochs)
        print(orjson.dumps(run_learn_bench(settings_from(args), learn)).decode())
        return 0

    served = None if args.dataset is None else ServedOptions(
        dataset=args.dataset, data_root=args.data_root, data_dir=args.data_dir, events_file=args.events_file,
        min_item_count=args.min_item_count, test_days=args.test_days, max_sessions=args.max_sessions,
    ).validated()
    opts = BenchOptions(
        events=args.events, rate=args.rate, rate_seconds=args.rate_seconds, workers=args.workers,
        partitions=args.partitions, warmup=args.warmup, users=args.users,
        visit_gap_days=args.visit_gap_days, items=args.items,
        seed=args.seed, train_events=args.train_events, epochs=args.epochs, micro=not args.no_micro,
        micro_batches=args.micro_batches, micro_efs=args.micro_efs, micro_seconds=args.micro_seconds,
        micro_queries=args.micro_queries, state_users=args.state_users, profile=args.profile,
        fetch_probe=args.fetch_probe,
        timeout_s=args.timeout, served=served, learner_every=args.with_learner,
    )
    summary = run_bench(settings_from(args), opts)
    print(orjson.dumps(summary).decode())
    return 0


def _cmd_gateway(args: argparse.Namespace) -> int:
    from .gateway.server import run_gateway
    from .gateway.tokens import mint_token

    settings = settings_from(args)
    if args.mint_token is not None:
        if not settings.gateway_secret:
            raise StreamRecError("--mint-token needs the gateway's secret: set STREAM_REC_GATEWAY_SECRET")
        print(mint_token(settings.gateway_secret.reveal().encode(), args.mint_token, settings.gateway_token_ttl_s))
        return 0
    run_gateway(settings, args.shop_items or None)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    import orjson

    from .replay.args import replay_options
    from .replay.control import summary_line
    from .replay.engine import replay_until_stopped

    summary = replay_until_stopped(settings_from(args), replay_options(args))
    print(orjson.dumps(summary).decode() if args.json else summary_line(summary))
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    import asyncio

    import orjson

    from .kafka.topics import create_topics, describe_topics, planned_topics, problems

    settings = settings_from(args)
    if not settings.bootstrap_servers:
        raise StreamRecError("topics needs --bootstrap-servers HOST:PORT (or STREAM_REC_BOOTSTRAP_SERVERS)")
    plan = planned_topics(settings, args.events_retention_hours)
    if args.action == "create":
        asyncio.run(create_topics(settings, plan))
    described = asyncio.run(describe_topics(settings, [t.name for t in plan]))
    issues = problems(plan, described)
    if args.json:
        print(orjson.dumps({"topics": described, "problems": issues}).decode())
    else:
        for t in plan:
            d = described[t.name]
            configs = ", ".join(f"{k}={v}" for k, v in sorted(d["configs"].items())) or "-"
            print(f"{t.name:<36} partitions {d['partitions']:>3}  replication "
                  f"{d['replication_factor']}  {configs}" if d["exists"] else f"{t.name:<36} missing")
        for line in issues:
            print(f"problem: {line}", file=sys.stderr)
    return 1 if issues else 0


# The function each subcommand runs (their flags are in `cli_args`). The commands live here, not
# in a module of their own: the benchmark's profiler ranks frames of stream_rec/cli.py as
# plumbing, and `_cmd_worker` anywhere else would sit on top of every worker profile.
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _cmd_demo, "broker": _cmd_broker, "worker": _cmd_worker, "produce": _cmd_produce,
    "generate": cmd_generate, "learn": cmd_learn, "publish": cmd_publish,
    "forget": _cmd_forget, "train": _cmd_train, "cooccurrence": _cmd_cooccurrence, "neighbours": _cmd_neighbours,
    "incremental": _cmd_incremental, "evaluate": cmd_evaluate,
    "ablation": _cmd_ablation, "tail": _cmd_tail, "bench": _cmd_bench, "replay": _cmd_replay,
    "topics": _cmd_topics, "gateway": _cmd_gateway, "repartition": cmd_repartition,
}


# ------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="stream-rec", description=__doc__)
    parser.add_argument("--version", action="version", version=f"stream-rec {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CliParser, metavar="COMMAND")
    for name, command_parser in add_subcommands(sub).items():
        command_parser.set_defaults(func=_COMMANDS[name])
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = getattr(args, "log_level", None) or "warning"
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (getattr(args, "log_format", None) or os.environ.get("STREAM_REC_LOG_FORMAT")) == "json":
        from .logs import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    try:
        return int(args.func(args) or 0)
    except StreamRecError as exc:
        print(f"stream-rec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
