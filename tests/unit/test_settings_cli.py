import subprocess
import sys
from collections import Counter

import orjson
import pytest

from stream_rec.cli import main
from stream_rec.errors import ConfigError
from stream_rec.settings import Settings


def test_env_then_overrides():
    env = {"STREAM_REC_TOP_K": "7", "STREAM_REC_FILTER_CLICKED": "yes", "STREAM_REC_EVENTS_TOPIC": "ev"}
    s = Settings.from_env(env, events_topic="other")
    assert (s.top_k, s.filter_clicked, s.events_topic) == (7, True, "other")


@pytest.mark.parametrize(
    "env, message",
    [
        ({"STREAM_REC_TOP_K": "many"}, "STREAM_REC_TOP_K='many': expected an integer"),
        ({"STREAM_REC_COALESCE": "maybe"}, "expected true or false"),
        ({"STREAM_REC_TOP_K": "0"}, "top_k must be >= 1; got 0"),
        ({"STREAM_REC_INDEX": "faiss"}, "index must be one of hnsw, exact"),
        ({"STREAM_REC_HNSW_EF": "5"}, "hnsw_ef must be >= top_k"),
        ({"STREAM_REC_ENGINE": "faust", "STREAM_REC_STATE_TTL_DAYS": "30"},
         "works on --engine direct only: the faust engine has no expiry sweep"),
    ],
)
def test_bad_settings_name_what_is_expected(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


def test_every_setting_is_documented_and_round_trips_through_env():
    s = Settings.from_env({}, top_k=9, coalesce=False)
    assert Settings.from_env(s.to_env()) == s
    for name, env, _default, help_ in Settings.describe():
        assert env == "STREAM_REC_" + name.upper() and len(help_) > 10


def test_bad_cli_argument_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--max-events", "-3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "--max-events: expected a positive integer; got '-3'" in err


def test_every_subcommand_has_help():
    for cmd in ["demo", "broker", "worker", "produce", "train", "tail"]:
        out = subprocess.run([sys.executable, "-m", "stream_rec.cli", cmd, "--help"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "usage: stream-rec " + cmd in out.stdout


def test_worker_without_kafka_says_what_to_do(capsys, monkeypatch):
    monkeypatch.delenv("STREAM_REC_BOOTSTRAP_SERVERS", raising=False)
    assert main(["worker"]) == 2
    assert "--bootstrap-servers" in capsys.readouterr().err


def test_generate_writes_a_drifting_stream(tmp_path, capsys):
    from stream_rec.generate.jsonl import read_jsonl

    out = tmp_path / "drift.jsonl.gz"
    assert main(["generate", "--out", str(out), "--count", "5000", "--users", "300",
                 "--items", "200", "--launches-per-day", "30"]) == 0
    assert "5,000 events written" in capsys.readouterr().err
    assert sum(1 for _ in read_jsonl(out)) == 5000


def test_generate_takes_the_visit_length_and_backtrack_rate(tmp_path):
    from stream_rec.generate.jsonl import read_jsonl

    lengths = {}
    for length in ("4", "20"):
        out = tmp_path / f"s{length}.jsonl"
        assert main(["generate", "--out", str(out), "--count", "4000", "--users", "300",
                     "--session-length", length, "--backtrack-rate", "0.3"]) == 0
        sessions = Counter(orjson.loads(line)["session_id"] for line in read_jsonl(out))
        lengths[length] = 4000 / len(sessions)
    assert lengths["20"] > 2 * lengths["4"]


def test_generate_refuses_a_backtrack_rate_out_of_range_in_one_line(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path / "x.jsonl"), "--backtrack-rate", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "backtrack_rate must be in [0, 0.37]" in err
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize("argv, message", [
    (["generate", "--out", "x", "--trend-days", "0"], "--trend-days: expected a number > 0; got '0'"),
    (["evaluate", "--incremental", "--update-lr", "-1"], "--update-lr: expected a number > 0"),
    (["evaluate", "--incremental", "--windows", "0"], "--windows: expected a positive integer"),
])
def test_bad_learning_arguments_are_one_line(capsys, argv, message):
    with pytest.raises(SystemExit):
        main(argv)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


@pytest.mark.parametrize("text, ms", [("10m", 600_000), ("1h", 3_600_000), ("1.5d", 129_600_000),
                                      ("90s", 90_000)])
def test_windows_parse_as_durations(text, ms):
    from stream_rec.learn.evaluate import parse_window

    assert parse_window(text) == ms


@pytest.mark.parametrize("text", ["10", "1w", "-1h", "h"])
def test_bad_window_says_what_is_expected(text):
    from stream_rec.learn.evaluate import parse_window

    with pytest.raises(ConfigError, match="expected"):
        parse_window(text)


def test_repartition_says_what_it_needs(capsys, monkeypatch):
    monkeypatch.delenv("STREAM_REC_BOOTSTRAP_SERVERS", raising=False)
    assert main(["repartition", "--partitions", "8"]) == 2
    assert "--bootstrap-servers" in capsys.readouterr().err
    assert main(["repartition", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "--partitions N" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["repartition", "--partitions", "0"])
    assert "expected a positive integer" in capsys.readouterr().err


def test_repartition_names_are_versioned_both_ways():
    from stream_rec.kafka.repartition import plan
    from stream_rec.settings import Settings

    s = Settings.from_env({}, events_topic="events", app_id="stream-rec")
    up = plan(s, 8)
    assert (up.new_events, up.new_app_id, up.new_changelog) == (
        "events.p8", "stream-rec.p8", "stream-rec.p8-sessions-changelog")
    down = plan(s.with_(events_topic="events.p8", app_id="stream-rec.p8"), 2)
    assert (down.new_events, down.new_app_id) == ("events.p2", "stream-rec.p2")


def test_generate_takes_how_often_a_click_follows_the_last_ones_related_items(tmp_path):
    from stream_rec.generate import EventGenerator, GeneratorConfig
    from stream_rec.generate.jsonl import read_jsonl

    gen = EventGenerator(GeneratorConfig(n_users=300, n_items=3000))  # the CLI's catalogue
    related = {gen._ids[i]: {gen._ids[j] for j in gen._related[i]} for i in range(len(gen._ids))}
    shares = {}
    for follow in ("0.1", "0.6"):
        out = tmp_path / f"f{follow}.jsonl"
        # A lower --follow-related leaves room for more backtracking (0.97 less it).
        assert main(["generate", "--out", str(out), "--count", "6000", "--users", "300",
                     "--follow-related", follow, "--backtrack-rate", "0.3"]) == 0
        last: dict[str, str] = {}
        pairs = follows = 0
        for line in read_jsonl(out):
            event = orjson.loads(line)
            if event["type"] != "click":
                continue
            before = last.get(event["session_id"])
            if before is not None and before != event["item_id"]:
                pairs += 1
                follows += event["item_id"] in related[before]
            last[event["session_id"]] = event["item_id"]
        shares[follow] = follows / pairs
    assert shares["0.1"] < shares["0.6"] / 2
