"""Next-item ranking metrics, as SR-GNN and the papers after it compute them.

One relevant item (the target) per prefix. ``rank`` is the target's 1-based position in the
recommended list, 0 when absent. At cut-off k:

- HR@k (= SR-GNN's P@20 = Recall@20): share of prefixes whose target ranks in the top k;
- MRR@k: mean of 1/rank, 0 outside the top k;
- NDCG@k: mean of 1/log2(rank + 1), 0 outside the top k (the ideal DCG is 1);
- coverage@k: distinct items in all top-k lists / catalogue size.

Metrics are fractions in [0, 1]; pass ``percent=True`` for the papers' x100 figures. Over no
prefixes at all they are NaN. :class:`RankingAccumulator` computes all of them in one pass, for
streaming evaluation, with HR@k by prefix length (buckets 1, 2, 3-5, 6+).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "LENGTH_BUCKETS",
    "target_ranks",
    "hit_rate_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "coverage_at_k",
    "rank_of_target",
    "ranks_of_targets",
    "top_k",
    "length_bucket",
    "hit_rate_by_length",
    "RankingAccumulator",
    "by_target_note",
]

LENGTH_BUCKETS = ("1", "2", "3-5", "6+")

Ranked = Sequence[Sequence[Hashable]] | np.ndarray  # lists of item ids, best first, or (B, K)
Targets = Sequence[Hashable] | np.ndarray


def _rank(recommended: Sequence[Hashable], target: Hashable) -> int:
    for pos, item in enumerate(recommended, 1):
        if item == target:
            return pos
    return 0


def target_ranks(recommended: Ranked, targets: Targets) -> np.ndarray:
    """1-based rank of each target in its recommended list (first occurrence), 0 when absent.

    ``recommended`` is a list of lists (lengths may differ) or a (B, K) array of item ids.
    """
    if len(recommended) != len(targets):
        raise ValueError(
            f"expected one target per list; got {len(recommended)} lists, {len(targets)} targets"
        )
    if isinstance(recommended, np.ndarray) and recommended.ndim == 2:
        match = recommended == np.asarray(targets).reshape(-1, 1)
        return np.where(match.any(axis=1), match.argmax(axis=1) + 1, 0).astype(np.int64)
    return np.fromiter(
        (_rank(r, t) for r, t in zip(recommended, targets, strict=True)),
        dtype=np.int64,
        count=len(targets),
    )


def _scale(value: float, percent: bool) -> float:
    return value * 100.0 if percent else value


def _hit(ranks: np.ndarray, k: int) -> np.ndarray:
    return (ranks >= 1) & (ranks <= k)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _hr_from_ranks(ranks: np.ndarray, k: int) -> float:
    return _mean(_hit(ranks, k).astype(np.float64))


def _mrr_from_ranks(ranks: np.ndarray, k: int) -> float:
    hit = _hit(ranks, k)
    return _mean(np.where(hit, 1.0 / np.maximum(ranks, 1), 0.0))


def _ndcg_from_ranks(ranks: np.ndarray, k: int) -> float:
    hit = _hit(ranks, k)
    return _mean(np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0))


def hit_rate_at_k(
    recommended: Ranked, targets: Targets, k: int = 20, *, percent: bool = False
) -> float:
    """HR@k = P@k (SR-GNN) = Recall@k: share of targets in the top k."""
    return _scale(_hr_from_ranks(target_ranks(recommended, targets), k), percent)


def mrr_at_k(recommended: Ranked, targets: Targets, k: int = 20, *, percent: bool = False) -> float:
    """MRR@k: mean reciprocal rank, 0 for targets outside the top k."""
    return _scale(_mrr_from_ranks(target_ranks(recommended, targets), k), percent)


def ndcg_at_k(
    recommended: Ranked, targets: Targets, k: int = 20, *, percent: bool = False
) -> float:
    """NDCG@k with one relevant item: mean of 1/log2(rank + 1), 0 outside the top k."""
    return _scale(_ndcg_from_ranks(target_ranks(recommended, targets), k), percent)


def coverage_at_k(
    recommended: Sequence[Sequence[Hashable]], catalogue_size: int, k: int = 20
) -> float:
    """Distinct items appearing in any top-k list, over the catalogue size."""
    if catalogue_size < 1:
        raise ValueError(f"catalogue_size must be >= 1; got {catalogue_size}")
    seen: set[Hashable] = set()
    for rec in recommended:
        seen.update(list(rec[:k]))
    return len(seen) / catalogue_size


def rank_of_target(scores: np.ndarray, target: int) -> int:
    """1-based rank of ``scores[target]`` among all scores. Ties count against the target (it
    ranks after every item scoring the same), so a constant scorer cannot look good."""
    scores = np.asarray(scores)
    return int(np.count_nonzero(scores >= scores[target]))


def ranks_of_targets(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Row-wise :func:`rank_of_target`: ``scores`` (B, N), ``targets`` (B,) column indices."""
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    target_scores = scores[np.arange(scores.shape[0]), targets]  # (B,)
    return np.count_nonzero(scores >= target_scores[:, None], axis=1).astype(np.int64)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; equal scores in index order."""
    scores = np.asarray(scores)
    n = scores.shape[0]
    if k >= n:
        candidates = np.arange(n)
    else:
        # Everything tied with the k-th best is a candidate, so ties break by index, not by chance.
        kth = np.partition(scores, n - k)[n - k]
        candidates = np.flatnonzero(scores >= kth)
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order[:k]]


def length_bucket(prefix_length: int) -> str:
    """The prefix-length bucket: "1", "2", "3-5" or "6+"."""
    if prefix_length < 1:
        raise ValueError(f"a prefix has at least one item; got length {prefix_length}")
    if prefix_length <= 2:
        return str(prefix_length)
    return "3-5" if prefix_length <= 5 else "6+"


def hit_rate_by_length(
    recommended: Ranked,
    targets: Targets,
    prefix_lengths: Sequence[int],
    k: int = 20,
    *,
    percent: bool = False,
) -> dict[str, dict[str, float]]:
    """HR@k per prefix-length bucket: {bucket: {"hr@k": value, "prefixes": count}}."""
    ranks = target_ranks(recommended, targets)
    buckets = np.array([length_bucket(n) for n in prefix_lengths])
    out: dict[str, dict[str, float]] = {}
    for b in LENGTH_BUCKETS:
        mask = buckets == b
        out[b] = {
            f"hr@{k}": _scale(_hr_from_ranks(ranks[mask], k), percent),
            "prefixes": int(mask.sum()),
        }
    return out


def by_target_note(summary: dict[str, Any], k: int = 20) -> str:
    """``summary``'s split by target for a progress line ("" without one): "; targets in their
    prefix (20.5%) 90.10 / 57.00, the others 40.20 / 12.30"."""
    split = summary.get("by_target")
    if not split:
        return ""
    inside, new = split["in_prefix"], split["new"]
    share = inside["prefixes"] / max(inside["prefixes"] + new["prefixes"], 1)
    return (f"; targets in their prefix ({share:.1%}) {inside[f'hr@{k}']:.2f} / "
            f"{inside[f'mrr@{k}']:.2f}, the others {new[f'hr@{k}']:.2f} / {new[f'mrr@{k}']:.2f}")


SHORTER_CUTS = (10,)  # HR@10 and MRR@10 are reported beside HR@k / MRR@k


class RankingAccumulator:
    """Add (recommended list, target) pairs one at a time; :meth:`summary` gives every metric.

    ``catalogue_size`` is the number of recommendable items; without it coverage is None.
    """

    def __init__(self, k: int = 20, catalogue_size: int | None = None):
        if k < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        self.k = k
        self.catalogue_size = catalogue_size
        self._ranks: list[int] = []
        self._buckets: list[str] = []  # "" when the prefix length is unknown
        self._repeats: list[int] = []  # 1: the target is in its prefix, 0: new to it, -1: unknown
        self._recommended: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self._ranks)

    def add(
        self,
        recommended_ids: Sequence[Hashable],
        target: Hashable,
        prefix_length: int | None = None,
        *,
        repeat: bool | None = None,
    ) -> int:
        """Record one prediction; returns the target's rank in the top k (0 = miss). ``repeat``:
        whether the target is one of the prefix's own items (split out in the summary)."""
        top = list(recommended_ids[: self.k])
        rank = _rank(top, target)
        self._ranks.append(rank)
        self._buckets.append("" if prefix_length is None else length_bucket(prefix_length))
        self._repeats.append(-1 if repeat is None else int(repeat))
        self._recommended.update(top)
        return rank

    def summary(self, *, percent: bool = False) -> dict[str, Any]:
        k = self.k
        ranks = np.asarray(self._ranks, dtype=np.int64)
        buckets = np.asarray(self._buckets, dtype=object)
        coverage = None if not self.catalogue_size else len(self._recommended) / self.catalogue_size
        return {
            f"hr@{k}": _scale(_hr_from_ranks(ranks, k), percent),
            f"mrr@{k}": _scale(_mrr_from_ranks(ranks, k), percent),
            f"ndcg@{k}": _scale(_ndcg_from_ranks(ranks, k), percent),
            f"coverage@{k}": None if coverage is None else _scale(coverage, percent),
            **{  # shorter cut-offs beside k (a rank within k says where it falls)
                f"{name}@{cut}": _scale(fn(ranks, cut), percent)
                for cut in SHORTER_CUTS if cut < k
                for name, fn in (("hr", _hr_from_ranks), ("mrr", _mrr_from_ranks))
            },
            "prefixes": int(ranks.size),
            f"hr@{k}_by_length": {
                b: _scale(_hr_from_ranks(ranks[buckets == b], k), percent) for b in LENGTH_BUCKETS
            },
            "prefixes_by_length": {b: int((buckets == b).sum()) for b in LENGTH_BUCKETS},
            **self._by_target(ranks, percent),
        }

    def _by_target(self, ranks: np.ndarray, percent: bool) -> dict[str, Any]:
        """``by_target``: HR@k / MRR@k of the targets already in their prefix and of the others
        (logs where shoppers go back to items differ most there); absent unless every
        prediction said which it was."""
        repeats = np.asarray(self._repeats, dtype=np.int64)
        if not repeats.size or (repeats < 0).any():
            return {}
        k = self.k
        return {"by_target": {
            name: {
                f"hr@{k}": _scale(_hr_from_ranks(ranks[mask], k), percent),
                f"mrr@{k}": _scale(_mrr_from_ranks(ranks[mask], k), percent),
                "prefixes": int(mask.sum()),
            }
            for name, mask in (("in_prefix", repeats == 1), ("new", repeats == 0))
        }}
