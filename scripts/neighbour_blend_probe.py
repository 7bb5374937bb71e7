"""Validation-only probe: what a precomputed item-neighbour table adds to a bundle's softmax.

    .venv/bin/python scripts/neighbour_blend_probe.py BUNDLE --dataset diginetica --valid 3000

Every prefix of the last ``--valid`` training sessions (held out by a bundle trained with
``--max-sessions`` covering them as its validation slice) is scored with
score = (1 - w) * softmax(model) + w * neighbours, for several w and neighbour kinds, each
neighbour table built from the training sessions before the validation ones:

- ``cooc``: Item-KNN (session co-occurrence, the baseline's similarity) of the last item;
- ``next``: directed transitions i -> j within 3 steps after i (decayed 1, 1/2, 1/3),
  normalised by i's count, from the last 3 items (weights 1, 1/2, 1/3).

No test data is read.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from stream_rec.core.features import CLICK, MAX_QUERY_TOKENS, featurize, item_hash
from stream_rec.datasets.splits import load_named_split
from stream_rec.evaluation.baselines import ItemKNN
from stream_rec.serving.bundle import ModelBundle

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
TOP = 100


def next_table(sessions, vocab, n_items, window=3):
    from collections import defaultdict

    counts = defaultdict(float)
    out = np.zeros(n_items + 1)
    for s in sessions:
        rows = [vocab.row(i) for i in s]
        for a, i in enumerate(rows):
            if not i:
                continue
            out[i] += 1
            for d in range(1, window + 1):
                if a + d < len(rows) and rows[a + d] and rows[a + d] != i:
                    counts[(i, rows[a + d])] += 1.0 / d
    table = defaultdict(list)
    for (i, j), c in counts.items():
        table[i].append((j, c / out[i]))
    rows_t = np.zeros((n_items + 1, TOP), np.int64)
    sc_t = np.zeros((n_items + 1, TOP), np.float32)
    for i, lst in table.items():
        lst.sort(key=lambda x: -x[1])
        lst = lst[:TOP]
        rows_t[i, : len(lst)] = [j for j, _ in lst]
        sc_t[i, : len(lst)] = [c for _, c in lst]
    return rows_t, sc_t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--dataset", default="diginetica")
    ap.add_argument("--valid", type=int, default=3000)
    ap.add_argument("--max-cases", type=int, default=20000)
    args = ap.parse_args()
    bundle = ModelBundle.load(args.bundle)
    train = load_named_split(args.dataset).split.train_sessions
    fit, valid = train[: -args.valid], train[-args.valid :]
    vocab = bundle.vocab
    n = len(vocab)
    t0 = time.perf_counter()
    cooc = ItemKNN().fit(fit)
    nxt_rows, nxt_sc = next_table(fit, vocab, n)
    print(f"tables in {time.perf_counter() - t0:.0f}s")
    cases = [(s[:k], s[k]) for s in valid for k in range(1, len(s))]
    cases = [(p, t) for p, t in cases if vocab.row(t) > 0][: args.max_cases]
    seqs = [
        (
            np.array([item_hash(i) for i in p], np.int64),
            np.full(len(p), CLICK, np.uint8),
            np.zeros((len(p), MAX_QUERY_TOKENS), np.uint32),
        )
        for p, _ in cases
    ]
    enc = bundle.encoder(providers="cpu", intra_op_threads=1)
    vecs = np.concatenate(
        [
            enc.encode(featurize(seqs[i : i + 512], vocab, bundle.query_buckets, bundle.max_len))
            for i in range(0, len(seqs), 512)
        ]
    )
    items = bundle.item_vectors[1:]
    scale = float(bundle.manifest.get("scale", 16.0))
    targets = np.array([vocab.row(t) - 1 for _, t in cases])
    kinds = ("cooc", "next")
    hits = {k: np.zeros(len(WEIGHTS)) for k in kinds}
    rr = {k: np.zeros(len(WEIGHTS)) for k in kinds}
    for a in range(0, len(cases), 1024):
        s = vecs[a : a + 1024] @ items.T * scale
        s = np.exp(s - s.max(1, keepdims=True))
        s /= s.sum(1, keepdims=True)
        for j in range(s.shape[0]):
            prefix = cases[a + j][0]
            nb = {}
            v = np.zeros(n)
            for i, sim in cooc.neighbors(prefix[-1])[:TOP]:
                r = vocab.row(i)
                if r:
                    v[r - 1] += sim
            nb["cooc"] = v
            v = np.zeros(n)
            for back, w in enumerate((1.0, 0.5, 1 / 3)):
                if back < len(prefix):
                    r = vocab.row(prefix[-1 - back])
                    if r:
                        m = nxt_rows[r] > 0
                        np.add.at(v, nxt_rows[r][m] - 1, w * nxt_sc[r][m])
            nb["next"] = v
            col = targets[a + j]
            for k in kinds:
                v = nb[k]
                tot = v.sum()
                v = v / tot if tot > 0 else v
                for w_i, w in enumerate(WEIGHTS):
                    blend = (1 - w) * s[j] + w * v
                    rank = 1 + int((blend > blend[col]).sum())
                    if rank <= 20:
                        hits[k][w_i] += 1
                        rr[k][w_i] += 1 / rank
    print(f"{len(cases):,} validation prefixes ({time.perf_counter() - t0:.0f}s)")
    for k in kinds:
        for w_i, w in enumerate(WEIGHTS):
            hr, mrr = 100 * hits[k][w_i] / len(cases), 100 * rr[k][w_i] / len(cases)
            print(f"{k} w={w:.1f} HR@20 {hr:.2f} MRR@20 {mrr:.2f}")


if __name__ == "__main__":
    main()
