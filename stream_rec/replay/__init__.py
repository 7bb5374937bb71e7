"""Replay and backfill: a recorded log (file or topic range) through the workers' core.

``stream_rec.replay.engine`` runs it (``run_replay``); ``stream_rec.replay.args`` holds the
command's own flags. Nothing is imported here, so ``stream-rec --help`` loads no RocksDB.
"""
