"""A trained model as a second teacher (model/distill.py): its targets are its own softmax after
each position, read in the window training gives that position; mixed with V-SKNN's over the
union of their columns; `--teacher-run` loads a finished run's selected model."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stream_rec.errors import ConfigError  # noqa: E402
from stream_rec.model import SessionTransformer, build_vocab, distill  # noqa: E402
from stream_rec.model.checkpoint import FitState, save_checkpoint  # noqa: E402
from stream_rec.model.examples import featurize_sessions  # noqa: E402
from stream_rec.model.recipes import TrainOptions, model_config_for, save_options  # noqa: E402

from .tiny_model import TINY, spread, successor_corpus, tiny_config, train_tiny  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus():
    sessions, ids = successor_corpus(200, 40, mixed=True)
    return sessions, build_vocab(ids)


def _direct(model, items, types, queries, c):
    """The teacher's columns and probabilities for one window, from the model's logits."""
    with torch.no_grad():
        _, session = model.session_states(
            *(torch.from_numpy(a[None]) for a in (items, types, queries))
        )
        logits = model.logits(session[0])  # (n, V)
        p = torch.softmax(logits, dim=1)
        top, idx = torch.topk(p, c, dim=1)
    return idx.numpy(), (top / top.sum(dim=1, keepdim=True)).numpy()


def test_targets_are_the_models_softmax_in_each_training_window(corpus):
    sessions, vocab = corpus
    model = spread(SessionTransformer(tiny_config(len(vocab), max_len=4)))
    featurized = featurize_sessions(sessions, vocab, TINY["query_buckets"])
    out = distill.model_teacher_targets(model, featurized, max_len=4, candidates=5, batch=7)
    assert len(out) == len(featurized)
    for (items, types, queries), (cols, probs) in zip(featurized[:40], out[:40]):
        assert cols.shape == probs.shape == (len(items), 5)
        for end in range(len(items), 0, -4):  # the windows training cuts, from the end
            start = max(0, end - 4)
            want_cols, want_probs = _direct(
                model, items[start:end], types[start:end], queries[start:end], 5
            )
            np.testing.assert_array_equal(cols[start:end], want_cols)
            np.testing.assert_allclose(probs[start:end].astype(np.float32), want_probs, atol=2e-3)
        np.testing.assert_allclose(probs.astype(np.float32).sum(axis=1), 1.0, atol=5e-3)


def test_mixed_teachers_sum_shared_columns_and_fall_back_to_the_one_that_knows():
    knn = [
        (
            np.array([[0, 1, -1], [-1, -1, -1]], np.int32),
            np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]], np.float16),
        )
    ]
    own = [(np.array([[1, 2], [3, 4]], np.int32), np.array([[0.6, 0.4], [0.75, 0.25]], np.float16))]
    [(cols, probs)] = distill.mixed_teachers(knn, own, 0.5)
    got = [{int(c): float(p) for c, p in zip(r, q) if c >= 0} for r, q in zip(cols, probs)]
    assert got[0] == pytest.approx({0: 0.25, 1: 0.55, 2: 0.2}, abs=1e-3)
    assert got[1] == pytest.approx({3: 0.75, 4: 0.25}, abs=1e-3)  # V-SKNN knew none: the model's
    assert cols.shape == (2, 5) and cols.dtype == np.int32 and probs.dtype == np.float16


def test_training_with_a_model_teacher_mixes_it_with_v_sknn(corpus, monkeypatch):
    sessions, vocab = corpus
    teacher, _ = train_tiny(sessions, vocab, epochs=2)
    monkeypatch.setattr(distill, "load_teacher", lambda run, n, keep_in=None: teacher)
    lines: list[str] = []
    run = dict(epochs=2, distill=0.5, negatives=20, teacher_run="RUN")
    model, metrics = train_tiny(sessions, vocab, progress=lines.append, **run, teacher_mix=0.5)
    assert any(line.startswith("teacher (V-SKNN") for line in lines)
    assert any(
        "teacher (the model of RUN)" in line and "share of the soft target 0.5" in line
        for line in lines
    )
    assert metrics.valid_hr20 > 0.5  # the successor pattern is learned with it
    alone: list[str] = []
    train_tiny(sessions, vocab, progress=alone.append, **run, teacher_mix=1.0)
    assert not any(line.startswith("teacher (V-SKNN") for line in alone)  # not computed


def test_a_teacher_run_needs_distillation_and_a_selected_model(corpus, tmp_path):
    sessions, vocab = corpus
    with pytest.raises(ConfigError, match="distillation weight > 0"):
        train_tiny(sessions, vocab, teacher_run=str(tmp_path))
    with pytest.raises(ConfigError, match="no checkpoint with a selected model"):
        distill.load_teacher(str(tmp_path), len(vocab))


def _finished_run(directory, n_items):
    """A run directory holding options and a checkpoint whose selected model is returned."""
    opts = TrainOptions(dataset="generated", checkpoint_dir=str(directory))
    save_options(directory, opts)
    selected = spread(SessionTransformer(model_config_for(opts, n_items)))
    state = FitState(epoch=2, model={}, optimizer={}, scheduler=None, numpy_rng={},
                     torch_rng=torch.get_rng_state(), best_state=selected.state_dict(),
                     best_score=0.0, best_epoch=1, best_metrics=(0.0, 0.0), stale=1,
                     finished=True, n_items=n_items)
    save_checkpoint(directory, state)
    return selected


def _assert_same(model, want):
    for name, value in want.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, atol=0, rtol=0, msg=name)


def test_load_teacher_gives_the_runs_selected_model(tmp_path):
    selected = _finished_run(tmp_path, 30)
    loaded = distill.load_teacher(str(tmp_path), 30)
    assert not loaded.training
    _assert_same(loaded, selected)


def test_a_resumed_student_reads_the_teacher_it_started_with(tmp_path):
    run, student = tmp_path / "teacher", tmp_path / "student"
    first = _finished_run(run, 30)
    _assert_same(distill.load_teacher(str(run), 30, keep_in=str(student)), first)
    assert (student / distill.TEACHER_FILE).is_file()
    second = _finished_run(run, 30)  # the teacher's run went on: another selected model
    _assert_same(distill.load_teacher(str(run), 30, keep_in=str(student)), first)
    _assert_same(distill.load_teacher(str(run), 30), second)
