"""Model bundles: write, load without torch, serve (encoder + index), resolve, and fail clearly."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stream_rec.core.features import featurize  # noqa: E402
from stream_rec.core.seams import CandidateIndex  # noqa: E402
from stream_rec.errors import BundleError, ConfigError  # noqa: E402
from stream_rec.model import (  # noqa: E402
    TorchEncoder,
    build_vocab,
    item_popularity,
)
from stream_rec.model.bundle_writer import write_bundle  # noqa: E402
from stream_rec.runtime.index import ExactIndex, HnswIndex  # noqa: E402
from stream_rec.serving.bundle import HnswParams, ModelBundle, resolve_bundle  # noqa: E402
from stream_rec.serving.holder import ModelHolder  # noqa: E402
from stream_rec.settings import Settings  # noqa: E402

from .tiny_model import successor_corpus, train_tiny  # noqa: E402

FILES = ("manifest.json", "encoder.onnx", "item_vectors.npy", "item_ids.txt", "popularity.npy", "hnsw.bin",
         "weights.pt", "encoder_step.onnx")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained():
    sessions, ids = successor_corpus(900, n_items=800, seed=1)
    vocab = build_vocab(ids)
    model, metrics = train_tiny(sessions, vocab, batch_size=16, lr_decay_every=0)
    return sessions, vocab, model, metrics


@pytest.fixture(scope="module")
def bundles(trained, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="module")
def bundle_path(trained, bundles) -> Path:
    sessions, vocab, model, metrics = trained
    info = {"data": "successor:items=800", "sessions": len(sessions), "events": 1, "epochs": 4, "seconds": 1.0, "seed": 0}
    return write_bundle(bundles, model, vocab, item_popularity(sessions, vocab), info, metrics, HnswParams(ef=64))


def test_bundle_directory_holds_every_file_and_no_temporary_leftovers(bundle_path, bundles):
    assert sorted(p.name for p in bundle_path.iterdir()) == sorted(FILES)
    assert [p.name for p in bundles.iterdir()] == [bundle_path.name]
    assert bundle_path.name.startswith("successor-items-800-")


def test_manifest_describes_model_training_and_metrics(bundle_path, trained):
    _, vocab, model, metrics = trained
    m = json.loads((bundle_path / "manifest.json").read_text())
    assert m["format"] == 1 and m["version"] == bundle_path.name
    assert m["created"].endswith("+00:00")
    assert (m["dim"], m["max_len"], m["query_buckets"], m["n_items"]) == (32, 12, 64, len(vocab))
    assert m["normalized"] is True and m["scale"] == 16.0
    assert m["architecture"]["n_layers"] == 1
    assert m["training"]["data"] == "successor:items=800"
    assert m["metrics"]["valid_hr@20"] == pytest.approx(metrics.valid_hr20)
    assert m["metrics"]["pop_hr@20"] == pytest.approx(metrics.pop_hr20)
    assert m["hnsw"] == {"M": 16, "ef_construction": 200, "ef": 64, "seed": 0}
    assert m["encoder"]["parity_max_abs_diff"] <= 1e-4


def test_loaded_bundle_matches_the_model(bundle_path, trained):
    _, vocab, model, _ = trained
    b = ModelBundle.load(bundle_path)
    assert b.version == bundle_path.name and (b.max_len, b.query_buckets) == (12, 64)
    assert b.vocab.item_ids == vocab.item_ids
    assert b.item_vectors.dtype == np.float32 and b.item_vectors.shape == (len(vocab) + 1, 32)
    np.testing.assert_array_equal(b.item_vectors, model.item_vectors().detach().numpy())
    assert not b.item_vectors[0].any()
    np.testing.assert_allclose(np.linalg.norm(b.item_vectors[1:], axis=1), 1.0, atol=1e-5)
    assert b.popularity.shape == (len(vocab) + 1,) and b.popularity[0] == 0 and b.popularity.sum() > 0


def test_encoder_and_index_round_trip(bundle_path, trained):
    sessions, vocab, model, _ = trained
    b = ModelBundle.load(bundle_path)
    inputs = featurize(sessions[-64:], b.vocab, b.query_buckets, b.max_len)
    encoder = b.encoder(providers="cpu")
    vectors = encoder.encode(inputs)
    assert np.abs(vectors - TorchEncoder(model).encode(inputs)).max() <= 1e-4
    hnsw, exact = b.index(), b.index(kind="exact", ef=10)
    assert isinstance(hnsw, HnswIndex) and isinstance(exact, ExactIndex) and isinstance(hnsw, CandidateIndex)
    assert hnsw.ef == 64 and b.index(ef=200).ef == 200
    rows, scores = hnsw.search(vectors, 20)
    assert rows.shape == (64, 20) and (rows >= 1).all() and (np.diff(scores, axis=1) <= 1e-6).all()
    # The model has learned "i -> i+1": the item after the session's last one is recommended.
    last = np.array([r[r > 0][-1] for r in inputs.items])
    follows = np.array([vocab.row(f"i{(int(vocab.item_id(r)[1:]) + 1) % 800}") for r in last])
    assert np.mean((rows == follows[:, None]).any(axis=1)) > 0.8


def test_hnsw_recall_against_exact_on_trained_vectors(bundle_path, trained):
    sessions = trained[0]
    b = ModelBundle.load(bundle_path)
    queries = b.encoder(providers="cpu").encode(featurize(sessions[:300], b.vocab, b.query_buckets, b.max_len))
    queries = np.concatenate([queries, b.item_vectors[1:201]])
    approx, _ = b.index(kind="hnsw").search(queries, 20)
    truth, _ = b.index(kind="exact").search(queries, 20)
    recall = np.mean([len(set(a) & set(t)) / 20 for a, t in zip(approx, truth)])
    assert recall >= 0.95, recall


def test_loading_never_imports_torch(bundle_path):
    code = (
        "import sys; from stream_rec.serving.bundle import ModelBundle, resolve_bundle; "
        "from stream_rec.core.features import featurize; import numpy as np; "
        f"b = ModelBundle.load(resolve_bundle({str(bundle_path.parent)!r})); "
        "x = featurize([(np.zeros(1, np.int64), np.ones(1, np.uint8), np.zeros((1, 3), np.uint32))], b.vocab, b.query_buckets, b.max_len); "
        "b.index().search(b.encoder(providers='cpu').encode(x), 5); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _copy(src: Path, root: Path, version: str, created: str, hashes: bool = False) -> Path:
    """A copy of a bundle; without ``hashes`` its manifest drops the file hashes (as bundles
    written before them), so the shape and content checks behind them are what a test meets."""
    dst = root / version
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m.update(version=version, created=created)
    if not hashes:
        m.pop("files", None)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_resolve_bundle_by_path_version_and_newest(bundle_path, tmp_path):
    root = tmp_path / "bundles"
    old = _copy(bundle_path, root, "v-old", "2020-01-01T00:00:00.000+00:00")
    new = _copy(bundle_path, root, "a-new", "2030-01-01T00:00:00.000+00:00")
    _copy(bundle_path, root, ".tmp-being-written", "2040-01-01T00:00:00.000+00:00")
    (root / "not-a-bundle").mkdir()
    assert resolve_bundle(root) == new
    assert resolve_bundle(root, version="v-old") == old
    assert resolve_bundle(root, path=old, version="a-new") == old  # an explicit path wins
    assert ModelBundle.load(resolve_bundle(root)).version == "a-new"
    with pytest.raises(BundleError, match="'nope'.*available: a-new, v-old"):
        resolve_bundle(root, version="nope")
    with pytest.raises(BundleError, match="manifest.json is missing"):
        resolve_bundle(root, path=root / "not-a-bundle")


def test_resolve_bundle_errors_when_there_is_none(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        resolve_bundle(tmp_path / "absent")
    with pytest.raises(BundleError, match="no model bundle in"):
        resolve_bundle(tmp_path)


OPTIONAL = ("weights.pt", "encoder_step.onnx")


@pytest.mark.parametrize("missing", [f for f in FILES if f not in OPTIONAL])
def test_missing_file_is_a_bundle_error_naming_it(bundle_path, tmp_path, missing):
    broken = _copy(bundle_path, tmp_path, "broken", "2020-01-01T00:00:00+00:00")
    (broken / missing).unlink()
    with pytest.raises(BundleError, match=missing.replace(".", r"\.")):
        ModelBundle.load(broken)


def test_a_bundle_without_the_incremental_graphs_encodes_in_full(bundle_path, tmp_path):
    from stream_rec.runtime.encoder import OnnxEncoder
    from stream_rec.serving.compose import serving_encoder

    assert ModelBundle.load(bundle_path).incremental
    older = _copy(bundle_path, tmp_path, "older", "2020-01-01T00:00:00+00:00")
    (older / "encoder_step.onnx").unlink()
    bundle = ModelBundle.load(older)
    assert not bundle.incremental
    assert isinstance(serving_encoder(bundle, Settings(providers="cpu")), OnnxEncoder)
    with pytest.raises(BundleError, match="has no incremental encoder"):
        bundle.incremental_encoder(1 << 20)


def test_inconsistent_files_are_bundle_errors(bundle_path, tmp_path):
    b = _copy(bundle_path, tmp_path, "b", "2020-01-01T00:00:00+00:00")
    (b / "item_ids.txt").write_text("only-one\n")
    with pytest.raises(BundleError, match="item_ids.txt has 1 item ids"):
        ModelBundle.load(b)
    c = _copy(bundle_path, tmp_path, "c", "2020-01-01T00:00:00+00:00")
    np.save(c / "item_vectors.npy", np.zeros((3, 32), np.float32))
    with pytest.raises(BundleError, match="item_vectors.npy must be"):
        ModelBundle.load(c)
    d = _copy(bundle_path, tmp_path, "d", "2020-01-01T00:00:00+00:00")
    (d / "manifest.json").write_text(json.dumps({**json.loads((d / "manifest.json").read_text()), "format": 2}))
    with pytest.raises(BundleError, match="format 2"):
        ModelBundle.load(d)
    with pytest.raises(ConfigError, match="index kind"):
        ModelBundle.load(bundle_path).index(kind="faiss")  # type: ignore[arg-type]


def test_failed_write_leaves_nothing_behind(trained, tmp_path):
    sessions, vocab, model, metrics = trained
    with pytest.raises(BundleError, match="popularity must have shape"):
        write_bundle(tmp_path, model, vocab, np.zeros(3, np.float32), {"data": "x"}, metrics)
    assert list(tmp_path.iterdir()) == []


# ---- checked before serving (issue 11): the encoder against the manifest's max_len and dim, the
# HNSW graph against the item vectors; an unpinned worker serves the newest *valid* bundle
def _set(bundle, **manifest):
    m = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**m, **manifest}))


@pytest.mark.parametrize("max_len, match", [(5000, "max_len must be 1..1024"),
                                            (50, "embeds 12 positions; .*max_len=50")])
def test_a_max_len_the_model_cannot_take_is_a_bundle_error(bundle_path, tmp_path, max_len, match):
    b = _copy(bundle_path, tmp_path, "b", "2020-01-01T00:00:00+00:00")
    _set(b, max_len=max_len)
    with pytest.raises(BundleError, match=match):
        ModelBundle.load(b).encoder(providers="cpu")
    ModelBundle.load(bundle_path).encoder(providers="cpu")  # its own max_len passes


def test_an_hnsw_graph_of_other_vectors_is_a_bundle_error(bundle_path, tmp_path):
    b = _copy(bundle_path, tmp_path, "b", "2020-01-01T00:00:00+00:00")
    vectors = np.load(b / "item_vectors.npy")
    HnswIndex.build(vectors[::-1].copy()).save(b / "hnsw.bin")  # same size and dim, other rows
    with pytest.raises(BundleError, match="does not hold this bundle's item vectors"):
        ModelBundle.load(b).index("hnsw")
    ModelBundle.load(bundle_path).index("hnsw")


def test_an_unpinned_worker_serves_the_newest_valid_bundle(bundle_path, tmp_path, caplog):
    root = tmp_path / "bundles"
    _copy(bundle_path, root, "v1", "2020-01-01T00:00:00+00:00")
    corrupt = _copy(bundle_path, root, "v2", "2021-01-01T00:00:00+00:00")
    (corrupt / "encoder.onnx").write_bytes(b"not a model")
    settings = Settings.from_env({}, bundles_dir=str(root), providers="cpu", model_poll_s=0)
    with caplog.at_level(logging.ERROR, "stream_rec.worker"):
        holder = ModelHolder(settings)
    assert holder.recommender.model_version == "v1" and holder.path.name == "v1"
    assert ["skipping model bundle" in r.message and "v2" in r.message
            for r in caplog.records] == [True]
    caplog.clear()
    too_long = _copy(bundle_path, root, "v3", "2022-01-01T00:00:00+00:00")
    _set(too_long, max_len=5000)
    assert asyncio.run(holder.maybe_swap()) is False  # v3 and v2 are invalid: v1 stays
    assert asyncio.run(holder.maybe_swap()) is False
    assert sum("v3" in r.message for r in caplog.records) == 1  # skipped once, not every poll
    _copy(bundle_path, root, "v4", "2023-01-01T00:00:00+00:00")
    assert asyncio.run(holder.maybe_swap()) is True and holder.recommender.model_version == "v4"


def test_file_hashes_are_recorded_at_write_time_and_checked_at_load(bundle_path, tmp_path):
    files = json.loads((bundle_path / "manifest.json").read_text())["files"]
    on_disk = sorted(f.name for f in bundle_path.iterdir() if f.name != "manifest.json")
    assert sorted(files) == on_disk
    assert all(len(d["sha256"]) == 64 and d["bytes"] > 0 for d in files.values())
    b = _copy(bundle_path, tmp_path, "b", "2020-01-01T00:00:00+00:00", hashes=True)
    ModelBundle.load(b)
    vectors = np.load(b / "item_vectors.npy")
    vectors[1, 0] += 1.0  # same shape and dtype: only the hash can tell
    np.save(b / "item_vectors.npy", vectors)
    with pytest.raises(BundleError, match="item_vectors.npy does not match the bundle's manifest.*corrupt"):
        ModelBundle.load(b)


def test_no_valid_bundle_names_the_skipped_ones(bundle_path, tmp_path):
    root = tmp_path / "bundles"
    bad = _copy(bundle_path, root, "v1", "2020-01-01T00:00:00+00:00")
    (bad / "hnsw.bin").write_bytes(b"\0" * 10)
    with pytest.raises(BundleError, match="no valid model bundle.*skipped v1"):
        ModelHolder(Settings.from_env({}, bundles_dir=str(root), providers="cpu"))
