"""Validation-only experiment: blend a bundle's Transformer softmax with V-SKNN scores.

    .venv/bin/python scripts/validation_blend.py BUNDLE [--trained-on 0.9]

Scores every prefix of the last 5% of the Diginetica training sessions (never trained on when
the bundle held out at least 5%) with score = (1 - w) * softmax(Transformer) + w * V-SKNN
(normalised to sum 1), for several w; V-SKNN is fitted on the first ``--trained-on`` share of
the training sessions (what the bundle trained on). No test data is read.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from stream_rec.core.features import CLICK, MAX_QUERY_TOKENS, featurize, item_hash
from stream_rec.datasets.diginetica import load_standard_split
from stream_rec.evaluation.baselines import SessionKNN
from stream_rec.serving.bundle import ModelBundle

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--trained-on", type=float, default=0.9, help="share of training sessions the bundle trained on")
    args = ap.parse_args()
    bundle = ModelBundle.load(args.bundle)
    train = load_standard_split().train_sessions
    knn = SessionKNN().fit(train[: int(len(train) * args.trained_on)])
    vocab = bundle.vocab
    cases = [(s[:n], s[n]) for s in train[-int(len(train) * 0.05):] for n in range(1, len(s))]
    cases = [(p, t) for p, t in cases if vocab.row(t) > 0]
    seqs = [(np.array([item_hash(i) for i in p], np.int64), np.full(len(p), CLICK, np.uint8),
             np.zeros((len(p), MAX_QUERY_TOKENS), np.uint32)) for p, _ in cases]
    enc = bundle.encoder(providers="cpu", intra_op_threads=1)
    vecs = np.concatenate([enc.encode(featurize(seqs[i:i + 512], vocab, bundle.query_buckets, bundle.max_len))
                           for i in range(0, len(seqs), 512)])
    items = bundle.item_vectors[1:]  # (n_items, D), normalised
    scale = float(bundle.manifest.get("scale", 16.0))
    targets = np.array([vocab.row(t) - 1 for _, t in cases])
    hits, rr = np.zeros(len(WEIGHTS)), np.zeros(len(WEIGHTS))
    t0 = time.perf_counter()
    for a in range(0, len(cases), 1024):
        s = vecs[a:a + 1024] @ items.T * scale  # (B, n_items)
        s = np.exp(s - s.max(1, keepdims=True))
        s /= s.sum(1, keepdims=True)
        for j in range(s.shape[0]):
            knn_scores = np.zeros(s.shape[1])
            recs = knn.recommend(cases[a + j][0], 100)
            if recs:
                rows = np.array([vocab.row(i) - 1 for i, _ in recs])
                sc = np.array([x for _, x in recs])
                knn_scores[rows] = sc / sc.sum()
            col = targets[a + j]
            for w_i, w in enumerate(WEIGHTS):
                blend = (1 - w) * s[j] + w * knn_scores
                rank = 1 + int((blend > blend[col]).sum())
                if rank <= 20:
                    hits[w_i] += 1
                    rr[w_i] += 1 / rank
    print(f"{len(cases):,} validation prefixes ({time.perf_counter() - t0:.0f}s)")
    for w_i, w in enumerate(WEIGHTS):
        print(f"w={w:.1f} HR@20 {100 * hits[w_i] / len(cases):.2f} MRR@20 {100 * rr[w_i] / len(cases):.2f}")


if __name__ == "__main__":
    main()
