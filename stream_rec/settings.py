"""One typed settings object for every command; each field is documented and read from env.

Precedence: CLI flag > environment variable (``STREAM_REC_<FIELD>``) > default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from .errors import ConfigError

__all__ = ["Settings", "Secret", "env_name"]

ENV_PREFIX = "STREAM_REC_"


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


class Secret:
    """A secret setting (a password): never in ``repr``, logs or ``--help``; ``reveal()`` it
    only where a client needs it (stream_rec.kafka.clients)."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))


DEFAULT_SESSION_TIMEOUT_S = 6.0
EMBEDDED_SESSION_TIMEOUT_S = 2.0  # Tansu answers a JoinGroup after about half of it


@dataclass(frozen=True)
class Settings:
    # --- Kafka -------------------------------------------------------------------------
    bootstrap_servers: str = _f(
        "", "Kafka bootstrap servers (host:port[,host:port]). Empty: `demo` starts an embedded broker."
    )
    events_topic: str = _f("events", "Topic of shopper events, keyed by user_id.")
    recs_topic: str = _f("recommendations", "Topic the refreshed top-k is published to, keyed by user_id.")
    dlq_topic: str = _f("events.dlq", "Dead-letter topic for invalid events (reason, original bytes, origin).")
    partitions: int = _f(4, "Partitions of the events topic and of the session table's changelog.", min=1)
    session_timeout_s: float = _f(DEFAULT_SESSION_TIMEOUT_S, "Consumer-group session timeout (s): a killed worker's partitions move after it (plus a heartbeat and the rebalance). 6 is Apache Kafka's smallest by default (group.min.session.timeout.ms); on the embedded broker the default becomes 2 (docs/reliability.md: recovery in 3.5 s).", min=1)
    standby_replicas: int = _f(0, "Standby copies of each table partition kept warm on other workers (faster failover).", min=0)
    changelog_barrier: bool = _f(False, "After each micro-batch, wait for the state changelog writes and close them with a marker record per partition. Needed on Tansu 0.6 (the embedded broker), whose end offsets are wrong after multi-record produce batches, which would cut changelog recovery short.")
    engine: str = _f("direct", "Worker engine: direct (the core on plain aiokafka with faust's table format; several times faster) or faust (faust-streaming agent and Table).", choices=("direct", "faust"))
    app_id: str = _f("stream-rec", "Faust app id: the consumer group and the changelog topics' prefix.")
    replication_factor: int = _f(-1, "Replication factor of the topics the worker creates (-1 = the cluster's default.replication.factor).", min=-1)
    min_insync_replicas: int = _f(-1, "min.insync.replicas of the topics the worker creates (-1 = the cluster's default).", min=-1)
    producer_idempotence: bool = _f(False, "Idempotent producers (with acks=all, always on). Off by default: the embedded broker (Tansu 0.6) cannot do InitProducerId; turn it on for a real Kafka cluster. The faust engine's producer is never idempotent (faust ties it to exactly-once).")
    # --- security (every Kafka client: workers, produce, tail, bench, evaluate, admin) ---
    security_protocol: str = _f("PLAINTEXT", "Kafka security protocol.", choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
    ssl_cafile: str = _f("", "CA certificate file (PEM) to verify the brokers with (SSL, SASL_SSL). Empty: the system's CAs.")
    ssl_certfile: str = _f("", "Client certificate file (PEM) for mutual TLS. Empty: none.")
    ssl_keyfile: str = _f("", "Client private key file (PEM) of --ssl-certfile.")
    sasl_mechanism: str = _f("PLAIN", "SASL mechanism (SASL_PLAINTEXT, SASL_SSL).", choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))
    sasl_username: str = _f("", "SASL user name.")
    sasl_password: Secret = _f(Secret(), "SASL password (a secret: give it by the environment variable; it is never printed).")
    # --- bad input ---------------------------------------------------------------------
    max_record_bytes: int = _f(64 << 10, "Largest event record (bytes); a larger one is dead-lettered unread.", min=1)
    max_clock_skew_s: float = _f(86400.0, "How far (s) an event's ts may lie after its record's Kafka timestamp; later ones are dead-lettered (0 = no check; ts must always fit int64).", min=0)
    max_event_age_s: float = _f(0.0, "How far (s) an event's ts may lie before its record's Kafka timestamp (0 = no limit: replaying an old event log is allowed).", min=0)
    dlq_max_original_bytes: int = _f(64 << 10, "Bytes of the original record kept in a dead letter (its full length and sha256 are always kept).", min=0)
    dlq_failure: str = _f("log", "When writing a dead letter fails: log (rate-limited) and count it, and go on; or fail (stop the worker).", choices=("log", "fail"))
    # --- state -------------------------------------------------------------------------
    data_dir: str = _f("var/worker", "Worker state directory (RocksDB session tables live under it).")
    state_memory_mb: int = _f(64, "RocksDB memory budget (MB) of a worker's session tables: block cache and memtables of all its partitions share it, so memory stays flat as users accumulate.", min=4)
    session_gap_s: int = _f(1800, "Inactivity (s) that starts a new session when events carry no session_id.", min=1)
    max_purchased: int = _f(20, "Purchased items remembered per user (for filtering).", min=0)
    # --- model -------------------------------------------------------------------------
    bundles_dir: str = _f("bundles", "Directory of model bundles (one sub-directory per version).")
    bundle: str = _f("", "Path of the model bundle to serve. Empty: --model-version, else the newest bundle.")
    model_version: str = _f("", "Version (sub-directory of bundles_dir) to serve when --bundle is empty.")
    bundles_topic: str = _f("", "Compacted topic bundles travel through when workers share no disk with the learner: `stream-rec learn` (and `stream-rec publish`) send each bundle there, workers fetch new ones into bundles_dir (empty = off).")
    providers: str = _f("auto", "ONNX Runtime providers: auto (CUDA when usable, else CPU), cpu or cuda.", choices=("auto", "cpu", "cuda"))
    encoder_cache_mb: int = _f(64, "Memory (MB) for the incremental encoder's per-user caches, with a bundle that has one: a session one event longer than the one last encoded for its user encodes one position, not all; least recently used users are evicted. 0 = encode every session in full.", min=0)
    intra_op_threads: int = _f(1, "ONNX Runtime intra-op threads (0 = ORT default).", min=0)
    inter_op_threads: int = _f(1, "ONNX Runtime inter-op threads (0 = ORT default).", min=0)
    index: str = _f("hnsw", "Candidate index: hnsw (approximate) or exact (numpy reference).", choices=("hnsw", "exact"))
    hnsw_ef: int = _f(0, "HNSW search breadth ef (>= top_k); 0 = the bundle's, chosen on validation at training time so HNSW costs at most 0.1 points HR@20/MRR@20 against exact search (128 for older bundles).", min=0)
    index_threads: int = _f(0, "Threads for batched HNSW queries; 0 = auto: the cores this process may use (its CPU affinity and cgroup quota) shared by the worker processes started together (`--processes`), 1 to 4.", min=0)
    # --- serving -------------------------------------------------------------------------
    top_k: int = _f(20, "Items per recommendation.", min=1)
    filter_purchased: bool = _f(True, "Never recommend items the user already purchased.")
    filter_clicked: bool = _f(False, "Never recommend items already clicked in the session.")
    coalesce: bool = _f(True, "Under load, answer several events of one user in a batch with one recommendation (for its last event).")
    cold_start_trending: bool = _f(True, "Sessions with no item the model knows get trending items (decayed counts kept in the stream).")
    explain: bool = _f(False, "Attach to each recommended item the session item that most supports it (`because`).")
    cooccurrence_weight: float = _f(-1.0, "Weight of co-occurrence (the bundle's item-neighbour table, or V-SKNN in older bundles) blended into the model's scores: 0 = off, -1 = the bundle's tuned weight.", min=-1.0)
    batch_max: int = _f(256, "Most events taken from the stream into one micro-batch.", min=1)
    batch_wait_ms: float = _f(5.0, "Longest wait (ms) for a micro-batch to fill before it is processed.", min=0)
    compute_thread: bool = _f(False, "--engine direct: compute each micro-batch (fold, encode, search) in a thread beside the event loop instead of on it. Off by default: on CPU the thread's contention with the loop for the GIL cost more than the overlap gave (docs/benchmarks.md, session 17); it may pay where the compute mostly waits outside the GIL (a GPU).")
    worker_host: str = _f("127.0.0.1", "Address of the worker's status web server.")
    worker_port: int = _f(6066, "Port of the worker's status web server.", min=1)
    offset_regression: str = _f("new-epoch", "A record at or below a user's last applied offset with an event time later than any in the state is no redelivery (the events topic was re-created or truncated): new-epoch applies it (and logs and counts it), skip ignores it (logged and counted too).", choices=("new-epoch", "skip"))
    state_ttl_days: float = _f(0.0, "--engine direct: delete a user's session state (with a changelog tombstone) once its last event is older than this many days, in event time; 0 = never.", min=0)
    health_stall_s: float = _f(60.0, "/health/live and /health/ready fail when no micro-batch was processed for this long (s) while the consumer lag is positive (0 = never).", min=0)
    health_commit_failures: int = _f(5, "/health/live and /health/ready fail after this many offset commits in a row failed (0 = never).", min=0)
    model_poll_s: float = _f(2.0, "How often (s) the worker looks for a newer bundle to swap in (0 = never; a pinned --bundle or --model-version is never swapped).", min=0)
    log_level: str = _f("warning", "Log level: debug, info, warning or error.", choices=("debug", "info", "warning", "error"))
    log_format: str = _f("text", "Log lines as text, or as one JSON object each (ts, level, logger, message; exc when there is one) for log collectors.", choices=("text", "json"))
    faust_table_views: bool = _f(False, "--engine faust: serve faust's table web views (/table/...: any user's raw session state to whoever reaches the port). Off by default.")
    # --- push gateway (stream-rec gateway, the demo shop) ---------------------------------
    gateway_host: str = _f("127.0.0.1", "Address the gateway binds (one address, never a wildcard such as 0.0.0.0: put a proxy in front to publish it).")
    gateway_port: int = _f(8300, "Port of the gateway (SSE, WebSocket, POST /events, the demo shop).", min=1)
    gateway_secret: Secret = _f(Secret(), "HMAC-SHA256 key the gateway signs and checks subscriber tokens with (a secret: give it by the environment variable). Empty: a random one per process (tokens then work on that gateway only, until it restarts).")
    gateway_token_ttl_s: float = _f(3600.0, "Lifetime (s) of the tokens the gateway mints.", min=1)
    gateway_latest_users: int = _f(100_000, "Users whose latest recommendation the gateway keeps in memory (LRU: the least recently updated or read is dropped first).", min=1)
    gateway_cors_origins: str = _f("", "Origins (comma-separated) allowed to call the gateway from a browser. Empty: same origin only.")
    gateway_max_body_bytes: int = _f(16 << 10, "Largest request body the gateway reads (POST /events); larger: 413.", min=1)
    gateway_rate_per_s: float = _f(20.0, "Events per second one client (token) may POST, in bursts of twice that (0 = no limit); larger: 429.", min=0)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.type in ("Secret", Secret) and not isinstance(getattr(self, f.name), Secret):
                object.__setattr__(self, f.name, Secret(str(getattr(self, f.name))))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then STREAM_REC_* from ``env`` (os.environ by default), then overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = env_name(f.name)
            if name in env:
                values[f.name] = _coerce(f.name, f.type, env[name], source=name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validated()

    def validated(self) -> Settings:
        for f in fields(self):
            value = getattr(self, f.name)
            lo = f.metadata.get("min")
            if lo is not None and value < lo:
                raise ConfigError(f"{f.name} must be >= {lo}; got {value}")
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ConfigError("ssl_certfile and ssl_keyfile go together; got only one")
        if self.security_protocol.startswith("SASL") and not self.sasl_username:
            raise ConfigError(f"security_protocol {self.security_protocol} needs sasl_username")
        if self.index == "hnsw" and 0 < self.hnsw_ef < self.top_k:
            raise ConfigError(f"hnsw_ef must be >= top_k ({self.top_k}); got {self.hnsw_ef}")
        if self.engine == "faust" and self.state_ttl_days > 0:
            raise ConfigError(f"state_ttl_days ({self.state_ttl_days:g}) works on --engine direct only: the faust "
                              "engine has no expiry sweep (docs/reliability.md); use --engine direct or 0")
        if not (self.cooccurrence_weight == -1.0 or 0.0 <= self.cooccurrence_weight <= 1.0):
            raise ConfigError(f"cooccurrence_weight must be in [0, 1], or -1 for the bundle's; got {self.cooccurrence_weight}")
        return self

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes).validated()

    def to_env(self) -> dict[str, str]:
        """The settings as STREAM_REC_* variables (to hand them to a child process)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Secret):
                out[env_name(f.name)] = v.reveal()
                continue
            out[env_name(f.name)] = ("true" if v else "false") if isinstance(v, bool) else str(v)
        return out

    @staticmethod
    def describe() -> list[tuple[str, str, Any, str]]:
        """(field, env var, default, help) for docs and --help."""
        return [
            (f.name, env_name(f.name), f.default if f.default is not MISSING else None, f.metadata["help"])
            for f in fields(Settings)
        ]


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, typ: Any, raw: str, source: str) -> Any:
    typ = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    try:
        if typ == "bool":
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
        if typ == "Secret":
            return Secret(raw)
        return raw
    except ValueError:
        expected = {"bool": "true or false", "int": "an integer", "float": "a number"}.get(typ, typ)
        raise ConfigError(f"{source}={raw!r}: expected {expected}") from None
