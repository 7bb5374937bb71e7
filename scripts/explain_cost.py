"""What explanations ("because you viewed X") cost in the serving core, on Diginetica test prefixes.

    .venv/bin/python scripts/explain_cost.py BUNDLE

Times ``Recommender.recommend`` on 5,000 prefix states in micro-batches of 256, with and without
``explain``, co-occurrence blend off, HNSW at the default ef; prints ms per recommendation.
"""

import sys
import time

from stream_rec.core.events import Event
from stream_rec.core.session import SessionPolicy
from stream_rec.datasets.diginetica import load_standard_split
from stream_rec.evaluation.cases import prefix_states, split_test_events
from stream_rec.serving.bundle import ModelBundle
from stream_rec.serving.compose import build_recommender
from stream_rec.settings import Settings


def main() -> None:
    bundle = ModelBundle.load(sys.argv[1])
    split = load_standard_split()
    _, states = prefix_states(split_test_events(split)[:2000], SessionPolicy(max_len=bundle.max_len))
    states = states[:5000]
    snapshots = [(Event(f"e{i}", "u", "click", i, item_id="x"), s) for i, s in enumerate(states)]
    base = Settings.from_env({}, cooccurrence_weight=0.0, providers="cpu", intra_op_threads=1)
    cores = {flag: build_recommender(bundle, base.with_(explain=flag)) for flag in (False, True)}
    for _ in range(2):  # the second round is warm
        out = {}
        for flag, core in cores.items():
            t0 = time.perf_counter()
            for lo in range(0, len(snapshots), 256):
                core.recommend(snapshots[lo:lo + 256], now_ms=0)
            out[flag] = (time.perf_counter() - t0) / len(snapshots) * 1e3
        print(f"ms per recommendation: without explanations {out[False]:.3f}, with {out[True]:.3f} "
              f"(+{out[True] - out[False]:.3f})", flush=True)


if __name__ == "__main__":
    main()
