"""The fault runs' bookkeeping: lost, duplicated, and the seconds until every partition answers."""

from __future__ import annotations

import random

from stream_rec.faults.ledger import Ledger, recovery_s
from stream_rec.faults.scenarios import poison_records
from stream_rec.generate.invalid import INVALID_KINDS


def test_lost_and_duplicated():
    ledger = Ledger()
    ledger.sent.update({"a.1": 1.0, "a.2": 2.0, "b.1": 3.0})
    ledger.answered.update({"a.1": 1.1, "b.1": 3.2})
    ledger.answers.update({"a.1": 2, "b.1": 1})
    assert ledger.lost() == ["a.2"]
    assert ledger.counts() == {"produced": 3, "answered": 2, "lost": 1, "duplicated": 1}


def test_recovery_is_the_last_partition_to_answer_again():
    ledger = Ledger()
    # partition 0 answers at once; partition 1 only 4 s after the fault at t = 10
    for i, (sent, ans, part) in enumerate(
        [(9.0, 9.1, 1), (10.5, 10.6, 0), (10.5, 14.0, 1), (11.0, 14.1, 1)]
    ):
        ledger.sent[f"e.{i}"], ledger.answered[f"e.{i}"], ledger.partition[f"e.{i}"] = (
            sent,
            ans,
            part,
        )
    assert abs(recovery_s(ledger, 10.0, partitions=2) - 4.0) < 1e-9
    assert recovery_s(ledger, 10.0, partitions=3) is None  # partition 2 never answered


def test_poison_records_cover_every_kind_and_the_random_ones():
    records = poison_records(random.Random(1), 1000, max_record_bytes=1024)
    assert len(records) == len(INVALID_KINDS) + 5 + 1000
    assert any(v is not None and len(v) > 1024 for _, v in records)
    assert any(v is None for _, v in records)
