"""RSS of the direct engine's session tables under a long stream of state updates, no broker.

    .venv/bin/python scripts/state_memory_probe.py --users 10000 --updates 3000000 --budget-mb 64
    .venv/bin/python scripts/state_memory_probe.py --budget-mb 0   # per-database RocksDB options, no budget

Each update is the worker's read-modify-write of one user's state (a random user of --users;
the value grows by one event of 29 bytes up to the 50-event cap, like SessionState), written
in batches of 100 over 4 partition databases. Prints RSS growth (and the budget's usage) every
--every updates. Results: docs/benchmarks.md, "Memory over 10 minutes".
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_rec.runtime.partitioned_store import PartitionedSessionDB  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


class _Unbudgeted(PartitionedSessionDB):
    """The store's options before the shared budget: 8 MB x 2 memtables and a default block cache per database."""

    def open(self, partition: int):  # type: ignore[no-untyped-def]
        from rocksdict import Options, Rdict

        db = self._dbs.get(partition)
        if db is None:
            opts = Options(raw_mode=True)
            opts.create_if_missing(True)
            opts.set_write_buffer_size(8 << 20)
            opts.set_max_write_buffer_number(2)
            db = self._dbs[partition] = Rdict(str(self.path(partition)), options=opts)
        return db

    def memory_usage(self) -> int:
        return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--updates", type=int, default=3_000_000)
    ap.add_argument("--budget-mb", type=int, default=64, help="0: per-database options, no shared budget")
    ap.add_argument("--every", type=int, default=250_000)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="state-memory-")
    db = _Unbudgeted(root) if args.budget_mb == 0 else PartitionedSessionDB(root, args.budget_mb << 20)
    users = [f"u{i:07d}".encode() for i in range(args.users)]
    rng = random.Random(0)
    start = rss_mb()
    print(f"budget {args.budget_mb or 'none'} MB, {args.users:,} users; RSS at start {start:.1f} MB")
    print("updates | RSS growth MB | budget usage MB")
    batch = 100
    for done in range(0, args.updates, batch):
        by_partition: dict[int, list[bytes]] = {}
        for _ in range(batch):
            user = users[rng.randrange(len(users))]
            by_partition.setdefault(hash(user) % 4, []).append(user)
        for p, keys in by_partition.items():
            values = db.get_many(p, keys)
            writes = []
            for key, old in zip(keys, values):
                n = min(50, (0 if old is None else len(old) // 29) + 1)
                writes.append((key, os.urandom(27 + 29 * n)))
            db.write(p, writes, changelog_offset=done)
        if (done + batch) % args.every == 0:
            print(f"{done + batch:>9,} | {rss_mb() - start:6.1f} | {db.memory_usage() / 2**20:6.1f}", flush=True)
    db.close_all()


if __name__ == "__main__":
    main()
