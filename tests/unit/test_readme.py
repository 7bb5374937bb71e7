"""Executable docs: the README's commands, settings and contracts stay true."""

import re
from pathlib import Path

import orjson

from stream_rec.cli import build_parser
from stream_rec.core.events import EVENT_TYPES, Event, InvalidEvent, parse_event
from stream_rec.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_settings_table_lists_every_setting_with_its_env_var_and_default():
    for name, env, default, _help in Settings.describe():
        row = f"| `--{name.replace('_', '-')}` | `{env}` | `{default!r}` |"
        assert row in README, f"README settings table is stale for {name}: run scripts/settings_table.py"


def test_every_documented_command_exists():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    documented = set(re.findall(r"\| `stream-rec (\w+)", README))
    assert documented and documented <= set(sub.choices)


def test_quickstart_scripts_exist_and_ci_runs_the_test_command():
    for script in re.findall(r"^bash (scripts/\S+\.sh)", README, re.M):
        assert (ROOT / script).is_file(), script
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_schemas_agree_with_the_parser():
    schema = orjson.loads((ROOT / "stream_rec/schemas/event.schema.json").read_bytes())
    assert set(schema["properties"]["type"]["enum"]) == set(EVENT_TYPES) == {"click", "search", "purchase", "forget"}
    example = {"event_id": "e1", "user_id": "u1", "type": "click", "item_id": "i1", "ts": 5}
    assert set(example) >= set(schema["required"])
    assert isinstance(parse_event(orjson.dumps(example)), Event)
    del example["ts"]
    assert isinstance(parse_event(orjson.dumps(example)), InvalidEvent)
