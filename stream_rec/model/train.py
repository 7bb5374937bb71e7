"""Train a :class:`SessionTransformer` on sessions with (full or sampled) softmax cross-entropy.

Training examples are every prefix of every session (:mod:`.examples`); the last
``valid_fraction`` of sessions (in the given, chronological order) is held out and picks the
epoch (:mod:`.validation`: HR@20 + MRR@20, early stopping).
"""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..core.features import ItemVocab
from ..errors import ConfigError, DataError
from .checkpoint import FitState, load_checkpoint, save_fit
from .examples import (
    Example,
    Rows,
    Session,
    featurize_sessions,
    length_batches,
    pad_examples,
    pad_teacher,
    training_examples,
)
from .global_items import item_rows, set_neighbours
from .recipes import ORDERS, REFIT_TAIL_MAX
from .refit import refit
from .sasrec import SASRecConfig, SessionTransformer
from .steps import batch_loss
from .validation import (
    evaluate,
    popularity_metrics,
    selection_score,
    valid_cases,
    validation_queries,
)

__all__ = [
    "Session",
    "TrainConfig",
    "TrainMetrics",
    "build_vocab",
    "item_popularity",
    "train_model",
    "evaluate",
]

_PROGRESS_EVERY_S = 60.0  # a progress line within long epochs


@dataclass(frozen=True)
class TrainConfig:
    """Defaults measured on 60k generated events (2.9k items): batch 64 beat 128 by ~4 points
    HR@20 (more steps on small data) and decaying at epoch 5 beat epoch 3 by ~3 points."""

    epochs: int = 8
    batch_size: int = 64  # sessions (windows of at most max_len events) per step
    lr: float = 1e-3
    weight_decay: float = 1e-5  # Adam's L2 penalty
    lr_decay_every: int = 5  # epochs between learning-rate decays; 0 = constant
    lr_decay_gamma: float = 0.1
    seed: int = 0
    threads: int | None = None  # torch intra-op threads while training; None/0 = torch's default
    valid_fraction: float = 0.1  # last share of sessions held out for validation
    max_seconds: float | None = None  # stop (after the current step) once this much time is spent
    select_best: bool = True  # keep the epoch with the best selection score, not the last one
    # Stop after this many epochs without a better selection score (and at least this many at the
    # current learning rate, so a decay gets its chance); 0 = never.
    patience: int = 2
    # After selection, one chronological pass over the held-out sessions at the final learning
    # rate: they are the most recent data, and the test slice follows them in time.
    refit: bool = True
    refit_soup: int = 1  # refits averaged (model/refit.py), when the validation halves agree
    # Candidate refit rates beside the last decayed one and ``lr`` (model/refit.py chooses).
    refit_rates: tuple[float, ...] = ()
    refit_tail: float = 0.0  # newest training sessions the refit learns first, x its own sessions
    # Distillation (model/distill.py): weight of V-SKNN's next-item distribution in the target;
    # 0 = off. Its teacher keeps the best ``distill_candidates`` items per position.
    distill: float = 0.0
    distill_candidates: int = 50
    # A finished run's selected model as a second teacher (model/distill.py), ``teacher_mix`` of
    # the soft target (the rest V-SKNN's; 1 = the model alone). Needs ``distill`` > 0.
    teacher_run: str | None = None
    teacher_mix: float = 0.5
    negatives: int = 0  # sampled softmax with this many shared uniform negatives; 0 = full softmax
    # "shuffled" batches, or "chronological": each epoch runs through time (examples.length_batches)
    order: str = "shuffled"
    # A checkpoint after every epoch (model/checkpoint.py); a run with one there resumes from it.
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(f"valid_fraction must be in [0, 1); got {self.valid_fraction}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be >= 1; got {self.epochs}, {self.batch_size}")
        if self.teacher_run and self.distill <= 0:
            raise ConfigError("a teacher run needs a distillation weight > 0 (--distill)")
        if self.order not in ORDERS:
            raise ConfigError(f"order must be one of {', '.join(ORDERS)}; got {self.order!r}")
        if not 0.0 <= self.refit_tail <= REFIT_TAIL_MAX:
            raise ConfigError(f"refit_tail must be in [0, {REFIT_TAIL_MAX:g}]; got {self.refit_tail}")
        if any(not 0.0 < r <= 1.0 for r in self.refit_rates):
            raise ConfigError(f"refit rates must be in (0, 1]; got {list(self.refit_rates)}")
        if not 0.0 <= self.teacher_mix <= 1.0:
            raise ConfigError(f"teacher_mix must be in [0, 1]; got {self.teacher_mix}")


@dataclass
class TrainMetrics:
    """Validation HR@20 / MRR@20 of the returned model and of the popularity baseline."""

    valid_hr20: float = math.nan
    valid_mrr20: float = math.nan
    pop_hr20: float = math.nan
    pop_mrr20: float = math.nan
    best_epoch: int = 0
    epochs_run: int = 0
    seconds: float = 0.0
    train_sessions: int = 0
    valid_sessions: int = 0
    valid_cases: int = 0  # held-out (prefix, next item) pairs
    train_positions: int = 0
    refit_seconds: float = 0.0
    refit: dict[str, object] = field(default_factory=dict)  # model/refit.py's report
    fit_seconds: float = 0.0  # wall / CPU seconds of the completed epochs, resumed runs' included
    fit_cpu_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    # The selected model's (N, D) vectors of the validation prefixes, when a refit followed.
    selected_queries: np.ndarray | None = field(default=None, repr=False)
    selected_items: np.ndarray | None = field(default=None, repr=False)  # and its item vectors

    def summary(self) -> dict[str, float | int]:
        """The numbers a bundle manifest records (without the per-epoch history)."""
        return {
            "valid_hr@20": self.valid_hr20,
            "valid_mrr@20": self.valid_mrr20,
            "pop_hr@20": self.pop_hr20,
            "pop_mrr@20": self.pop_mrr20,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "valid_cases": self.valid_cases,
            "train_positions": self.train_positions,
        }


def build_vocab(items: Mapping[str, int] | Iterable[Iterable[str]], min_count: int = 1) -> ItemVocab:
    """An :class:`ItemVocab` of the items seen at least ``min_count`` times, most frequent first.

    ``items`` is either item id -> count or sessions of item ids; ties keep first appearance.
    """
    if isinstance(items, Mapping):
        counts = Counter(dict(items))
    else:
        counts = Counter()
        for session in items:
            counts.update(session)
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])  # stable: ties in first-seen order
    return ItemVocab([item for item, c in ranked if c >= min_count])


def item_popularity(sessions: Sequence[Session], vocab: ItemVocab) -> np.ndarray:
    """(n_items + 1,) float32 event counts per row (row 0, unknown/no item, stays 0)."""
    counts = np.zeros(len(vocab) + 1, np.float64)
    if sessions:
        rows = vocab.rows_for_hashes(np.concatenate([np.asarray(s[0], np.int64) for s in sessions]))
        counts += np.bincount(rows, minlength=len(vocab) + 1)
    counts[0] = 0
    return counts.astype(np.float32)


def train_model(
    sessions: Sequence[Session],
    vocab: ItemVocab,
    model_config: SASRecConfig,
    train_config: TrainConfig = TrainConfig(),
    progress: Callable[[str], None] | None = None,
) -> tuple[SessionTransformer, TrainMetrics]:
    """Train on all but the last ``valid_fraction`` of ``sessions`` (kept in the given order).

    Deterministic for a given seed and thread count. Returns the model in eval mode.
    """
    t0 = time.perf_counter()
    cfg, tc = model_config, train_config
    if cfg.n_items != len(vocab):
        raise ConfigError(f"model n_items ({cfg.n_items}) must equal the vocabulary size ({len(vocab)})")
    n_valid = int(len(sessions) * tc.valid_fraction)
    featurized = featurize_sessions(sessions, vocab, cfg.query_buckets) if sessions else []
    train_f, valid_f = featurized[: len(featurized) - n_valid], featurized[len(featurized) - n_valid :]
    teachers = None
    if tc.distill > 0:
        if cfg.repeat:
            raise ConfigError("distillation and the repeat head do not combine yet; choose one")
        from .distill import distillation_targets

        teachers = distillation_targets(train_f, cfg.n_items, cfg.max_len, tc.distill_candidates,
                                        tc.teacher_run, tc.teacher_mix, progress, tc.checkpoint_dir)
    examples = training_examples(train_f, cfg.max_len, teachers)
    if not examples:
        raise DataError(f"no training positions: {len(train_f)} sessions have no event followed by a known item")
    prefixes, valid_targets = valid_cases(valid_f, cfg.max_len)
    popularity = item_popularity(sessions[: len(train_f)], vocab)
    metrics = TrainMetrics(
        train_sessions=len(train_f),
        valid_sessions=n_valid,
        valid_cases=len(valid_targets),
        train_positions=int(sum(int((e.targets >= 0).sum()) for e in examples)),
    )
    metrics.pop_hr20, metrics.pop_mrr20 = popularity_metrics(popularity, valid_targets)

    threads_before = torch.get_num_threads()
    if tc.threads:
        torch.set_num_threads(tc.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tc.seed)
            model = _fit(model_config, tc, examples, prefixes, valid_targets, metrics, progress, t0,
                         graph=item_rows(train_f))
            if tc.refit and n_valid:
                # The refit trains on the validation slice: what is tuned on it after training
                # (the item blend's weight) must see the selected model as it was before.
                metrics.selected_queries = validation_queries(model, prefixes)
                with torch.no_grad():
                    metrics.selected_items = model.item_vectors().numpy().astype(np.float32)
                decays = (metrics.best_epoch - 1) // tc.lr_decay_every if tc.lr_decay_every > 0 else 0
                decayed = tc.lr * tc.lr_decay_gamma ** max(decays, 1 if tc.lr_decay_every > 0 else 0)
                rates = (decayed, *sorted(tc.refit_rates), tc.lr)  # a tie keeps the earlier
                report = refit(model, train_f, valid_f, rates, tc.batch_size, tc.negatives,
                               tc.weight_decay, progress, soup=tc.refit_soup, seed=tc.seed,
                               tail=tc.refit_tail, processes=max(1, tc.threads or 1))
                metrics.refit_seconds, metrics.refit = report.seconds, asdict(report)
    finally:
        torch.set_num_threads(threads_before)
    metrics.seconds = time.perf_counter() - t0
    return model.eval(), metrics


def _fit(
    cfg: SASRecConfig,
    tc: TrainConfig,
    examples: list[Example],
    prefixes: list[Rows],
    valid_targets: np.ndarray,
    metrics: TrainMetrics,
    progress: Callable[[str], None] | None,
    t0: float,
    graph: Sequence[np.ndarray] = (),
) -> SessionTransformer:
    rng = np.random.default_rng(tc.seed)
    model = SessionTransformer(cfg)
    if cfg.global_neighbours:  # the encoder's global item graph, from the training sessions only
        linked = set_neighbours(model, graph)
        if progress is not None:
            progress(f"global item graph: {linked:,} of {cfg.n_items:,} items have neighbours "
                     f"(up to {cfg.global_neighbours} each)")
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimizer, tc.lr_decay_every, tc.lr_decay_gamma)
        if tc.lr_decay_every > 0
        else None
    )
    state = _start_state(tc, model, optimizer, scheduler, rng, metrics, progress)
    for epoch in range(state.epoch + 1, tc.epochs + 1) if not state.finished else ():
        t_epoch, c_epoch = time.perf_counter(), time.process_time()
        loss, out_of_time = _train_epoch(model, optimizer, tc, examples, rng, epoch, progress, t0)
        if scheduler is not None:
            scheduler.step()
        hr, mrr = evaluate(model, prefixes, valid_targets)
        record = {"epoch": epoch, "loss": loss, "hr@20": hr, "mrr@20": mrr,
                  "seconds": time.perf_counter() - t_epoch}
        state.history.append(record)
        metrics.epochs_run = epoch
        if progress is not None:
            progress(
                f"epoch {epoch}/{tc.epochs} loss {record['loss']:.4f} valid hr@20 {hr:.4f} mrr@20 {mrr:.4f} "
                f"(popularity {metrics.pop_hr20:.4f} / {metrics.pop_mrr20:.4f}) {record['seconds']:.1f}s"
                + (" [time budget reached]" if out_of_time else "")
            )
        score = selection_score(hr, mrr)
        if score > state.best_score:
            state.best_score, state.best_epoch, state.stale = score, epoch, 0
            state.best_metrics = (hr, mrr)
            state.best_state = copy.deepcopy(model.state_dict()) if tc.select_best else None
        else:
            state.stale += 1
        if out_of_time:
            break  # a partial epoch is never checkpointed: a resume repeats it
        early = stops_early(tc, epoch, state.stale)
        if not early and _out_of_patience(tc, epoch, state.stale) and progress is not None:
            progress(f"no better validation HR@20 + MRR@20 for {state.stale} epochs; going on: "
                     "a lower learning rate gets its epochs first")
        if early and progress is not None:
            progress(f"early stop: no better validation HR@20 + MRR@20 for {state.stale} epochs "
                     f"(best: epoch {state.best_epoch})")
        state.epoch, state.finished = epoch, bool(early) or epoch == tc.epochs
        state.seconds += time.perf_counter() - t_epoch
        state.cpu_seconds += time.process_time() - c_epoch
        if tc.checkpoint_dir is not None:
            save_fit(tc.checkpoint_dir, state, model, optimizer, scheduler, rng)
        if early:
            break
    metrics.history, metrics.best_epoch = state.history, state.best_epoch
    metrics.valid_hr20, metrics.valid_mrr20 = state.best_metrics
    metrics.epochs_run = max(metrics.epochs_run, state.epoch)
    metrics.fit_seconds, metrics.fit_cpu_seconds = state.seconds, state.cpu_seconds
    if tc.select_best and state.best_state is not None:
        model.load_state_dict(state.best_state)
    else:  # report the returned (last) model
        metrics.best_epoch = metrics.epochs_run
        metrics.valid_hr20, metrics.valid_mrr20 = state.history[-1]["hr@20"], state.history[-1]["mrr@20"]
    return model


def _out_of_patience(tc: TrainConfig, epoch: int, stale: int) -> bool:
    """``patience`` epochs without a better score, before the last epoch."""
    return bool(tc.patience) and stale >= tc.patience and epoch < tc.epochs


def stops_early(tc: TrainConfig, epoch: int, stale: int) -> bool:
    """Whether training stops after ``epoch``, ``stale`` epochs after its best: ``patience`` of
    them, but a decayed rate gets ``patience`` epochs of its own, and never on the epoch before a
    decay (Diginetica with mixed scoring stopped at 5 of 5 at 1e-3; the decayed rate: +0.25)."""
    if not _out_of_patience(tc, epoch, stale):
        return False
    if tc.lr_decay_every <= 0:
        return True
    at_this_rate = (epoch - 1) % tc.lr_decay_every + 1
    return tc.patience <= at_this_rate < tc.lr_decay_every


def _train_epoch(
    model: SessionTransformer,
    optimizer: torch.optim.Optimizer,
    tc: TrainConfig,
    examples: list[Example],
    rng: np.random.Generator,
    epoch: int,
    progress: Callable[[str], None] | None,
    t0: float,
) -> tuple[float, bool]:
    """One pass over ``examples``; returns (mean loss per position, whether the time cap hit)."""
    model.train()
    t_epoch = t_note = time.perf_counter()
    loss_sum, n_pos = 0.0, 0
    batches = length_batches(examples, tc.batch_size, rng, chronological=tc.order == "chronological")
    for step, batch in enumerate(batches, 1):
        items, types, queries, targets = pad_examples(batch)
        loss = batch_loss(model, items, types, queries, targets, tc.negatives, pad_teacher(batch),
                           tc.distill)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = int((targets >= 0).sum())
        loss_sum, n_pos = loss_sum + loss.item() * n, n_pos + n
        now = time.perf_counter()
        if progress is not None and now - t_note > _PROGRESS_EVERY_S:
            t_note = now
            eta = (now - t_epoch) / step * (len(batches) - step)
            progress(f"epoch {epoch}/{tc.epochs}: step {step:,}/{len(batches):,}, loss {loss_sum / max(n_pos, 1):.4f}, "
                     f"~{eta / 60:.1f} min left in this epoch")
        if tc.max_seconds is not None and now - t0 > tc.max_seconds:
            return loss_sum / max(n_pos, 1), True
    return loss_sum / max(n_pos, 1), False


def _start_state(
    tc: TrainConfig,
    model: SessionTransformer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.StepLR | None,
    rng: np.random.Generator,
    metrics: TrainMetrics,
    progress: Callable[[str], None] | None,
) -> FitState:
    """A fresh loop state, or the checkpointed one with model, optimiser and generators restored."""
    n_items = model.config.n_items
    saved = load_checkpoint(tc.checkpoint_dir, n_items) if tc.checkpoint_dir is not None else None
    if saved is None:
        return FitState(epoch=0, model={}, optimizer={}, scheduler=None, numpy_rng={},
                        torch_rng=torch.empty(0), best_state=None, best_score=-math.inf, best_epoch=0,
                        best_metrics=(math.nan, math.nan), stale=0, finished=False, n_items=n_items)
    model.load_state_dict(saved.model)
    optimizer.load_state_dict(saved.optimizer)
    if scheduler is not None and saved.scheduler is not None:
        scheduler.load_state_dict(saved.scheduler)
    rng.bit_generator.state = saved.numpy_rng
    torch.set_rng_state(saved.torch_rng)
    metrics.epochs_run = saved.epoch
    if progress is not None:
        progress(f"resumed from {tc.checkpoint_dir}: {saved.epoch} epochs done "
                 f"(best: epoch {saved.best_epoch}, {saved.seconds / 60:.1f} min so far)"
                 + ("; training had ended, refit and bundle follow" if saved.finished else ""))
    return saved
