"""Inject faults into a running system and count what it cost (issue 24).

    .venv/bin/python scripts/faults.py                       # every scenario, the full table
    .venv/bin/python scripts/faults.py --short               # CI: one kill, one poison burst
    .venv/bin/python scripts/faults.py --scenarios kill,restart --session-timeout-s 3

Each scenario gets its own embedded broker (loopback), topics and consumer group, a steady
stream of generated events (``--rate``), worker processes (``stream-rec worker``, direct engine,
every event answered on its own: coalescing off) and one fault. A row: events produced (acked),
answered, lost (never answered), duplicated (answered twice: at-least-once), the seconds from
the fault (or its end) until every partition answers again, the workers' largest RSS. It
writes the rows to ``--out`` (JSON) and prints the Markdown table of docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from stream_rec.faults.scenarios import SCENARIOS, FaultOptions, run_scenario

SHORT = ("kill", "poison")
COLUMNS = (
    "scenario",
    "produced",
    "answered",
    "lost",
    "duplicated",
    "poison_sent",
    "dead_letters",
    "recovery_s",
    "max_latency_s",
    "rss_max_mb",
    "workers_dead",
)


def _tiny_bundle(run_dir: Path) -> Path:
    from stream_rec.model.build import TrainOptions, train_bundle
    from stream_rec.settings import Settings

    settings = Settings.from_env({}, bundles_dir=str(run_dir / "bundles"))
    return train_bundle(
        settings, TrainOptions(events=20_000, epochs=2, threads=1, users=2000, items=3000)
    )


def table(rows: list[dict]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    return head + "".join(
        "| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in COLUMNS) + " |\n"
        for r in rows
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, of: {', '.join(SCENARIOS)} (default: all)",
    )
    p.add_argument(
        "--short", action="store_true", help=f"CI's short run: {', '.join(SHORT)}, shorter phases"
    )
    p.add_argument("--bundle", type=Path, help="model bundle to serve (default: train a small one)")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--rate", type=float, default=100.0, help="events/s of the steady stream")
    p.add_argument("--after-s", type=float, default=15.0, help="seconds of stream after each fault")
    p.add_argument("--burst-s", type=float, default=60.0)
    p.add_argument("--session-timeout-s", type=float, default=0.0, help="0: the worker's default")
    p.add_argument(
        "--run-dir", type=Path, help="worker state and logs (default: a temporary directory)"
    )
    p.add_argument("--out", type=Path, default=Path("faults.json"))
    a = p.parse_args(argv)
    names = list(SHORT) if a.short else [n.strip() for n in a.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(
            f"--scenarios: unknown {', '.join(unknown)}; expected some of {', '.join(SCENARIOS)}"
        )
    if a.partitions < 3 or a.rate <= 0:
        p.error("--partitions must be at least 3 (three workers share them) and --rate above 0")
    run_dir = a.run_dir or Path(tempfile.mkdtemp(prefix="stream-rec-faults-"))
    bundle = a.bundle or _tiny_bundle(run_dir)
    opts = FaultOptions(
        bundle=bundle,
        run_dir=run_dir,
        partitions=a.partitions,
        rate=a.rate,
        after_s=8.0 if a.short else a.after_s,
        burst_s=10.0 if a.short else a.burst_s,
        random_poison=1000,
        session_timeout_s=a.session_timeout_s,
        say=lambda m: print(m, file=sys.stderr, flush=True),
    )
    rows = [asyncio.run(run_scenario(n, opts)) for n in names]
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "bundle": str(bundle),
        "options": {k: v for k, v in vars(a).items() if k not in ("bundle", "run_dir", "out")},
        "rows": rows,
    }
    a.out.write_text(json.dumps(result, indent=1, default=str))
    print(table(rows))
    bad = [r["scenario"] for r in rows if r["lost"] or r["workers_dead"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
