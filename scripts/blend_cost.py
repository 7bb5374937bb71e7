"""Per-query cost of the co-occurrence blend against plain HNSW search (Diginetica test prefixes).

    .venv/bin/python scripts/blend_cost.py BUNDLE_WITH_COOCCURRENCE
"""

import sys
import time

import numpy as np

from stream_rec.core.cooccurrence import CANDIDATES, blended_search
from stream_rec.core.features import CLICK, MAX_QUERY_TOKENS, featurize, item_hash
from stream_rec.datasets.diginetica import load_standard_split
from stream_rec.serving.bundle import ModelBundle


def main() -> None:
    bundle = ModelBundle.load(sys.argv[1])
    neighbours, vocab = bundle.neighbours(), bundle.vocab
    assert neighbours is not None, "the bundle has no co-occurrence data (stream-rec cooccurrence)"
    split = load_standard_split()
    prefixes = [s[:n] for s in split.test_sessions[:3000] for n in range(1, len(s))][:5000]
    seqs = [(np.array([item_hash(i) for i in p], np.int64), np.full(len(p), CLICK, np.uint8),
             np.zeros((len(p), MAX_QUERY_TOKENS), np.uint32)) for p in prefixes]
    enc = bundle.encoder(providers="cpu", intra_op_threads=1)
    vecs = np.concatenate([enc.encode(featurize(seqs[i:i + 256], vocab, bundle.query_buckets, bundle.max_len))
                           for i in range(0, len(seqs), 256)])
    rows = [vocab.rows_for_hashes(s[0]) for s in seqs]
    index = bundle.index("hnsw", ef=64)
    scale, weight = float(bundle.manifest["scale"]), bundle.cooccurrence_weight

    def per_query(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) / len(vecs) * 1e3

    for _ in range(2):  # the second round is warm
        top20 = per_query(lambda: [index.search(vecs[i:i + 256], 20) for i in range(0, len(vecs), 256)])
        top100 = per_query(lambda: [index.search(vecs[i:i + 256], CANDIDATES) for i in range(0, len(vecs), 256)])
        knn = per_query(lambda: [neighbours.scores(r, CANDIDATES) for r in rows])
        full = per_query(lambda: [blended_search(index, vecs[i:i + 256], rows[i:i + 256], 20, neighbours,
                                                 bundle.item_vectors, scale, weight)
                                  for i in range(0, len(vecs), 256)])
        print(f"ms per query: HNSW top-20 {top20:.3f} | HNSW top-{CANDIDATES} {top100:.3f} | "
              f"V-SKNN {knn:.3f} | blended search in all {full:.3f}", flush=True)


if __name__ == "__main__":
    main()
