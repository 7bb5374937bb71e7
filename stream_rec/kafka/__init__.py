"""Every Kafka-facing door of stream-rec (the core and the runtime never import this package).

- :mod:`.embedded`: :class:`~.embedded.EmbeddedBroker`, the Tansu process, what Tansu 0.6 does
  and does not do (read its docstring before relying on a Kafka feature against it), and
  :func:`~.embedded.kafka_or_embedded` (the given Kafka, else an embedded one for a block).
- :mod:`.admin`: ``ensure_topics``, ``wait_for_kafka``, ``parse_bootstrap``, for the embedded
  broker and a real cluster alike.
- :mod:`.probe`: free ports and a raw Kafka metadata probe.
- :mod:`.produce`, :mod:`.tail`: `stream-rec produce` and `stream-rec tail`.
- :mod:`.fetch_wait`: a consumer's adaptive fetch wait.
- :mod:`.worker_process`: `stream-rec worker` as a child process.
"""
