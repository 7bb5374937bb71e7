"""Settings + bundle -> Recommender: the one place settings reach the core.

Every door that serves a bundle (both worker engines through :class:`ModelHolder`, the
benchmark, evaluation, scripts) builds its recommender here, and the session policy a
worker folds events with is built from settings only by :func:`session_policy`, so a
setting such as ``--hnsw-ef`` travels settings -> compose -> runtime index and nowhere else.
"""

from __future__ import annotations

from typing import Any

from ..core.cooccurrence import CANDIDATES
from ..core.intake import RecordLimits
from ..core.item_neighbours import DEFAULT_CANDIDATES
from ..core.recommender import Recommender, ServingConfig
from ..core.seams import CandidateIndex, SessionEncoder
from ..core.session import SessionPolicy
from ..runtime.cores import auto_index_threads
from ..settings import Settings
from .bundle import ModelBundle

__all__ = [
    "record_limits", "session_policy", "serving_config", "blend_args", "logit_scale",
    "build_recommender", "serving_encoder", "encoder_cache_stats",
]


def record_limits(settings: Settings) -> RecordLimits:
    """The intake's bounds on one record (record size, ts against the Kafka timestamp)."""
    return RecordLimits(
        max_record_bytes=settings.max_record_bytes,
        max_future_ms=int(settings.max_clock_skew_s * 1000) or None,
        max_past_ms=int(settings.max_event_age_s * 1000) or None,
    )


def session_policy(settings: Settings, max_len: int) -> SessionPolicy:
    """How events fold into state: the model's length, and the settings' purchases and gap."""
    return SessionPolicy(
        max_len=max_len,
        max_purchased=settings.max_purchased,
        session_gap_ms=settings.session_gap_s * 1000,
        new_epoch_on_regression=settings.offset_regression == "new-epoch",
    )


def serving_config(settings: Settings) -> ServingConfig:
    return ServingConfig(
        top_k=settings.top_k,
        filter_purchased=settings.filter_purchased,
        filter_clicked=settings.filter_clicked,
        coalesce=settings.coalesce,
        cold_start_trending=settings.cold_start_trending,
        explain=settings.explain,
    )


def _blend_choice(bundle: ModelBundle, settings: Settings) -> tuple[str | None, float]:
    """Which blend a bundle and the settings ask for, read off the manifest (no file loaded):
    ("item_neighbours" or "cooccurrence", weight), or (None, 0) when it is off. A bundle with an
    item-neighbour table blends it (a lookup per answer); an older one may carry V-SKNN's
    training sessions instead (a search per answer). Setting -1 = the bundle's tuned weight."""
    kind = next((k for k in ("item_neighbours", "cooccurrence") if bundle.manifest.get(k)), None)
    table = kind == "item_neighbours"
    tuned = bundle.item_neighbours_weight if table else bundle.cooccurrence_weight
    if settings.cooccurrence_weight >= 0:  # set: 0 is the model alone
        weight = settings.cooccurrence_weight
        on = weight > 0
    else:  # the bundle's: a table may blend the session's own items at weight 0
        weight = tuned
        repeat = float(bundle.manifest["item_neighbours"].get("repeat", 0)) if table else 0.0
        on = weight > 0 or repeat > 0
    return (kind, weight) if kind is not None and on else (None, 0.0)


def blend_args(bundle: ModelBundle, settings: Settings) -> dict[str, Any]:
    """``neighbours`` and ``blend_weight`` for the blend a bundle and the settings ask for;
    empty when the blend is off."""
    kind, weight = _blend_choice(bundle, settings)
    if kind is None:
        return {}
    neighbours = bundle.item_neighbours() if kind == "item_neighbours" else bundle.neighbours()
    return {"neighbours": neighbours, "blend_weight": weight}


def logit_scale(bundle: ModelBundle) -> float:
    """The model's cosine -> logit scale (1 for an unnormalised model): the blend's softmax and
    the repeat head's bonuses are in logits."""
    return float(bundle.manifest.get("scale", 1.0)) if bundle.manifest.get("normalized") else 1.0


def ef_floor(settings: Settings, bundle: ModelBundle) -> int:
    """The most candidates the core may ask the index for one query with these settings.

    HNSW searches with ``max(ef, k)`` and the batch's k is its largest query's (top k plus the
    most exclusions, spare candidates for the repeat head, a blend's candidates): an ``ef`` at least
    this large keeps the search breadth, and so each user's answer, independent of who else is
    in the micro-batch.
    """
    kind, _ = _blend_choice(bundle, settings)
    if kind is None:
        blend_k = 0
    elif kind == "cooccurrence":
        blend_k = CANDIDATES
    else:  # the item-neighbour table's, as its manifest entry records it
        blend_k = int(bundle.manifest["item_neighbours"].get("candidates", DEFAULT_CANDIDATES))
    k = max(settings.top_k, blend_k)
    if settings.filter_purchased:
        k += settings.max_purchased
    if settings.filter_clicked:
        k += bundle.max_len
    if bundle.manifest.get("architecture", {}).get("repeat"):
        k += bundle.max_len
    return k


def serving_index(
    bundle: ModelBundle, settings: Settings, kind: str | None = None
) -> CandidateIndex:
    """The index a recommender serving ``bundle`` under ``settings`` searches (``kind`` overrides
    ``settings.index``): HNSW at the bundle's validated ef (or --hnsw-ef), raised to
    :func:`ef_floor`."""
    return bundle.index(kind=kind or settings.index, ef=served_ef(bundle, settings),
                        threads=settings.index_threads or auto_index_threads())


def served_ef(bundle: ModelBundle, settings: Settings) -> int:
    """HNSW ef as served: the bundle's validated ef (or --hnsw-ef; the model alone's when its
    blend is off), raised to :func:`ef_floor`."""
    blended = _blend_choice(bundle, settings)[0] is not None
    return max(bundle.serving_ef(settings.hnsw_ef, blended), ef_floor(settings, bundle))


def serving_encoder(bundle: ModelBundle, settings: Settings) -> SessionEncoder:
    """The bundle's incremental encoder when it has one and ``encoder_cache_mb`` > 0 (the same
    vectors: parity checked when the bundle was written), else its ONNX encoder."""
    providers, intra = settings.providers, settings.intra_op_threads
    inter = settings.inter_op_threads
    if settings.encoder_cache_mb > 0 and bundle.incremental:
        return bundle.incremental_encoder(settings.encoder_cache_mb << 20, providers, intra, inter,
                                          max_batch=ServingConfig.max_encode_batch)
    return bundle.encoder(providers, intra, inter)


def encoder_cache_stats(recommender: Recommender) -> dict[str, Any] | None:
    """The incremental encoder's cache figures (None when the recommender encodes in full)."""
    stats = getattr(recommender.encoder, "stats", None)
    return stats() if stats is not None else None


def build_recommender(bundle: ModelBundle, settings: Settings) -> Recommender:
    """The recommender serving ``bundle`` as ``settings`` ask (encoder, index, policy, blend)."""
    return Recommender(
        serving_encoder(bundle, settings),
        serving_index(bundle, settings),
        bundle.vocab,
        model_version=bundle.version,
        max_len=bundle.max_len,
        query_buckets=bundle.query_buckets,
        policy=session_policy(settings, bundle.max_len),
        config=serving_config(settings),
        popularity=bundle.popularity,
        item_vectors=bundle.item_vectors,
        scale=logit_scale(bundle),
        **blend_args(bundle, settings),
    )
