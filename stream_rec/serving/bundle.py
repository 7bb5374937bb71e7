"""Model bundles: everything a worker needs to serve one trained model, in one directory.

Layout of ``<bundles_dir>/<version>/``::

    manifest.json      format, version, created (UTC), model shape, training and metrics
    encoder.onnx       session encoder: items, types, queries -> session (B, dim)
    item_vectors.npy   (n_items + 1, dim) float32 item vectors searched by inner product; row 0 zeros
    item_ids.txt       item id of row r on line r (1-based)
    popularity.npy     (n_items + 1,) float32 training counts (cold start)
    hnsw.bin           HNSW graph over item_vectors rows 1..n
    weights.pt         (optional) the PyTorch weights, for fine-tuning by `stream-rec learn`
    encoder_step.onnx  (optional) the incremental encoder: a new event encodes one position

This module reads and validates bundles; :mod:`stream_rec.model.bundle_writer` writes
them (into a hidden temporary directory renamed into place, so a worker polling
``bundles_dir`` never sees a half-written one). Loading needs numpy, onnxruntime and
hnswlib only (never torch).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.features import ItemVocab
from ..errors import BundleError, ConfigError, DataError

if TYPE_CHECKING:
    from ..core.cooccurrence import SessionNeighbours
    from ..core.item_neighbours import ItemNeighbours
    from ..core.seams import CandidateIndex
    from ..runtime.encoder import OnnxEncoder
    from ..runtime.incremental import IncrementalEncoder

__all__ = ["FORMAT", "HnswParams", "ModelBundle", "resolve_bundle", "bundles_newest_first"]

FORMAT = 1
MANIFEST, ENCODER, ITEM_VECTORS, ITEM_IDS, POPULARITY, HNSW = (
    "manifest.json",
    "encoder.onnx",
    "item_vectors.npy",
    "item_ids.txt",
    "popularity.npy",
    "hnsw.bin",
)
_FILES = (ENCODER, ITEM_VECTORS, ITEM_IDS, POPULARITY, HNSW)
COOCCURRENCE = "cooccurrence.npz"  # optional: training sessions for the co-occurrence blend
ITEM_NEIGHBOURS = "item_neighbours.npz"  # optional: each item's neighbours for the item blend
# optional: the PyTorch weights and config, what `stream-rec learn` fine-tunes (serving never reads it)
WEIGHTS = "weights.pt"
# optional: the incremental encoder's graph (model/incremental.py states its contract)
INCREMENTAL_STEP = "encoder_step.onnx"
OPTIONAL_MODEL_FILES = (WEIGHTS, INCREMENTAL_STEP)  # carried by derived versions
_REQUIRED_KEYS = ("format", "version", "created", "dim", "max_len", "query_buckets", "n_items", "normalized")
_TMP_PREFIX = ".tmp-"
_MAX_LEN_LIMIT = 1024  # events a session encoder may take; the model's own length is checked too


@dataclass(frozen=True)
class HnswParams:
    M: int = 16
    ef_construction: int = 200
    ef: int = 128  # default search breadth stored in the manifest
    seed: int = 0


# ------------------------------------------------------------------------------------- load
def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"model bundle directory {str(path)!r} does not exist")
    if not file.is_file():
        raise BundleError(f"{str(path)!r} is not a model bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {file}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{file} must hold a JSON object; got {type(manifest).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{file} lacks {', '.join(missing)}")
    if manifest["format"] != FORMAT:
        raise BundleError(f"{file} has bundle format {manifest['format']!r}; this build reads format {FORMAT}")
    return manifest


def file_digest(file: Path) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex}`` of one bundle file (recorded in the manifest)."""
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": file.stat().st_size, "sha256": digest.hexdigest()}


def _check_files(path: Path, manifest: dict[str, Any]) -> None:
    """Each file the manifest lists has its recorded size and SHA-256 (bundles written before
    file hashes were recorded have no ``files`` and are checked by shape only)."""
    files = manifest.get("files")
    if files is None:
        return
    if not isinstance(files, dict):
        raise BundleError(f"{path / MANIFEST}: 'files' must map file names to sizes and hashes")
    for name, want in sorted(files.items()):
        file = path / name
        if not file.is_file():
            raise BundleError(f"model bundle {str(path)!r} is incomplete: missing {name}")
        got = file_digest(file)
        if got["bytes"] != want.get("bytes") or got["sha256"] != want.get("sha256"):
            raise BundleError(
                f"{file} does not match the bundle's manifest ({got['bytes']:,} bytes, sha256 "
                f"{got['sha256'][:12]}...; recorded {want.get('bytes')} bytes, "
                f"{str(want.get('sha256'))[:12]}...): the bundle is corrupt")


class ModelBundle:
    """A loaded bundle: manifest, vocabulary, item vectors and popularity; encoder and index on demand."""

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        vocab: ItemVocab,
        item_vectors: np.ndarray,
        popularity: np.ndarray,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.vocab = vocab
        self.item_vectors = item_vectors
        self.popularity = popularity

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelBundle:
        path = Path(path)
        manifest = _read_manifest(path)
        missing = [f for f in _FILES if not (path / f).is_file()]
        if missing:
            raise BundleError(f"model bundle {str(path)!r} is incomplete: missing {', '.join(missing)}")
        _check_files(path, manifest)
        n, dim = int(manifest["n_items"]), int(manifest["dim"])
        ids = (path / ITEM_IDS).read_text(encoding="utf-8").split("\n")
        if ids and ids[-1] == "":
            ids.pop()
        if len(ids) != n:
            raise BundleError(f"{path / ITEM_IDS} has {len(ids)} item ids; the manifest says n_items={n}")
        try:
            vectors = np.load(path / ITEM_VECTORS, allow_pickle=False)
            popularity = np.load(path / POPULARITY, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read arrays of model bundle {str(path)!r}: {exc}") from exc
        if vectors.shape != (n + 1, dim) or vectors.dtype != np.float32:
            raise BundleError(
                f"{path / ITEM_VECTORS} must be ({n + 1}, {dim}) float32; got {vectors.shape} {vectors.dtype}"
            )
        if popularity.shape != (n + 1,):
            raise BundleError(f"{path / POPULARITY} must have shape ({n + 1},); got {popularity.shape}")
        try:
            vocab = ItemVocab(ids)
        except ValueError as exc:
            raise BundleError(f"{path / ITEM_IDS}: {exc}") from exc
        return cls(path, manifest, vocab, vectors, popularity.astype(np.float32, copy=False))

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def max_len(self) -> int:
        return int(self.manifest["max_len"])

    @property
    def query_buckets(self) -> int:
        return int(self.manifest["query_buckets"])

    def encoder(
        self, providers: str = "auto", intra_op_threads: int = 0, inter_op_threads: int = 0
    ) -> OnnxEncoder:
        """The bundle's ONNX encoder; ``providers`` is "auto", "cpu" or "cuda" (see OnnxEncoder)."""
        from ..runtime.encoder import OnnxEncoder

        enc = OnnxEncoder(
            self.path / ENCODER,
            providers=providers,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
        )
        if enc.dim != self.dim:
            raise BundleError(f"{self.path / ENCODER} outputs dim {enc.dim}; the manifest says {self.dim}")
        self._check_encoder(enc)
        return enc

    @property
    def incremental(self) -> bool:
        """Whether the bundle carries the incremental encoder's graph."""
        return "incremental" in self.manifest and (self.path / INCREMENTAL_STEP).is_file()

    def incremental_encoder(
        self, cache_bytes: int, providers: str = "auto", intra_op_threads: int = 0, inter_op_threads: int = 0,
        max_batch: int = 64,
    ) -> IncrementalEncoder:
        """The incremental encoder (per-user caches bounded by ``cache_bytes``); BundleError when
        the bundle has none. Un-keyed calls run its step graph from the first event: the
        bundle's ``encoder.onnx`` is loaded only to check the manifest against the model, then
        dropped (its weights and arena would cost a worker ~40 MB for nothing)."""
        from ..runtime.incremental import IncrementalEncoder

        if not self.incremental:
            raise BundleError(f"model bundle {str(self.path)!r} has no incremental encoder "
                              f"({INCREMENTAL_STEP})")
        self.encoder(providers, intra_op_threads, inter_op_threads)  # the manifest's checks
        enc = IncrementalEncoder(self.path / INCREMENTAL_STEP, max_len=self.max_len,
                                 cache_bytes=cache_bytes, providers=providers, intra_op_threads=intra_op_threads,
                                 inter_op_threads=inter_op_threads, max_batch=max_batch)
        if enc.dim != self.dim:
            raise BundleError(f"{self.path / INCREMENTAL_STEP} outputs dim {enc.dim}; the manifest says {self.dim}")
        return enc

    def _check_encoder(self, enc: OnnxEncoder) -> None:
        """The encoder takes the manifest's ``max_len`` and answers (1, dim) (and (1, max_len)
        repeat bonuses): one session of full length, encoded once. A manifest whose max_len
        the model cannot take (a larger position table than it has, a fixed length) fails here
        with a BundleError, not at the first full batch (max_len 5000 on a 50-position model:
        12.4 GB RSS in 40 s before this check)."""
        from ..core.features import MAX_QUERY_TOKENS, TYPE_CODES, ModelInputs

        length = self.max_len
        if not 1 <= length <= _MAX_LEN_LIMIT:
            raise BundleError(f"{self.path / MANIFEST}: max_len must be 1..{_MAX_LEN_LIMIT}; got {length}")
        for spec in enc.input_shapes():
            if len(spec) >= 2 and isinstance(spec[1], int) and spec[1] != length:
                raise BundleError(f"{self.path / ENCODER} takes sequences of length {spec[1]}; "
                                  f"the manifest says max_len={length}")
        positions = _position_rows(self.path / ENCODER)
        if positions is not None and positions != length:
            raise BundleError(f"{self.path / ENCODER} embeds {positions} positions; "
                              f"the manifest says max_len={length}")
        probe = ModelInputs(
            items=np.ones((1, length), np.int64),
            types=np.full((1, length), TYPE_CODES["click"], np.int64),
            queries=np.zeros((1, length, MAX_QUERY_TOKENS), np.int64),
        )
        try:
            session, repeat = enc.encode_sessions(probe)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise BundleError(f"{self.path / ENCODER} cannot encode a session of the manifest's "
                              f"max_len={length}: {type(exc).__name__}: {exc}") from exc
        if session.shape != (1, self.dim) or (repeat is not None and repeat.shape != (1, length)):
            raise BundleError(
                f"{self.path / ENCODER} answers shapes {session.shape}"
                f"{'' if repeat is None else f', repeat {repeat.shape}'} for one session of "
                f"length {length}; expected (1, {self.dim})")

    @property
    def cooccurrence_weight(self) -> float:
        """The blend weight tuned at training (0 when the bundle has no co-occurrence data)."""
        return float(self.manifest.get("cooccurrence", {}).get("weight", 0.0))

    def neighbours(self) -> SessionNeighbours | None:
        """The training sessions for the co-occurrence blend, or None when the bundle has none."""
        from ..core.cooccurrence import SessionNeighbours

        info = self.manifest.get("cooccurrence")
        if not info:
            return None
        try:
            return SessionNeighbours.load(self.path / COOCCURRENCE, k_sessions=int(info.get("k_sessions", 100)),
                                          sample_size=int(info.get("sample_size", 1000)))
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"cannot read {self.path / COOCCURRENCE}: {exc}") from exc

    @property
    def item_neighbours_weight(self) -> float:
        """The item-neighbour blend weight chosen on validation (0 when the bundle has no table)."""
        return float(self.manifest.get("item_neighbours", {}).get("weight", 0.0))

    def item_neighbours(self) -> ItemNeighbours | None:
        """The item-neighbour table of the blend, or None when the bundle has none."""
        from ..core.item_neighbours import ItemNeighbours

        if not self.manifest.get("item_neighbours"):
            return None
        try:
            table = ItemNeighbours.load(self.path / ITEM_NEIGHBOURS)
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"cannot read {self.path / ITEM_NEIGHBOURS}: {exc}") from exc
        if table.n_items != len(self.vocab):
            raise BundleError(f"{self.path / ITEM_NEIGHBOURS} covers {table.n_items} items; the bundle has "
                              f"{len(self.vocab)}")
        return table

    def serving_ef(self, requested: int | None = None, blended: bool = True) -> int:
        """The HNSW ef to serve with: ``requested`` unless 0/None, else the manifest's (chosen on
        validation when the bundle was written), else HnswParams.ef. A blended bundle's ef was
        chosen through its blend; served without it (``blended`` False), the model alone's."""
        hnsw = self.manifest.get("hnsw", {})
        model_ef = None if blended else (hnsw.get("ef_selection") or {}).get("model_ef")
        return requested or int(model_ef or hnsw.get("ef", HnswParams.ef))

    def index(self, kind: str = "hnsw", ef: int | None = None, threads: int = 1) -> CandidateIndex:
        """The candidate index over this bundle's item vectors (HNSW, or exact as the reference)."""
        from ..runtime.index import ExactIndex, HnswIndex

        if kind == "exact":
            return ExactIndex(self.item_vectors)
        if kind != "hnsw":
            raise ConfigError(f"index kind must be 'hnsw' or 'exact'; got {kind!r}")
        ef = self.serving_ef(ef)
        try:
            return HnswIndex.load(self.path / HNSW, self.item_vectors, ef=ef, threads=threads)
        except DataError as exc:
            raise BundleError(f"model bundle {str(self.path)!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"ModelBundle({str(self.path)!r}, version={self.version!r}, n_items={len(self.vocab)})"


def _position_rows(encoder: Path) -> int | None:
    """Rows of the SASRec graph's position table (``pos_emb.weight``), read with the ``onnx``
    package when it is installed (the train extra); None without it or without such a table."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        graph = onnx.load(str(encoder), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - onnxruntime loaded it; onnx's view is only a check
        return None
    rows = [int(t.dims[0]) for t in graph.initializer if t.name == "pos_emb.weight" and t.dims]
    return rows[0] if rows else None


# ---------------------------------------------------------------------------------- resolve
def _created(manifest_file: Path) -> datetime | None:
    try:
        created = json.loads(manifest_file.read_text(encoding="utf-8"))["created"]
        when = datetime.fromisoformat(created)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not a readable bundle: never chosen as the newest
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def resolve_bundle(
    bundles_dir: str | os.PathLike[str],
    path: str | os.PathLike[str] | None = None,
    version: str | None = None,
) -> Path:
    """The bundle to serve: ``path`` if given, else ``<bundles_dir>/<version>``, else the newest.

    "Newest" is the largest manifest ``created`` among the sub-directories of
    ``bundles_dir`` (hidden ones, i.e. bundles being written, are skipped).
    """
    if path:
        p = Path(path)
        _read_manifest(p)
        return p
    root = Path(bundles_dir)
    if version:
        p = root / version
        if not (p / MANIFEST).is_file():
            known = sorted(d.name for d in root.iterdir() if not d.name.startswith(".") and (d / MANIFEST).is_file()) if root.is_dir() else []
            raise BundleError(
                f"no model bundle version {version!r} in {str(root)!r} (expected {p / MANIFEST}); "
                f"available: {', '.join(known) or 'none'}"
            )
        return p
    return bundles_newest_first(root)[0]


def bundles_newest_first(bundles_dir: str | os.PathLike[str]) -> list[Path]:
    """The bundles under ``bundles_dir`` by manifest ``created``, newest first (hidden ones,
    i.e. bundles being written, and unreadable manifests are skipped); BundleError if none."""
    root = Path(bundles_dir)
    if not root.is_dir():
        raise BundleError(f"bundles directory {str(root)!r} does not exist; train a model with `stream-rec train`")
    found: list[tuple[datetime, str]] = []
    for d in root.iterdir():
        if d.name.startswith(".") or not d.is_dir():
            continue
        created = _created(d / MANIFEST)
        if created is not None:
            found.append((created, d.name))
    if not found:
        raise BundleError(
            f"no model bundle in {str(root)!r}: expected sub-directories holding {MANIFEST}; "
            "train a model with `stream-rec train`"
        )
    return [root / name for _, name in sorted(found, reverse=True)]
