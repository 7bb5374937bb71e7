"""The evaluation and learning commands: `evaluate` (offline, streaming, baselines,
`--incremental`), `generate` and `learn` (issue 23)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .cli_common import settings_from
from .errors import StreamRecError

__all__ = ["incremental", "cmd_evaluate", "cmd_generate", "cmd_learn", "cmd_publish"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    import orjson

    from .evaluation.offline import EvaluateOptions, run_evaluation

    opts = EvaluateOptions(
        dataset=args.dataset, data_root=args.data_root, data_dir=args.data_dir,
        events_file=args.events_file, min_item_count=args.min_item_count, test_days=args.test_days,
        baselines=args.baselines or args.baselines_only, baselines_only=args.baselines_only,
        streaming=args.streaming, max_sessions=args.max_sessions,
    )
    if args.baselines_only and (args.streaming or args.incremental):
        raise StreamRecError(
            "--baselines-only scores no bundle; drop --streaming and --incremental"
        )
    if args.incremental:
        return incremental(args, opts)
    report = run_evaluation(settings_from(args), opts)
    failed = 1 if report.get("streaming", {}).get("replay", {}).get("unanswered", 0) else 0
    if args.json:
        print(orjson.dumps(report).decode())
        return failed
    rows = [(f"ours, {kind}" + (f" ef={report['ef']}" if kind == "hnsw" else ""), s)
            for kind, s in report.get("index", {}).items()]
    if "streaming" in report:
        rows.append(("ours, streaming", report["streaming"]))
    rows += list(report.get("baselines", {}).items())
    print(f"{report['prefixes']:,} prefixes of {report['dataset']}"
          + (f"; model {report['model_version']}" if "model_version" in report else ""))
    print(f"{'':24} {'HR@20':>7} {'MRR@20':>7} {'NDCG@20':>8} {'cov@20':>7}"
          "  HR@20: targets in / not in their prefix")
    for name, s in rows:
        split = s.get("by_target")
        note = f"  {split['in_prefix']['hr@20']:.2f} / {split['new']['hr@20']:.2f}" if split else ""
        print(f"{name:24} {s['hr@20']:7.2f} {s['mrr@20']:7.2f} {s['ndcg@20']:8.2f} "
              f"{s['coverage@20']:7.2f}{note}")
    if "index" in report:
        by_length = report["index"]["hnsw"]["hr@20_by_length"]
        print("HR@20 by prefix length (hnsw): "
              + ", ".join(f"{b}: {v:.2f}" for b, v in by_length.items()))
    return failed


def incremental(args: argparse.Namespace, opts: Any) -> int:
    import orjson

    from .learn.evaluate import parse_window, run_incremental_evaluation
    from .learn.incremental import IncrementalOptions
    from .learn.update import UpdateConfig

    if args.streaming or args.baselines:
        raise StreamRecError(
            "--incremental scores its own rows (V-SKNN included); drop --streaming and --baselines"
        )
    inc = IncrementalOptions(
        windows=args.windows,
        window_ms=parse_window(args.window) if args.window else None,
        update=UpdateConfig(
            lr=args.update_lr,
            epochs=args.update_epochs,
            replay=args.replay,
            threads=args.intra_op_threads or 1,
        ),
        min_count=args.admit_count,
        init=args.init,
        vsknn=not args.no_vsknn,
    )
    report = run_incremental_evaluation(
        settings_from(args),
        opts,
        inc,
        args.checkpoint_dir,
        progress=lambda m: print(f"[incremental] {m}", file=sys.stderr, flush=True),
    )
    if not args.json:
        for span, rows in report["mean"].items():
            if isinstance(rows, dict):
                print(
                    f"mean over windows ({span}): "
                    + ", ".join(f"{k} {v['hr@20']:.2f}/{v['mrr@20']:.2f}" for k, v in rows.items())
                )
    print(orjson.dumps(report).decode())
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import EventGenerator, GeneratorConfig
    from .generate.jsonl import write_jsonl

    gen = EventGenerator(
        GeneratorConfig(
            n_users=args.users,
            n_items=args.items,
            seed=args.seed,
            launches_per_day=args.launches_per_day,
            trend_days=args.trend_days,
            backtrack_rate=args.backtrack_rate,
            follow_related=args.follow_related,
            mean_session_len=args.session_length,
        )
    )
    n = write_jsonl(gen.events(args.count), args.out)
    drift = gen._drift
    launched = f", {drift.launched:,} items launched" if drift is not None else ""
    print(f"{n:,} events written to {args.out}{launched}", file=sys.stderr)
    return 0


def cmd_learn(args: argparse.Namespace) -> int:
    from topologies.learner import run_learner

    from .learn.evaluate import parse_window
    from .learn.learner import LearnOptions
    from .learn.update import UpdateConfig

    settings = settings_from(args)
    if not settings.bootstrap_servers:
        raise StreamRecError(
            "learn needs --bootstrap-servers HOST:PORT (or STREAM_REC_BOOTSTRAP_SERVERS)"
        )
    every = args.every.strip()
    if every.isdigit() and int(every) > 0:
        timing: dict[str, Any] = {"every_events": int(every), "every_ms": None}
    else:
        try:
            timing = {"every_events": None, "every_ms": parse_window(every)}
        except StreamRecError:
            raise StreamRecError(
                f"--every {every!r}: expected a number of events (e.g. 50000) "
                "or a duration (e.g. 10m, 1h)"
            ) from None
    if not 0 < args.held_out < 1:
        raise StreamRecError(f"--held-out {args.held_out}: expected a fraction in (0, 1)")
    opts = LearnOptions(
        **timing,
        capacity=args.window_sessions,
        held_out=args.held_out,
        min_sessions=args.min_sessions,
        min_count=args.admit_count,
        init=args.init,
        margin=args.margin,
        guard_z=args.guard_z,
        checkpoint_dir=args.checkpoint_dir,
        early_fraction=args.early_fraction,
        keep_local=args.keep_local,
        update=UpdateConfig(lr=args.update_lr, epochs=args.update_epochs, replay=args.replay),
    )
    run_learner(settings, opts, port=args.port, max_updates=args.max_updates)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    import asyncio

    from .kafka.bundle_topic import BundleFetcher, publish_bundle, retire_bundles
    from .serving.bundle import resolve_bundle

    settings = settings_from(args)
    if not settings.bootstrap_servers or not settings.bundles_topic:
        raise StreamRecError(
            "publish needs --bootstrap-servers HOST:PORT and --bundles-topic TOPIC"
        )
    path = resolve_bundle(
        settings.bundles_dir, settings.bundle or None, settings.model_version or None
    )

    async def run() -> None:
        note = await publish_bundle(settings, path)
        print(
            f"{note['version']}: {note['chunks']} chunks, {note['bytes']:,} bytes "
            f"to {settings.bundles_topic}",
            file=sys.stderr,
        )
        if args.keep:
            fetcher = BundleFetcher(settings, notes_only=True)  # the topic's announcements
            task = asyncio.create_task(fetcher.run())
            while note["version"] not in fetcher.notes and not task.done():
                await asyncio.sleep(0.2)
            fetcher.stop()
            await asyncio.gather(task, return_exceptions=True)
            n = await retire_bundles(settings, list(fetcher.notes.values()), keep=args.keep)
            print(f"{n} older bundle(s) retired", file=sys.stderr)

    asyncio.run(run())
    return 0
