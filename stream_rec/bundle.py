"""Model bundles: everything a worker needs to serve one trained model, in one directory.

Layout of ``<bundles_dir>/<version>/``::

    manifest.json      format, version, created (UTC), model shape, training and metrics
    encoder.onnx       session encoder: items, types, queries -> session (B, dim)
    item_vectors.npy   (n_items + 1, dim) float32 item vectors searched by inner product; row 0 zeros
    item_ids.txt       item id of row r on line r (1-based)
    popularity.npy     (n_items + 1,) float32 training counts (cold start)
    hnsw.bin           HNSW graph over item_vectors rows 1..n

A bundle is written into a hidden temporary directory and renamed into place, so
a worker polling ``bundles_dir`` never sees a half-written one. Loading needs
numpy, onnxruntime and hnswlib only (never torch).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BundleError, ConfigError, DataError
from .features import ItemVocab

if TYPE_CHECKING:
    from .cooccurrence import SessionNeighbours
    from .encoder import OnnxEncoder
    from .index import CandidateIndex
    from .model.sasrec import SessionTransformer
    from .model.train import TrainMetrics

__all__ = ["FORMAT", "HnswParams", "ModelBundle", "write_bundle", "with_cooccurrence", "resolve_bundle"]

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
_REQUIRED_KEYS = ("format", "version", "created", "dim", "max_len", "query_buckets", "n_items", "normalized")
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class HnswParams:
    M: int = 16
    ef_construction: int = 200
    ef: int = 128  # default search breadth stored in the manifest
    seed: int = 0


# ------------------------------------------------------------------------------------ write
def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _version_name(data: str, now: datetime) -> str:
    tag = re.sub(r"[^A-Za-z0-9._-]+", "-", data).strip("-.")[:48] or "model"
    return f"{tag}-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, so the manifest is strict JSON."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bundle(
    bundles_dir: str | os.PathLike[str],
    model: SessionTransformer,
    vocab: ItemVocab,
    popularity: np.ndarray,
    training_info: Mapping[str, Any],
    metrics: TrainMetrics | Mapping[str, Any],
    hnsw: HnswParams = HnswParams(),
    version: str | None = None,
    cooccurrence: tuple[SessionNeighbours, float] | None = None,
) -> Path:
    """Export ``model``, build its HNSW index and write a complete bundle; returns its path.

    ``training_info`` holds at least ``data`` (a tag naming the training data; it
    starts the version name), plus sessions, events, epochs, seconds, seed.
    The ONNX graph is checked against PyTorch before the bundle appears.
    """
    from .index import HnswIndex
    from .model.export import INPUT_NAMES, OPSET, OUTPUT_NAME, check_onnx_parity, export_onnx

    cfg = model.config
    n = len(vocab)
    if cfg.n_items != n:
        raise BundleError(f"model has {cfg.n_items} items but the vocabulary has {n}")
    popularity = np.asarray(popularity, np.float32)
    if popularity.shape != (n + 1,):
        raise BundleError(f"popularity must have shape ({n + 1},) (row 0 = no item); got {popularity.shape}")
    bad = next((i for i in vocab.item_ids if "\n" in i or "\r" in i), None)
    if bad is not None:
        raise BundleError(f"item id {bad!r} contains a line break; item_ids.txt holds one id per line")

    now = _utc_now()
    version = version or _version_name(str(training_info.get("data", "model")), now)
    with _atomic_bundle_dir(Path(bundles_dir), version) as tmp:
        export_onnx(model, tmp / ENCODER)
        parity = check_onnx_parity(model, tmp / ENCODER)
        vectors = model.item_vectors().detach().cpu().numpy().astype(np.float32)  # (n + 1, D)
        np.save(tmp / ITEM_VECTORS, vectors)
        (tmp / ITEM_IDS).write_text("".join(f"{i}\n" for i in vocab.item_ids), encoding="utf-8")
        np.save(tmp / POPULARITY, popularity)
        HnswIndex.build(
            vectors, M=hnsw.M, ef_construction=hnsw.ef_construction, ef=hnsw.ef, seed=hnsw.seed
        ).save(tmp / HNSW)
        summary = metrics if isinstance(metrics, Mapping) else metrics.summary()
        extra: dict[str, Any] = {}
        if cooccurrence is not None:
            extra["cooccurrence"] = _save_cooccurrence(tmp, *cooccurrence)
        manifest = {
            "format": FORMAT,
            "version": version,
            "created": now.isoformat(timespec="milliseconds"),
            "dim": cfg.dim,
            "max_len": cfg.max_len,
            "query_buckets": cfg.query_buckets,
            "n_items": n,
            "normalized": cfg.normalize,
            "scale": cfg.scale,
            "architecture": {
                "name": "sasrec",
                "n_layers": cfg.n_layers,
                "n_heads": cfg.n_heads,
                "ffn_dim": cfg.ffn_dim,
                "dropout": cfg.dropout,
                "emb_dropout": cfg.emb_dropout,
            },
            "encoder": {
                "file": ENCODER,
                "inputs": list(INPUT_NAMES),
                "output": OUTPUT_NAME,
                "opset": OPSET,
                "parity_max_abs_diff": parity,
            },
            "training": dict(training_info),
            "metrics": dict(summary),
            "hnsw": asdict(hnsw),
            **extra,
        }
        (tmp / MANIFEST).write_text(json.dumps(_json_safe(manifest), indent=2, allow_nan=False) + "\n")
    return Path(bundles_dir) / version


@contextlib.contextmanager
def _atomic_bundle_dir(root: Path, version: str) -> Iterator[Path]:
    """A temporary directory to fill; on success its files are fsynced and it is renamed to
    ``root/version`` (atomic on one filesystem: a bundle appears complete or not at all)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / version
    if final.exists():
        raise BundleError(f"bundle {final} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{version}-", dir=root))
    try:
        yield tmp
        for file in tmp.iterdir():
            _fsync(file)
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save_cooccurrence(directory: Path, neighbours: SessionNeighbours, weight: float) -> dict[str, Any]:
    if not 0.0 <= weight <= 1.0:
        raise BundleError(f"co-occurrence weight must be in [0, 1]; got {weight}")
    neighbours.save(directory / COOCCURRENCE)
    return {"file": COOCCURRENCE, "weight": weight, "sessions": len(neighbours.s_indptr) - 1,
            "k_sessions": neighbours.k_sessions, "sample_size": neighbours.sample_size}


def with_cooccurrence(
    bundle: ModelBundle, bundles_dir: str | os.PathLike[str], neighbours: SessionNeighbours, weight: float,
    note: str = "",
) -> Path:
    """A new bundle version: ``bundle``'s model plus a co-occurrence blend (same atomic write).

    The model files are copied unchanged; the manifest records where the new version came from.
    """
    now = _utc_now()
    data = str(bundle.manifest.get("training", {}).get("data", "model"))
    version = _version_name(f"{data}-cooc", now)
    with _atomic_bundle_dir(Path(bundles_dir), version) as tmp:
        for name in _FILES:
            shutil.copyfile(bundle.path / name, tmp / name)
        manifest = dict(bundle.manifest, version=version, created=now.isoformat(timespec="milliseconds"),
                        derived_from=bundle.version, cooccurrence={**_save_cooccurrence(tmp, neighbours, weight),
                                                                   "note": note})
        (tmp / MANIFEST).write_text(json.dumps(_json_safe(manifest), indent=2, allow_nan=False) + "\n")
    return Path(bundles_dir) / version


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
        from .encoder import OnnxEncoder

        enc = OnnxEncoder(
            self.path / ENCODER,
            providers=providers,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
        )
        if enc.dim != self.dim:
            raise BundleError(f"{self.path / ENCODER} outputs dim {enc.dim}; the manifest says {self.dim}")
        return enc

    @property
    def cooccurrence_weight(self) -> float:
        """The blend weight tuned at training (0 when the bundle has no co-occurrence data)."""
        return float(self.manifest.get("cooccurrence", {}).get("weight", 0.0))

    def neighbours(self) -> SessionNeighbours | None:
        """The training sessions for the co-occurrence blend, or None when the bundle has none."""
        from .cooccurrence import SessionNeighbours

        info = self.manifest.get("cooccurrence")
        if not info:
            return None
        try:
            return SessionNeighbours.load(self.path / COOCCURRENCE, k_sessions=int(info.get("k_sessions", 100)),
                                          sample_size=int(info.get("sample_size", 1000)))
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"cannot read {self.path / COOCCURRENCE}: {exc}") from exc

    def index(self, kind: str = "hnsw", ef: int | None = None, threads: int = 1) -> CandidateIndex:
        """The candidate index over this bundle's item vectors (HNSW, or exact as the reference)."""
        from .index import ExactIndex, HnswIndex

        if kind == "exact":
            return ExactIndex(self.item_vectors)
        if kind != "hnsw":
            raise ConfigError(f"index kind must be 'hnsw' or 'exact'; got {kind!r}")
        ef = ef or int(self.manifest.get("hnsw", {}).get("ef", HnswParams.ef))
        try:
            return HnswIndex.load(self.path / HNSW, self.item_vectors, ef=ef, threads=threads)
        except DataError as exc:
            raise BundleError(f"model bundle {str(self.path)!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"ModelBundle({str(self.path)!r}, version={self.version!r}, n_items={len(self.vocab)})"


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
    if not root.is_dir():
        raise BundleError(f"bundles directory {str(root)!r} does not exist; train a model with `stream-rec train`")
    best: tuple[datetime, str] | None = None
    for d in root.iterdir():
        if d.name.startswith(".") or not d.is_dir():
            continue
        created = _created(d / MANIFEST)
        if created is not None and (best is None or (created, d.name) > best):
            best = (created, d.name)
    if best is None:
        raise BundleError(
            f"no model bundle in {str(root)!r}: expected sub-directories holding {MANIFEST}; "
            "train a model with `stream-rec train`"
        )
    return root / best[1]
