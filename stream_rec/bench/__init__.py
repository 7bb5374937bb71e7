"""`stream-rec bench`: throughput, latency and cost of the whole pipeline, on one machine.

One invocation runs, against an embedded broker (or ``--bootstrap-servers``):

1. the relay baseline (:mod:`.relay`): a plain aiokafka consume-and-produce relay over
   its own copy of the same records, before and after the pipeline (machine load drifts);
2. the pipeline (:mod:`.pipeline`): N worker processes; saturation on a preloaded
   backlog, latency at a fixed offered load and flat out, per-stage time, CPU, RSS;
3. state size per user and RocksDB size for 1M users, and the encoder and index
   microbenchmarks (:mod:`.micro`).

Progress goes to stderr; :func:`run_bench` returns the summary that the CLI prints as one JSON
object on its last line. Numbers on a shared machine are noisy: compare ``ratio`` (pipeline/relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import platform
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..runtime.cores import auto_index_threads
from ..settings import Settings
from .served import ServedOptions

__all__ = ["BenchOptions", "run_bench", "ensure_bench_bundle", "parse_int_list"]

MICRO_BATCHES = (1, 16, 64, 256, 1024)
MICRO_EFS = (16, 32, 64, 128, 256)


def parse_int_list(text: str) -> tuple[int, ...]:
    """'1,16,64' -> (1, 16, 64); every value a positive integer (argparse type)."""
    import argparse

    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers; got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers; got {text!r}")
    return values


@dataclass(frozen=True)
class BenchOptions:
    """What `stream-rec bench` was asked for (serving settings come from :class:`Settings`)."""

    events: int = 50_000  # saturation backlog, and the flat-out phase's count
    rate: float = 5_000.0  # fixed offered load, events/s
    rate_seconds: float = 10.0  # duration of the fixed load (0 = skip it)
    workers: int = 1
    partitions: int | None = None  # None: max(settings.partitions, workers)
    warmup: int | None = None  # events excluded at the start of saturation; None: 10%
    users: int = 10_000  # generated shoppers
    # Mean days between one shopper's visits in the generated stream. The generator's 1.5
    # leaves ~14 of 10k shoppers active at a time, so a 256-event batch holds several events
    # per shopper (coalescing answers them once); on a live site far more shoppers are active
    # than a batch holds: 0.001 keeps 99% of a partition's 256-event batch distinct.
    visit_gap_days: float = 0.001
    items: int = 45_000  # generated catalogue = the model's vocabulary
    seed: int = 7
    train_events: int = 60_000  # for the benchmark model, when no bundle is given
    epochs: int = 1
    micro: bool = True
    micro_batches: tuple[int, ...] = MICRO_BATCHES
    micro_efs: tuple[int, ...] = MICRO_EFS
    micro_seconds: float = 1.0
    micro_queries: int = 2_000
    state_users: int = 1_000_000  # users written to RocksDB for the size figure
    profile: bool = False
    fetch_probe: bool = False  # split the worker's hop at the offered load (bench/probe.py)
    timeout_s: float = 300.0
    run_root: str = "var/bench"
    # --dataset: the served model on that data set's test events, scored (see .served)
    served: ServedOptions | None = None
    learner_every: int = 0  # a `stream-rec learn` beside the workers, updating every N events

    @property
    def warmup_events(self) -> int:
        return self.events // 10 if self.warmup is None else self.warmup

    def validated(self) -> BenchOptions:
        if self.events < 100:
            raise ConfigError(f"--events must be >= 100 (a measurable backlog); got {self.events}")
        if not 0 <= self.warmup_events < self.events:
            raise ConfigError(f"--warmup must be >= 0 and below --events ({self.events}); got {self.warmup_events}")
        if self.visit_gap_days <= 0:
            raise ConfigError(f"--visit-gap-days must be > 0; got {self.visit_gap_days:g}")
        if self.rate <= 0:
            raise ConfigError(f"--rate must be > 0 events/s; got {self.rate:g}")
        if self.partitions is not None and self.partitions < self.workers:
            raise ConfigError(f"--workers {self.workers} needs --partitions >= {self.workers} "
                              f"(a worker without a partition idles); got --partitions {self.partitions}")
        return self


# ------------------------------------------------------------------------------- bundle
def ensure_bench_bundle(settings: Settings, opts: BenchOptions) -> Path:
    """--bundle/--model-version if given, else the benchmark model (trained once, cached).

    The benchmark model's vocabulary is the whole generated catalogue (``opts.items`` rows),
    so the embedding table and the HNSW index have the catalogue's size whatever the
    training stream happened to touch. Cached under ``<bundles_dir>/bench/`` by data tag,
    out of the way of the newest-bundle lookup of workers and the demo.
    """
    import json

    from ..serving.bundle import resolve_bundle
    from .common import say

    if settings.bundle or settings.model_version:
        return resolve_bundle(settings.bundles_dir, settings.bundle or None, settings.model_version or None)
    if opts.served is not None:
        raise ConfigError("--dataset needs the bundle to serve: --bundle PATH or --model-version V")
    tag = (f"bench:generated:users={opts.users}:items={opts.items}:seed={opts.seed}"
           f":events={opts.train_events}:epochs={opts.epochs}:vocab=catalogue")
    root = Path(settings.bundles_dir) / "bench"
    if root.is_dir():
        for d in sorted(root.iterdir(), reverse=True):
            with contextlib.suppress(OSError, ValueError, KeyError):
                if not d.name.startswith(".") and json.loads((d / "manifest.json").read_text())["training"]["data"] == tag:
                    say(f"using benchmark model {d}")
                    return d
    say(f"training the benchmark model ({opts.items:,} items, {opts.epochs} epoch(s); cached in {root}/)")
    from ..generate import EventGenerator, GeneratorConfig
    from ..model.build import TrainOptions, session_arrays, train_sessions_to_bundle

    gen = EventGenerator(GeneratorConfig(n_users=opts.users, n_items=opts.items, seed=opts.seed))
    sessions_events = gen.sessions_for_training(opts.train_events)
    items = [[e.item_id for e in s if e.item_id is not None] for s in sessions_events]
    return train_sessions_to_bundle(
        settings.with_(bundles_dir=str(root)),
        [session_arrays(s) for s in sessions_events],
        [*items, list(gen.catalogue.item_ids)],  # every catalogue item gets a row
        data_tag=tag,
        opts=TrainOptions(events=opts.train_events, users=opts.users, items=opts.items, seed=opts.seed,
                          epochs=opts.epochs),
        n_events=sum(map(len, sessions_events)),
        default_epochs=opts.epochs,
    )


# ------------------------------------------------------------------------------- run
def _record(key: bytes, value: bytes) -> tuple[bytes, bytes, str, str]:
    import orjson

    obj = orjson.loads(value)
    return key, value, str(obj["event_id"]), str(obj["user_id"])


def _git() -> dict[str, Any]:
    """The commit measured, and the files that differed from it (others edit this checkout)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout

    try:
        return {"commit": git("rev-parse", "--short", "HEAD").strip(),
                "modified": [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]}
    except (OSError, subprocess.SubprocessError):
        return {}


def _machine(settings: Settings) -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers_available": ort.get_available_providers(),
        "providers_setting": settings.providers,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "git": _git(),
    }


async def _run_kafka_phases(
    s: Settings, opts: BenchOptions, broker_pid: int | None, gen: Any, partitions: int, run_dir: Path,
) -> dict[str, Any]:
    from ..kafka.admin import ensure_topics
    from .common import say
    from .learning import start_learner_process, stop_learner_process
    from .pipeline import run_pipeline
    from .relay import measure_relay

    rate_n = int(opts.rate * opts.rate_seconds)
    stream = (_record(k, v) for k, v, _ in gen.records(2 * opts.events + rate_n, now_ms=int(time.time() * 1000)))
    preload = list(itertools.islice(stream, opts.events))

    async def relay() -> dict[str, Any]:
        return await measure_relay(
            s.bootstrap_servers, preload, partitions=partitions, warmup=opts.warmup_events,
            batch_max=s.batch_max, session_timeout_s=s.session_timeout_s, run_dir=run_dir,
            timeout_s=opts.timeout_s, settings=s)

    say("relay baseline (before the pipeline)")
    before = await relay()
    await ensure_topics(s.bootstrap_servers, {s.events_topic: partitions, s.recs_topic: partitions, s.dlq_topic: 1},
                        settings=s)
    learner = start_learner_process(s, opts.learner_every, run_dir) if opts.learner_every else None
    try:
        result = await run_pipeline(
            s, workers=opts.workers, preload=preload, warmup=opts.warmup_events,
            # Generated before the phase (up to 500k), so the generator stays out of its window.
            offered=list(itertools.islice(stream, rate_n)) if rate_n <= 500_000 else itertools.islice(stream, rate_n),
            rate=opts.rate if rate_n else 0.0,
            flat=lambda: list(itertools.islice(stream, opts.events)), run_dir=run_dir,
            broker_pid=broker_pid, profile=opts.profile, fetch_probe=opts.fetch_probe,
            timeout_s=opts.timeout_s, keep_answers=opts.served is not None,
        )
    finally:
        beside = stop_learner_process(learner, run_dir, opts.learner_every) if learner else None
    result.learner = beside
    say("relay baseline (after the pipeline)")
    after = await relay()
    return {"pipeline": result, "relay": [before, after]}


def run_bench(settings: Settings, opts: BenchOptions) -> dict[str, Any]:
    """The whole benchmark; returns the summary (see docs/benchmarks.md for each field)."""
    from ..generate import EventGenerator, GeneratorConfig
    from ..serving.bundle import ModelBundle

    opts = opts.validated()
    partitions = opts.partitions or max(settings.partitions, opts.workers)
    t_start = time.perf_counter()
    machine = _machine(settings)
    tag = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run_dir = Path(opts.run_root) / f"run-{tag}"
    run_dir.mkdir(parents=True, exist_ok=True)
    bundle_path = ensure_bench_bundle(settings, opts)
    bundle = ModelBundle.load(bundle_path)
    gen: Any = EventGenerator(GeneratorConfig(n_users=opts.users, n_items=opts.items, seed=opts.seed + 1,
                                              mean_days_between_sessions=opts.visit_gap_days))
    if opts.served is not None:  # the backlog is the test events, every one answered
        from ..evaluation.cases import answering_every_event
        from .served import load_workload

        gen = load_workload(opts.served, bundle)
        opts = replace(opts, events=gen.n_events).validated()
        settings = answering_every_event(settings)
    s, kafka, broker_pid = _kafka_run(settings, opts, bundle_path, gen, partitions, tag, run_dir)
    pipe, relays = kafka["pipeline"], kafka["relay"]
    local = _state_and_micro(s, opts, bundle, gen, pipe.events_sent, run_dir)
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    summary = _summary(s, opts, bundle, pipe, relays, local, partitions, broker_pid, machine, run_dir)
    if opts.served is not None:
        from .served import served_quality

        summary = {**served_quality(gen, pipe.answers, k=s.top_k, catalogue_size=len(bundle.vocab)), **summary}
    summary["total_s"] = round(time.perf_counter() - t_start, 1)
    if local["micro"]:
        summary["machine"]["providers_used"] = local["micro"]["encoder"]["providers"]
    _print_summary(summary)
    return summary


def _kafka_run(
    settings: Settings, opts: BenchOptions, bundle_path: Path, gen: Any, partitions: int, tag: str, run_dir: Path,
) -> tuple[Settings, dict[str, Any], int | None]:
    """The relay and pipeline phases on the given Kafka or an embedded one, on this run's topics."""
    from ..kafka.embedded import kafka_or_embedded
    from .common import say

    try:
        with kafka_or_embedded(settings, say) as (s, broker):
            broker_pid = broker.pid if broker is not None else None
            s = s.with_(
                events_topic=f"{s.events_topic}-bench-{tag}", recs_topic=f"{s.recs_topic}-bench-{tag}",
                dlq_topic=f"{s.dlq_topic}-bench-{tag}", app_id=f"{s.app_id}-bench-{tag}",
                partitions=partitions, bundle=str(bundle_path), model_poll_s=0,
                index_threads=s.index_threads or auto_index_threads(opts.workers))
            kafka = asyncio.run(_run_kafka_phases(s, opts, broker_pid, gen, partitions, run_dir))
    finally:
        for d in run_dir.glob("worker-*/state"):  # logs and the profile stay; state does not
            shutil.rmtree(d, ignore_errors=True)
    return s, kafka, broker_pid


def _state_and_micro(
    s: Settings, opts: BenchOptions, bundle: Any, gen: Any, events_sent: int, run_dir: Path,
) -> dict[str, Any]:
    """State sizes of the run's users, RocksDB's size, and the encoder and index microbenchmarks."""
    from ..serving.compose import session_policy
    from . import micro
    from .common import say

    say("state: folding the run's events into per-user states")
    policy = session_policy(s, bundle.max_len)
    states = micro.fold_states(gen.events(events_sent), policy)
    state = micro.state_sizes(states)
    say(f"state: RocksDB size of {opts.state_users:,} users")
    rocks = micro.rocksdb_size(list(states.values()), opts.state_users, workdir=run_dir)
    micro_out: dict[str, Any] | None = None
    if opts.micro:
        say("micro: encoder and index")
        encoder = bundle.encoder(s.providers, s.intra_op_threads, s.inter_op_threads)
        sequences = [st.sequence() for st in states.values()]
        micro_out = {
            "encoder": micro.encoder_micro(bundle, encoder, sequences, opts.micro_batches, opts.micro_seconds),
            "index": micro.index_micro(
                bundle, micro.session_vectors(bundle, encoder, sequences, opts.micro_queries),
                opts.micro_efs, k=s.top_k, batch=s.batch_max, threads=s.index_threads, seconds=opts.micro_seconds),
        }
    return {"state": state, "rocksdb": rocks, "micro": micro_out}


def _summary(
    s: Settings, opts: BenchOptions, bundle: Any, pipe: Any, relays: list[dict[str, Any]], local: dict[str, Any],
    partitions: int, broker_pid: int | None, machine: dict[str, Any], run_dir: Path,
) -> dict[str, Any]:
    baseline = sum(r["events_per_s"] for r in relays) / len(relays)
    sat, state, rocks = pipe.saturation, local["state"], local["rocksdb"]
    return {
        "events_per_s": sat["events_per_s"],
        "baseline_events_per_s": round(baseline, 1),
        "ratio": round(sat["events_per_s"] / baseline, 4) if baseline else None,
        "recs_per_s": sat["recs_per_s"],
        "latency_ms": pipe.flat_out["latency_ms"] if pipe.flat_out else None,
        "latency_ms_at_rate": pipe.fixed_load["latency_ms"] if pipe.fixed_load else None,
        "latency_hops_ms": {p: r["hops_ms"] for p, r in (("at_rate", pipe.fixed_load), ("flat_out", pipe.flat_out)) if r},
        "cpu_s_per_1k_events": sat["cpu_s_per_1k_events"],
        "rss_mb": pipe.rss.get("max_mb"),
        "state_bytes_per_user": state.get("mean_bytes"),
        "state_bytes_per_user_max": state.get("max_bytes"),
        "rocksdb_bytes_per_1m_users": rocks.get("bytes_per_1m_users"),
        "saturation": sat,
        "fixed_load": pipe.fixed_load,
        "flat_out": pipe.flat_out,
        "baseline": {"runs": relays, "method": "aiokafka relay, same records, partitions and batch size"},
        "rss": pipe.rss,
        "encoder_cache": pipe.encoder_cache, "fetch_wait": pipe.fetch_wait,  # each worker's, at the end
        "state": state,
        "rocksdb": rocks,
        "micro": local["micro"],
        "profile": pipe.profile,
        "notes": pipe.notes,
        "config": _config(s, opts, bundle, pipe, partitions, broker_pid),
        "learner": pipe.learner,
        "machine": {**machine, "gpu": "not measured"},
        "options": asdict(opts),
        "run_dir": str(run_dir),
    }


def _config(
    s: Settings, opts: BenchOptions, bundle: Any, pipe: Any, partitions: int, broker_pid: int | None,
) -> dict[str, Any]:
    arch = bundle.manifest.get("architecture", {})
    return {
        "events": opts.events, "warmup_events": opts.warmup_events, "rate": opts.rate,
        "rate_seconds": opts.rate_seconds, "workers": opts.workers, "partitions": partitions,
        "users": opts.users, "visit_gap_days": opts.visit_gap_days, "items": len(bundle.vocab), "dim": bundle.dim,
        "n_layers": arch.get("n_layers"), "max_len": bundle.max_len, "engine": s.engine,
        "batch_max": s.batch_max, "batch_wait_ms": s.batch_wait_ms, "coalesce": s.coalesce,
        "top_k": s.top_k, "index": s.index, "ef": s.hnsw_ef, "index_threads": s.index_threads,
        "intra_op_threads": s.intra_op_threads, "inter_op_threads": s.inter_op_threads,
        "encoder_cache_mb": s.encoder_cache_mb if getattr(bundle, "incremental", False) else 0,
        "changelog_barrier": s.changelog_barrier, "state_memory_mb": s.state_memory_mb,
        "broker": "embedded" if broker_pid else "external",
        "model_version": pipe.model_version or bundle.version, "profiled": opts.profile, "fetch_probe": opts.fetch_probe,
        "dataset": opts.served.dataset if opts.served else "generated",
    }


def _print_summary(r: dict[str, Any]) -> None:
    """The headline numbers, the stage split and the profile's top frames, on stderr."""
    from .common import say

    sat = r["saturation"]
    say(f"events/s {r['events_per_s']:,.0f} | relay {r['baseline_events_per_s']:,.0f} | ratio {r['ratio']} | "
        f"recs/s {r['recs_per_s']:,.0f} | CPU {r['cpu_s_per_1k_events']} s/1k events | RSS {r['rss_mb']} MB")
    ms = sat["ms_per_1k_events"]
    say("ms per 1k events (saturation): " + ", ".join(f"{k} {v}" for k, v in ms.items()))
    for name, key in (("fixed load", "latency_ms_at_rate"), ("flat out", "latency_ms")):
        lat = r.get(key)
        if lat:
            say(f"latency {name}: p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} max {lat['max']} ms")
    say(f"state {r['state_bytes_per_user']} B/user (max {r['state_bytes_per_user_max']}); "
        f"RocksDB {r['rocksdb_bytes_per_1m_users'] / 1e6:,.0f} MB per 1M users")
    prof = r.get("profile")
    if prof:
        say(f"profile of worker 0 at saturation ({prof['samples']} samples, {prof['file']}):")
        for title, rows in (("own", prof["own"]), ("inclusive", prof["inclusive"])):
            say(f"  top by {title} time:")
            for row in rows[:12]:
                say(f"    {row['share'] * 100:5.1f}%  {row['frame']}")
