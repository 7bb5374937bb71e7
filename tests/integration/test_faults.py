"""CI's short fault run (issue 24): kill -9 one of three workers, and a poison burst, against the
embedded broker; nothing lost, every poison record dead-lettered, every worker alive."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

from stream_rec.faults.scenarios import FaultOptions, run_scenario

ROOT = Path(__file__).resolve().parents[2]


def _options(tiny_bundle: Path, tmp_path: Path) -> FaultOptions:
    return FaultOptions(
        bundle=tiny_bundle,
        run_dir=tmp_path,
        partitions=6,
        rate=80.0,
        after_s=6.0,
        random_poison=1000,
        say=lambda m: None,
    )


def test_kill_one_of_three_workers_loses_nothing(tiny_bundle, tmp_path):
    row = asyncio.run(run_scenario("kill", _options(tiny_bundle, tmp_path)))
    assert row["produced"] > 0 and row["lost"] == 0, row
    assert row["answered"] == row["produced"]
    assert row["recovery_s"] is not None  # every partition answered again (the figure: docs)
    assert row["workers_dead"] == 0


def test_poison_burst_is_dead_lettered_and_the_rest_answered(tiny_bundle, tmp_path):
    row = asyncio.run(run_scenario("poison", _options(tiny_bundle, tmp_path)))
    assert row["poison_sent"] >= 1015 and row["dead_letters"] == row["poison_sent"], row
    assert row["lost"] == 0 and row["workers_dead"] == 0


def test_the_script_prints_the_table_and_writes_json(tiny_bundle, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("faults_script", ROOT / "scripts" / "faults.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "faults.json"
    rc = script.main(
        [
            "--scenarios",
            "restart",
            "--after-s",
            "4",
            "--rate",
            "50",
            "--bundle",
            str(tiny_bundle),
            "--run-dir",
            str(tmp_path / "run"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["scenario"] for r in rows] == ["restart"] and rows[0]["lost"] == 0
    assert "| restart |" in capsys.readouterr().out


def test_a_bad_scenario_name_is_one_line(capsys):
    spec = importlib.util.spec_from_file_location("faults_script", ROOT / "scripts" / "faults.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    try:
        script.main(["--scenarios", "meteor"])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err
    assert "unknown meteor" in err and "kill" in err
