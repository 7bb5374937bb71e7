"""``--log-format json``: one JSON object per log line."""

from __future__ import annotations

import logging
import subprocess
import sys

import orjson

from stream_rec.logs import JsonFormatter


def test_a_record_is_one_json_object_with_its_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("stream_rec.direct", logging.ERROR, __file__, 1,
                                   "batch of %d failed", (3,), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    obj = orjson.loads(line)
    assert obj["level"] == "error" and obj["logger"] == "stream_rec.direct"
    assert obj["message"] == "batch of 3 failed" and "ValueError: boom" in obj["exc"]
    assert obj["ts"].endswith("+00:00")


def test_the_flag_turns_every_line_to_json(tmp_path):
    code = ("import logging; from stream_rec import cli; "
            f"rc = cli.main(['replay', '--file', {str(tmp_path / 'none.jsonl')!r}, "
            "'--log-format', 'json', '--quiet']); "
            "logging.getLogger('stream_rec.test').warning('after %s', rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("stream-rec replay: error:")  # a command's error stays one line
    assert orjson.loads(lines[-1])["message"] == "after 2"
