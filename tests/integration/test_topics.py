"""`stream-rec topics create|describe` on the embedded broker."""

from __future__ import annotations

import uuid

import orjson
import pytest

from stream_rec.cli import main

pytestmark = [pytest.mark.integration]


def test_topics_are_created_as_planned_and_described(broker, capsys):
    tag = uuid.uuid4().hex[:8]
    common = ["--bootstrap-servers", broker, "--events-topic", f"ev-{tag}", "--recs-topic",
              f"recs-{tag}", "--dlq-topic", f"dlq-{tag}", "--app-id", f"app-{tag}"]
    assert main(["topics", "describe", "--json", *common]) == 1  # nothing there yet
    before = orjson.loads(capsys.readouterr().out)
    assert not any(t["exists"] for t in before["topics"].values())
    assert len(before["problems"]) == 4

    assert main(["topics", "create", "--partitions", "3", "--events-retention-hours", "24",
                 *common]) == 0
    capsys.readouterr()
    assert main(["topics", "describe", "--json", "--partitions", "3", *common]) == 0
    topics = orjson.loads(capsys.readouterr().out)["topics"]
    assert {n: t["partitions"] for n, t in topics.items()} == {
        f"ev-{tag}": 3, f"recs-{tag}": 3, f"dlq-{tag}": 1, f"app-{tag}-sessions-changelog": 3}
    assert topics[f"ev-{tag}"]["configs"].get("retention.ms") == str(24 * 3600 * 1000)
    assert topics[f"recs-{tag}"]["configs"].get("cleanup.policy") == "compact"
    assert topics[f"app-{tag}-sessions-changelog"]["configs"].get("cleanup.policy") == "compact"
