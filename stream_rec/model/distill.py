"""Distillation: session-kNN (V-SKNN) as a teacher for the Transformer's next-item softmax.

Why: on Diginetica and Nowplaying V-SKNN beats the Transformer trained on next items alone,
and blending the two at serving time costs a per-event V-SKNN (~0.25 ms, three times the
Transformer's CPU). Training against V-SKNN's distribution as a soft target as well puts its
knowledge (which sessions look alike, recency) into the model, which then serves alone.

The teacher of a training session sees only the sessions before it (``before=``): the same
past that V-SKNN would see live, so the teacher never knows the session's own future.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..core.cooccurrence import SessionNeighbours
from .examples import Example, Rows, pad_examples

__all__ = [
    "teacher_targets", "load_teacher", "model_teacher_targets", "mixed_teachers",
    "distillation_targets",
]

_PROGRESS_EVERY_S = 60.0


def teacher_targets(
    featurized: Sequence[Rows],
    n_items: int,
    candidates: int = 50,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per session, (cols (n, C) int32, probs (n, C) float16): V-SKNN's best next-item columns
    after each position, over the sessions before it (-1 / 0 where it knows none)."""
    neighbours = SessionNeighbours.build([items for items, _, _ in featurized], n_items)
    out = []
    t0 = t_note = time.perf_counter()
    for s, (items, _, _) in enumerate(featurized):
        n = len(items)
        cols = np.full((n, candidates), -1, np.int32)
        probs = np.zeros((n, candidates), np.float16)
        for t in range(n - 1):
            rows, scores = neighbours.scores(items[: t + 1], candidates, before=s)
            cols[t, : len(rows)], probs[t, : len(rows)] = rows - 1, scores
        out.append((cols, probs))
        now = time.perf_counter()
        if progress is not None and now - t_note > _PROGRESS_EVERY_S:
            t_note = now
            eta = (now - t0) / (s + 1) * (len(featurized) - s - 1)
            progress(f"teacher: {s + 1:,}/{len(featurized):,} sessions, ~{eta / 60:.1f} min left")
    return out


# ------------------------------------------------------------------------------------------
# A trained model as the teacher ("born-again" self-distillation): a finished run's selected
# model (before its refit, so it never saw the validation slice) gives, after each position of
# each training session, its own softmax's best columns. Its errors are softer than a one-hot
# target and its knowledge (the whole catalogue, every session's neighbours at once) differs
# from V-SKNN's; :func:`mixed_teachers` merges the two into one distribution.

_TEACHER_ROWS = 2048  # positions scored against the catalogue at once (~350 MB at 43k items)


TEACHER_FILE = "teacher.pt"  # in the student's run directory: the teacher it started with


def load_teacher(run_dir: str, n_items: int, keep_in: str | None = None) -> Any:
    """The selected model (before its refit) of a finished ``stream-rec train`` run directory.

    With ``keep_in`` (the student's run directory) the teacher is kept there as it was loaded,
    and a resumed student reads that copy: its targets do not change if the teacher's run goes
    on training (or is moved) in between."""
    from pathlib import Path

    from ..errors import ConfigError
    from .checkpoint import load_weights, save_weights, selected_model

    kept = Path(keep_in) / TEACHER_FILE if keep_in else None
    if kept is not None and kept.is_file():
        return load_weights(kept)
    model = selected_model(run_dir, n_items)
    if model is None:
        raise ConfigError(
            f"--teacher-run {run_dir}: no checkpoint with a selected model there; "
            "expected the --checkpoint-dir of a finished `stream-rec train` run"
        )
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        tmp = kept.with_name(f".{TEACHER_FILE}.tmp")
        save_weights(model, tmp)
        tmp.replace(kept)
    return model


def model_teacher_targets(
    model: Any,
    featurized: Sequence[Rows],
    max_len: int,
    candidates: int = 50,
    progress: Callable[[str], None] | None = None,
    batch: int = 128,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per session, (cols (n, C) int32, probs (n, C) float16): ``model``'s best next-item
    columns after each position and their probabilities (its full softmax, renormalised over the
    C kept). Each position is encoded in the window training gives it (the last ``max_len``
    events from the session's end, then the ones before), so the teacher reads what the student
    reads."""
    import torch

    windows = [
        (s, max(0, end - max_len), end)
        for s, (items, _, _) in enumerate(featurized)
        for end in range(len(items), 0, -max_len)
    ]
    windows.sort(key=lambda w: w[2] - w[1])
    out = [
        (
            np.full((len(items), candidates), -1, np.int32),
            np.zeros((len(items), candidates), np.float16),
        )
        for items, _, _ in featurized
    ]
    t0 = t_note = time.perf_counter()
    with torch.no_grad():
        table = model.item_vectors()[1:]  # (V, D)
        scale = model.config.scale if model.config.normalize else 1.0
        for b0 in range(0, len(windows), batch):
            part = windows[b0 : b0 + batch]
            windows_of = [(featurized[s], slice(start, end)) for s, start, end in part]
            items, types, queries, _ = pad_examples([
                Example(it[w], ty[w], qu[w], np.full(w.stop - w.start, -1))
                for (it, ty, qu), w in windows_of
            ])
            _, session = model.session_states(items, types, queries)
            real = types != 0  # (B, L): the windows' positions, left-padded as in training
            vectors = session[real]  # (N, D), window by window, in position order
            cols = np.full((len(vectors), candidates), -1, np.int32)
            probs = np.zeros((len(vectors), candidates), np.float32)
            k = min(candidates, len(table))
            for r0 in range(0, len(vectors), _TEACHER_ROWS):
                logits = vectors[r0 : r0 + _TEACHER_ROWS] @ table.T * scale  # (n, V)
                lse = torch.logsumexp(logits, dim=1, keepdim=True)
                top, idx = torch.topk(logits, k, dim=1)
                p = torch.exp(top - lse)
                cols[r0 : r0 + len(p), :k] = idx.numpy()
                probs[r0 : r0 + len(p), :k] = (p / p.sum(dim=1, keepdim=True)).numpy()
            at = 0
            for s, start, end in part:
                n = end - start
                out[s][0][start:end], out[s][1][start:end] = cols[at : at + n], probs[at : at + n]
                at += n
            now = time.perf_counter()
            if progress is not None and now - t_note > _PROGRESS_EVERY_S:
                t_note = now
                done = b0 + len(part)
                eta = (now - t0) / done * (len(windows) - done)
                progress(
                    f"model teacher: {done:,}/{len(windows):,} windows, ~{eta / 60:.1f} min left"
                )
    return out


def mixed_teachers(
    first: Sequence[tuple[np.ndarray, np.ndarray]],
    second: Sequence[tuple[np.ndarray, np.ndarray]],
    share: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per session, ``(1 - share)`` of ``first``'s distribution plus ``share`` of ``second``'s
    over the union of their columns (a column both name is one entry), renormalised to sum 1
    where either has one (a position only one teacher knows gets that teacher's)."""
    from ..core.item_neighbours import merged_entries

    out = []
    for (c1, p1), (c2, p2) in zip(first, second):
        cols = np.concatenate((c1, c2), axis=1).astype(np.int64) + 1  # 0 = none
        probs = np.concatenate(
            ((1.0 - share) * p1.astype(np.float32), share * p2.astype(np.float32)), axis=1
        )
        probs = np.where(cols > 0, probs, 0.0).astype(np.float32)
        rows, summed = merged_entries(cols, probs)
        total = summed.sum(axis=1, keepdims=True)
        summed = np.where(rows > 0, summed / np.where(total > 0, total, 1.0), 0.0)
        out.append(((rows - 1).astype(np.int32), summed.astype(np.float16)))
    return out


def distillation_targets(
    train_f: Sequence[Rows],
    n_items: int,
    max_len: int,
    candidates: int = 50,
    teacher_run: str | None = None,
    teacher_mix: float = 0.5,
    progress: Callable[[str], None] | None = None,
    keep_in: str | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The training sessions' soft targets: V-SKNN's, the model of ``teacher_run``, or the two
    mixed (``teacher_mix`` the model's share); ``keep_in``: see :func:`load_teacher`."""
    say = progress or (lambda _: None)
    t0 = time.perf_counter()
    knn = None
    if not teacher_run or teacher_mix < 1.0:
        knn = teacher_targets(train_f, n_items, candidates, progress)
        say(f"teacher (V-SKNN over each session's past) for {len(train_f):,} sessions "
            f"in {time.perf_counter() - t0:.0f}s")
    if not teacher_run:
        assert knn is not None
        return knn
    t1 = time.perf_counter()
    teacher = load_teacher(teacher_run, n_items, keep_in)
    own = model_teacher_targets(teacher, train_f, max_len, candidates, progress)
    say(f"teacher (the model of {teacher_run}) for {len(train_f):,} sessions "
        f"in {time.perf_counter() - t1:.0f}s; its share of the soft target {teacher_mix}")
    return own if knn is None else mixed_teachers(knn, own, teacher_mix)
