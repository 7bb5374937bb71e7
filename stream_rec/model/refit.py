"""The refit pass: after selection, the model learns the validation slice, the newest data.

Two measured fixes (docs/evaluation.md, "Session 9"):

- **Rows no training session touched** (items first seen in the validation slice: on Nowplaying
  1,169 of them, the targets of 4.8% of the test cases) are still at their random start, pushed
  about only as sampled negatives; one pass at a small rate barely moves them (test HR@20 on
  those targets 2.5%). They now start from the mean raw embedding of the items they co-occur
  with in the slice (the learner's rule for admitted items, :mod:`stream_rec.learn.vocab`),
  scaled to the mean norm of the trained rows: 31.5% on those targets.
- **The refit's learning rate and number of passes are chosen on the slice itself:** refit a
  copy on its older half at each candidate rate (the last decayed one and the initial one) for
  1 to 5 passes, score the newer half after each, keep the best, then refit on the whole
  slice the same way. No test data.

With the encoder's global item graph (:mod:`.global_items`) the refit's graph also learns
the slice's co-occurrences: the halves' trials from the training sessions and the older half,
the final refit from all of them.

A third (docs/evaluation.md, "Session 12"): **a soup of refits** (Wortsman et al., ICML 2022:
averaged fine-tunes of one model). ``soup`` refits of the whole slice from the same start, each
with its own seed for dropout and sampled negatives, and their weights averaged: on Diginetica's
test, four 1e-3 x 2 refits of the served run's model scored 52.73-53.02 HR@20 alone and 53.68 /
18.88 averaged. Whether to average is decided on the slice too: ``soup`` refits of the older
half at the chosen rate and passes, averaged, against the first of them on the newer half.

A fourth (docs/evaluation.md, "Session 18"): **the newest training sessions too** (``tail``).
Each refit may first go through the newest training sessions, as many as ``tail`` times the
sessions it refits on, in time order into the slice: the older half's trials after the newest
``tail`` x half of the training sessions, the final refit after ``tail`` x slice. The recipe
says how many; the rate, the passes and the soup are still chosen on the halves with them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .examples import Example, Rows, training_examples
from .global_items import item_rows, set_neighbours
from .refit_pool import pooled_refits
from .sasrec import SessionTransformer
from .steps import train_passes
from .validation import evaluate, selection_score, valid_cases

__all__ = ["RefitReport", "refit", "untouched_rows", "cooccurrence_init", "average_weights"]


@dataclass
class RefitReport:
    lr: float = 0.0
    passes: int = 1
    rows_initialised: int = 0
    half_scores: dict[str, tuple[float, float]] = field(default_factory=dict)  # lr -> (HR, MRR)
    seconds: float = 0.0
    soup: int = 1  # refits averaged into the model (1: a single refit)
    tail_sessions: int = 0  # the newest training sessions the final refit learned before the slice


def untouched_rows(featurized: Sequence[Rows], n_items: int) -> np.ndarray:
    """Item rows (1..n_items) that no session of ``featurized`` contains."""
    seen = np.zeros(n_items + 1, bool)
    for items, _, _ in featurized:
        seen[items] = True
    rows = np.flatnonzero(~seen)
    return rows[rows > 0]


def cooccurrence_init(model: SessionTransformer, rows: np.ndarray, sessions: Sequence[Rows]) -> int:
    """Set each of ``rows`` that co-occurs with a trained item in ``sessions`` to the mean raw
    embedding of those items, at the trained rows' mean norm; returns how many were set."""
    if len(rows) == 0:
        return 0
    with torch.no_grad():
        weight = model.item_emb.weight
        table = weight.detach().cpu().numpy().astype(np.float64)
        new = np.zeros(len(table), bool)
        new[rows] = True
        trained = ~new
        trained[0] = False
        mean_norm = float(np.linalg.norm(table[trained], axis=1).mean()) if trained.any() else 1.0
        sums = np.zeros_like(table)
        counts = np.zeros(len(table))
        for items, _, _ in sessions:
            mine, known = items[new[items]], items[trained[items]]
            if len(mine) and len(known):
                np.add.at(sums, mine, table[known].sum(axis=0))
                np.add.at(counts, mine, len(known))
        done = counts > 0
        start = sums[done] / counts[done, None]
        norms = np.linalg.norm(start, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        table[done] = start / norms * mean_norm
        weight.copy_(torch.from_numpy(table.astype(np.float32)))
    return int(done.sum())


def refit(
    model: SessionTransformer,
    train_f: Sequence[Rows],
    valid_f: Sequence[Rows],
    lrs: Sequence[float],
    batch_size: int,
    negatives: int,
    weight_decay: float,
    progress: Callable[[str], None] | None = None,
    max_passes: int = 5,
    soup: int = 1,
    seed: int = 0,
    tail: float = 0.0,
    processes: int = 1,
) -> RefitReport:
    """Refit ``model`` in place on ``valid_f`` (see the module's doc): ``lrs`` are the candidate
    rates, 1..``max_passes`` the candidate pass counts; on a tie the earlier rate and the fewer
    passes are kept. ``soup`` > 1: average that many refits (seeds ``seed``, ``seed`` + 1, ...)
    when the halves say it pays. ``tail`` > 0: each refit first learns the newest training
    sessions, ``tail`` times as many as the sessions it refits on (the older half's trials
    alike), in time order with them. ``processes`` > 1: a soup's members run that many at a
    time, one thread each (:mod:`.refit_pool`)."""
    t0 = time.perf_counter()
    report = RefitReport(lr=lrs[0])
    say = progress or (lambda _msg: None)  # progress lines: Diginetica takes ~1.5 h on one thread
    max_len = model.config.max_len
    fresh = untouched_rows(train_f, model.config.n_items)
    candidates = list(dict.fromkeys(lrs))
    older, newer = valid_f[: len(valid_f) // 2], valid_f[len(valid_f) // 2 :]

    def window(sessions: Sequence[Rows]) -> list[Rows]:
        """The newest ``tail`` x len(sessions) training sessions, then ``sessions``."""
        n = min(len(train_f), round(tail * len(sessions)))
        return [*train_f[len(train_f) - n :], *sessions]

    prefixes, targets = valid_cases(list(newer), max_len)
    on_halves = len(targets) > 0 and len(older) > 0
    if on_halves and ((len(candidates) > 1 or max_passes > 1) or soup > 1):
        # What every refit of the older half starts from, prepared once: its new rows set from
        # their co-occurring items, its graph from the sessions it may learn.
        older_start = copy.deepcopy(model)
        cooccurrence_init(older_start, fresh, older)
        set_neighbours(older_start, item_rows(train_f, older))
        older_examples = training_examples(window(older), max_len)
    pace = _Pace(say)  # seconds per session and pass, for the estimates of what follows
    if on_halves and (len(candidates) > 1 or max_passes > 1):
        say(f"refit: {len(candidates)} rate(s) x up to {max_passes} passes over the older half "
            f"({len(older_examples):,} sessions), each pass scored on the newer half")
        t_trials = time.perf_counter()
        best = [-np.inf]
        for lr in candidates:
            trial = copy.deepcopy(older_start)

            def score(n: int, lr: float = lr, trial: SessionTransformer = trial) -> None:
                hr, mrr = evaluate(trial, prefixes, targets)
                report.half_scores[f"{lr:g} x{n}"] = (hr, mrr)
                say(f"refit trial on the older half: lr {lr:g}, pass {n}: the newer half "
                    f"{100 * hr:.2f} / {100 * mrr:.2f} ({time.perf_counter() - t0:.0f}s)")
                if selection_score(hr, mrr) > best[0]:
                    best[0], report.lr, report.passes = selection_score(hr, mrr), lr, n

            train_passes(trial, older_examples, lr, max_passes, batch_size, negatives, weight_decay,
                    score)
        trial_passes = len(candidates) * max_passes * len(older_examples)
        pace.measured(time.perf_counter() - t_trials, trial_passes)
    if on_halves and soup > 1:  # does averaging pay on the halves?
        pace.next(f"{soup} refits of the older half", soup * report.passes * len(older_examples),
                  _side_by_side(processes, soup, seed))
        start = copy.deepcopy(older_start)
        members = _refits(
            start,
            older_examples,
            report,
            soup,
            seed,
            batch_size,
            negatives,
            weight_decay,
            pace,
            "of the older half",
            processes,
        )
        one = evaluate(members[0], prefixes, targets)
        start.load_state_dict(average_weights([m.state_dict() for m in members]))
        avg = evaluate(start, prefixes, targets)
        report.half_scores[f"{report.lr:g} x{report.passes} single"] = one
        report.half_scores[f"{report.lr:g} x{report.passes} soup of {soup}"] = avg
        report.soup = soup if selection_score(*avg) > selection_score(*one) else 1
    report.rows_initialised = cooccurrence_init(model, fresh, valid_f)
    set_neighbours(model, item_rows(train_f, valid_f))
    final = window(valid_f)
    report.tail_sessions = len(final) - len(valid_f)
    final_examples = training_examples(final, max_len)
    final_seed = seed if soup > 1 else None  # one refit asked for: the generator as it stands
    pace.next(f"{report.soup} refit(s) of the whole slice",
              report.soup * report.passes * len(final_examples),
              _side_by_side(processes, report.soup, final_seed))
    members = _refits(
        model,
        final_examples,
        report,
        report.soup,
        final_seed,
        batch_size,
        negatives,
        weight_decay,
        pace,
        "of the whole slice",
        processes,
    )
    if len(members) > 1:
        model.load_state_dict(average_weights([m.state_dict() for m in members]))
    report.seconds = time.perf_counter() - t0
    if progress is not None:
        halves = ", ".join(
            f"lr {k}: {100 * h:.2f} / {100 * m:.2f}" for k, (h, m) in report.half_scores.items()
        )
        progress(
            f"refit: {report.rows_initialised:,} rows no training session touched start from "
            f"their co-occurring items; lr {report.lr:g} x {report.passes} pass(es)"
            + (f" (newer half after the older one: {halves})" if halves else "")
            + f"; chronological over {len(valid_f):,} sessions"
            + (f" after the newest {report.tail_sessions:,} training ones"
               if report.tail_sessions else "")
            + (f", {report.soup} refits averaged" if report.soup > 1 else "")
            + f" ({report.seconds:.0f}s)"
        )
    return report


def _refits(
    start: SessionTransformer,
    examples: list[Example],
    report: RefitReport,
    count: int,
    seed: int | None,
    batch_size: int,
    negatives: int,
    weight_decay: float,
    pace: _Pace,
    what: str,
    processes: int = 1,
) -> list[SessionTransformer]:
    """``count`` refits of ``start`` at the report's rate and passes (seeds ``seed``, ``seed`` + 1,
    ...; None: the generator as it stands, one refit); ``start`` itself becomes the first. A line
    after each (``pace.say``), naming it by ``what``; their pace is ``pace``'s from then on.
    ``processes`` > 1: seeded members run side by side (:mod:`.refit_pool`)."""
    members = [start] + [copy.deepcopy(start) for _ in range(count - 1)]
    t0 = time.perf_counter()
    side_by_side = _side_by_side(processes, count, seed)

    def done(k: int, member_seconds: float) -> None:
        spent = time.perf_counter() - t0
        left = ""
        if k < count:  # the members still to come, side_by_side at a time
            per = member_seconds if side_by_side > 1 else spent / k
            left = f"; ~{per * (count - k) / side_by_side / 60:.1f} min left"
        pace.say(f"refit {what} {k}/{count} (lr {report.lr:g} x {report.passes}, "
                 f"{len(examples):,} sessions) done ({spent:.0f}s{left})")

    if side_by_side > 1 and seed is not None:
        states = pooled_refits(start, examples, [seed + i for i in range(count)], report.lr,
                               report.passes, batch_size, negatives, weight_decay, side_by_side,
                               done)
        for member, state in zip(members, states):
            member.load_state_dict(state)
    else:
        for i, member in enumerate(members):
            t_member = time.perf_counter()
            if seed is not None:
                torch.manual_seed(seed + i)
            train_passes(member, examples, report.lr, report.passes, batch_size, negatives,
                         weight_decay)
            done(i + 1, time.perf_counter() - t_member)
    # the pace of one process: the estimates divide by the processes of the step they announce
    pace.measured((time.perf_counter() - t0) * side_by_side, count * report.passes * len(examples))
    return members


def _side_by_side(processes: int, count: int, seed: int | None) -> int:
    """How many of ``count`` refits run at a time: seeded ones share ``processes``."""
    return min(processes, count) if seed is not None else 1


class _Pace:
    """The refit's pace (seconds per session and pass, from its last timed step), to say
    before each of the next steps about how long it takes: on one thread Diginetica's trials
    take ~37 min and its soups ~55 min more."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.per: float | None = None

    def measured(self, seconds: float, session_passes: int) -> None:
        if session_passes > 0:
            self.per = seconds / session_passes

    def next(self, what: str, session_passes: int, side_by_side: int = 1) -> None:
        """Announce ``what`` (``side_by_side`` processes share its session passes)."""
        if self.per is not None:
            minutes = self.per * session_passes / side_by_side / 60
            self.say(f"refit: next, {what}: ~{minutes:.1f} min")


def average_weights(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point entries; other entries (counters) of the first."""
    first = states[0]
    if len(states) == 1:
        return dict(first)
    return {
        name: torch.stack([s[name] for s in states]).mean(dim=0)
        if first[name].is_floating_point()
        else first[name]
        for name in first
    }
