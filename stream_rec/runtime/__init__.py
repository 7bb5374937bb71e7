"""The seams' implementations: ONNX Runtime encoder, HNSW and exact indexes, session stores
(memory, RocksDB, the direct engine's partitioned tables)."""
