"""Writing model bundles (the layout :mod:`stream_rec.serving.bundle` reads and validates).

A bundle is written into a hidden temporary directory and renamed into place, so a worker
polling ``bundles_dir`` never sees a half-written one.
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.features import ItemVocab
from ..errors import BundleError
from ..serving.bundle import (
    _FILES,
    _TMP_PREFIX,
    COOCCURRENCE,
    ENCODER,
    FORMAT,
    HNSW,
    ITEM_IDS,
    ITEM_NEIGHBOURS,
    ITEM_VECTORS,
    MANIFEST,
    OPTIONAL_MODEL_FILES,
    POPULARITY,
    WEIGHTS,
    HnswParams,
    ModelBundle,
    file_digest,
)

if TYPE_CHECKING:
    from ..core.cooccurrence import SessionNeighbours
    from ..core.item_neighbours import ItemNeighbours
    from .sasrec import SessionTransformer
    from .train import TrainMetrics

__all__ = ["write_bundle", "with_cooccurrence", "with_item_neighbours", "with_incremental"]


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
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Export ``model``, build its HNSW index and write a complete bundle; returns its path.

    With ``validation`` (session vectors, target columns of the held-out cases) the manifest's
    HNSW ``ef`` is the smallest that costs at most 0.1 points HR@20 / MRR@20 against exact search
    on them (:func:`.validation.choose_ef`); otherwise ``hnsw.ef``.

    ``training_info`` holds at least ``data`` (a tag naming the training data; it
    starts the version name), plus sessions, events, epochs, seconds, seed.
    The ONNX graph is checked against PyTorch before the bundle appears.
    """
    from ..runtime.index import HnswIndex
    from .checkpoint import save_weights
    from .export import INPUT_NAMES, OPSET, OUTPUT_NAME, check_onnx_parity, export_onnx
    from .global_items import encoder_view

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
        export_onnx(encoder_view(model), tmp / ENCODER)
        save_weights(model, tmp / WEIGHTS)
        parity = check_onnx_parity(model, tmp / ENCODER)
        incremental = _export_incremental(model, tmp)
        vectors = model.item_vectors().detach().cpu().numpy().astype(np.float32)  # (n + 1, D)
        np.save(tmp / ITEM_VECTORS, vectors)
        (tmp / ITEM_IDS).write_text("".join(f"{i}\n" for i in vocab.item_ids), encoding="utf-8")
        np.save(tmp / POPULARITY, popularity)
        index = HnswIndex.build(
            vectors, M=hnsw.M, ef_construction=hnsw.ef_construction, ef=hnsw.ef, seed=hnsw.seed
        )
        index.save(tmp / HNSW)
        hnsw_info: dict[str, Any] = asdict(hnsw)
        if validation is not None:
            from ..runtime.index import ExactIndex
            from .validation import MAX_HNSW_COST, choose_ef

            hnsw_info["ef"], tried = choose_ef(index, ExactIndex(vectors), *validation)
            hnsw_info["ef_selection"] = {"rule": f"smallest ef costing <= {MAX_HNSW_COST} points "
                                         "HR@20 and MRR@20 against exact search on validation",
                                         "cases": len(validation[1]), "tried": tried}
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
                "repeat": cfg.repeat,
                "n_layers": cfg.n_layers,
                "n_heads": cfg.n_heads,
                "ffn_dim": cfg.ffn_dim,
                "dropout": cfg.dropout,
                "emb_dropout": cfg.emb_dropout,
                "global_neighbours": cfg.global_neighbours,  # baked into the encoder's table
                "mixed_scoring": cfg.mixed_scoring,  # the item vectors are the mixed table
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
            "hnsw": hnsw_info,
            **({"incremental": incremental} if incremental is not None else {}),
            **extra,
        }
        _write_manifest(tmp, manifest)
    return Path(bundles_dir) / version


def _export_incremental(model: SessionTransformer, directory: Path) -> dict[str, Any] | None:
    """The incremental encoder's graph, checked against PyTorch at every prefix; None (and no
    file) when the model's architecture has none."""
    from .global_items import encoder_view
    from .incremental import (
        STEP_FILE,
        check_incremental_parity,
        export_incremental,
        part_names,
        unsupported,
    )

    if unsupported(model) is not None:
        return None
    export_incremental(encoder_view(model), directory)
    parity = check_incremental_parity(model, directory)
    return {"step": STEP_FILE, "parts": part_names(model), "parity_max_abs_diff": parity}


def with_incremental(bundle: ModelBundle, bundles_dir: str | os.PathLike[str], model: SessionTransformer) -> Path:
    """A new bundle version: ``bundle`` plus its model's incremental encoder (``model`` is the
    bundle's own, from its weights)."""
    from .incremental import unsupported

    reason = unsupported(model)
    if reason is not None:
        raise BundleError(f"{bundle.version} cannot be encoded incrementally: {reason}")

    def save(tmp: Path) -> dict[str, Any]:
        info = _export_incremental(model, tmp)
        assert info is not None
        return info

    return _derived(bundle, bundles_dir, "inc", "incremental", save)


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """The manifest, with every other file's size and SHA-256 (checked at load: a bundle whose
    files changed after it was written is refused)."""
    files = {f.name: file_digest(f) for f in sorted(directory.iterdir()) if f.name != MANIFEST}
    text = json.dumps(_json_safe({**manifest, "files": files}), indent=2, allow_nan=False)
    (directory / MANIFEST).write_text(text + "\n")


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
    """A new bundle version: ``bundle``'s model plus a V-SKNN co-occurrence blend."""
    return _derived(bundle, bundles_dir, "cooc", "cooccurrence",
                    lambda tmp: {**_save_cooccurrence(tmp, neighbours, weight), "note": note})


def with_item_neighbours(
    bundle: ModelBundle, bundles_dir: str | os.PathLike[str], table: ItemNeighbours, weight: float,
    selection: Mapping[str, Any], note: str = "", hnsw: Mapping[str, Any] | None = None,
) -> Path:
    """A new bundle version: ``bundle``'s model plus the item-neighbour blend (table and weight);
    ``hnsw`` replaces the manifest's HNSW entry (its ef chosen through the blend)."""
    if not 0.0 <= weight <= 1.0:
        raise BundleError(f"item-neighbour weight must be in [0, 1]; got {weight}")
    if table.n_items != len(bundle.vocab):
        raise BundleError(f"the table covers {table.n_items} items; the bundle has {len(bundle.vocab)}")

    def save(tmp: Path) -> dict[str, Any]:
        table.save(tmp / ITEM_NEIGHBOURS)
        return {"file": ITEM_NEIGHBOURS, "weight": weight, **table.describe(), "selection": dict(selection),
                "note": note}

    return _derived(bundle, bundles_dir, "nb", "item_neighbours", save,
                    {"hnsw": dict(hnsw)} if hnsw is not None else None)


def _derived(
    bundle: ModelBundle, bundles_dir: str | os.PathLike[str], suffix: str, key: str,
    save: Callable[[Path], dict[str, Any]], overrides: Mapping[str, Any] | None = None,
) -> Path:
    """A new bundle version (same atomic write): the model's files and its blend's copied
    unchanged, ``save`` adding (or replacing) its files and returning the manifest's ``key`` entry; the manifest records the
    version it came from."""
    now = _utc_now()
    data = str(bundle.manifest.get("training", {}).get("data", "model"))
    version = _version_name(f"{data}-{suffix}", now)
    with _atomic_bundle_dir(Path(bundles_dir), version) as tmp:
        for name in _FILES:
            shutil.copyfile(bundle.path / name, tmp / name)
        for name in (*OPTIONAL_MODEL_FILES, ITEM_NEIGHBOURS, COOCCURRENCE):  # ``save`` may replace one
            if (bundle.path / name).is_file():
                shutil.copyfile(bundle.path / name, tmp / name)
        manifest = dict(bundle.manifest, version=version, created=now.isoformat(timespec="milliseconds"),
                        derived_from=bundle.version, **{key: save(tmp)}, **(overrides or {}))
        _write_manifest(tmp, manifest)
    return Path(bundles_dir) / version


