"""The pure core: (session states, events) -> (new states, recommendations).

No Kafka, no RocksDB, no files, no settings: ``events`` (contracts), ``session`` (state),
``features``, ``trending``, ``cooccurrence`` (V-SKNN scoring and the blend), ``repeat`` (the
repeat head's rerank), ``scoring`` (encode and search, shared with evaluation), ``recommender``
(:class:`~.recommender.Recommender`), ``intake`` (records -> events or dead letters, state
bytes -> states) and ``seams`` (the protocols the runtime implements). A test
(tests/unit/test_architecture.py) keeps this package from importing anything outward.
"""
