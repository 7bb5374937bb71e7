"""Do searches and purchases help? Train the same model on the same generated stream with
clicks only, with clicks + searches, and with every event type; score next-item prediction on
the same held-out targets.

The generated stream's ground truth is known: sessions often open with a search whose words
belong to the category the shopper then browses, and purchases mark the items a shopper wanted.
A prefix that is empty for a variant (e.g. only a search before the first click, with clicks
only) is answered by popularity, as a live system would answer a cold session.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..core.events import Event
from ..core.features import featurize
from ..model.build import session_arrays
from .metrics import RankingAccumulator

__all__ = ["VARIANTS", "AblationOptions", "run_ablation"]

VARIANTS: dict[str, frozenset[str]] = {
    "clicks only": frozenset({"click"}),
    "+ searches": frozenset({"click", "search"}),
    "+ searches + purchases": frozenset({"click", "search", "purchase"}),
}


@dataclass(frozen=True)
class AblationOptions:
    test_fraction: float = 0.2
    epochs: int = 4
    dim: int = 64
    seed: int = 7
    threads: int | None = None
    k: int = 20


def _cases(sessions: Sequence[Sequence[Event]]) -> list[tuple[Sequence[Event], int, str]]:
    """(session, position t, target item id) for every item event with something before it."""
    return [
        (s, t, item)
        for s in sessions
        for t in range(1, len(s))
        if (item := s[t].item_id) is not None
    ]


def run_ablation(
    sessions: Sequence[Sequence[Event]],
    options: AblationOptions = AblationOptions(),
    progress: Callable[[str], None] = lambda _m: None,
) -> list[dict[str, object]]:
    import torch

    from ..model.sasrec import SASRecConfig
    from ..model.torch_encoder import TorchEncoder
    from ..model.train import TrainConfig, build_vocab, item_popularity, train_model

    n_test = int(len(sessions) * options.test_fraction)
    train, test = sessions[: len(sessions) - n_test], sessions[len(sessions) - n_test :]
    vocab = build_vocab([[e.item_id for e in s if e.item_id is not None] for s in train])
    cases = [(s, t, target) for s, t, target in _cases(test) if vocab.row(target) > 0]
    rows = []
    for name, types in VARIANTS.items():
        t0 = time.perf_counter()
        kept = [[e for e in s if e.type in types] for s in train]
        arrays = [session_arrays(s) for s in kept if s]
        model, metrics = train_model(
            arrays, vocab, SASRecConfig(n_items=len(vocab), dim=options.dim),
            TrainConfig(epochs=options.epochs, seed=options.seed, threads=options.threads),
        )
        popularity = item_popularity(arrays, vocab)
        pop_top = [vocab.item_id(int(r)) for r in np.argsort(-popularity[1:], kind="stable")[: options.k] + 1]
        encoder = TorchEncoder(model)
        with torch.no_grad():
            item_vectors = model.item_vectors().numpy()
        acc = RankingAccumulator(k=options.k, catalogue_size=len(vocab))
        warm = [(s, t, target) for s, t, target in cases if any(e.type in types for e in s[:t])]
        cold = len(cases) - len(warm)
        for lo in range(0, len(warm), 512):
            chunk = warm[lo : lo + 512]
            inputs = featurize([session_arrays([e for e in s[:t] if e.type in types]) for s, t, _ in chunk],
                               vocab, model.config.query_buckets, model.config.max_len)
            scores = encoder.encode(inputs) @ item_vectors[1:].T  # (B, n_items)
            top = np.argsort(-scores, axis=1)[:, : options.k] + 1
            for (_, t, target), r in zip(chunk, top):
                acc.add([vocab.item_id(int(x)) for x in r], target, prefix_length=t)
        for s, t, target in cases:
            if not any(e.type in types for e in s[:t]):
                acc.add(pop_top, target, prefix_length=t)
        summary = acc.summary(percent=True)
        row = {
            "variant": name,
            "hr@20": round(summary["hr@20"], 2),
            "mrr@20": round(summary["mrr@20"], 2),
            "cases": len(cases),
            "cold_cases": cold,
            "valid_hr@20": round(100 * metrics.valid_hr20, 2),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        progress(f"{name}: HR@20 {row['hr@20']} MRR@20 {row['mrr@20']} ({row['seconds']}s)")
        rows.append(row)
    return rows


def generated_sessions(events: int, users: int, items: int, seed: int) -> list[list[Event]]:
    from ..generate import EventGenerator, GeneratorConfig

    return EventGenerator(GeneratorConfig(n_users=users, n_items=items, seed=seed)).sessions_for_training(events)


