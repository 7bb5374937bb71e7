"""scripts/bench_pairs.py runs two bench configurations in the order A B B A (a linear drift of
the machine cancels) and reports their means and B / A."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_pairs.py"

# A fake `stream-rec` that logs its call and prints a bench JSON whose CPU grows with every call
# (a drifting machine) plus the arm's own cost.
FAKE = """#!{python}
import json, sys, pathlib
calls = pathlib.Path({calls!r})
n = len(calls.read_text().splitlines()) if calls.exists() else 0
with calls.open("a") as f:
    f.write({arm!r} + " " + " ".join(sys.argv[1:]) + "\\n")
print("progress")
print(json.dumps({{"cpu_s_per_1k_events": {cost} + 0.01 * n, "events_per_s": 1000.0,
                  "baseline_events_per_s": 4000.0, "ratio": 0.25, "rss_mb": 300.0,
                  "hr@20": 50.0, "mrr@20": 20.0}}))
"""


def _checkout(tmp: Path, arm: str, cost: float, calls: Path) -> Path:
    exe = tmp / arm / ".venv" / "bin" / "stream-rec"
    exe.parent.mkdir(parents=True)
    exe.write_text(FAKE.format(python=sys.executable, calls=str(calls), arm=arm, cost=cost))
    exe.chmod(0o755)
    return tmp / arm


def test_runs_a_b_b_a_and_the_drift_cancels(tmp_path):
    calls = tmp_path / "calls.txt"
    a, b = _checkout(tmp_path, "a", 0.10, calls), _checkout(tmp_path, "b", 0.10, calls)
    out = tmp_path / "pairs.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--a-dir",
            str(a),
            "--b-dir",
            str(b),
            "--logs",
            str(tmp_path / "logs"),
            "--out",
            str(out),
            "--",
            "--dataset",
            "diginetica",
            "--no-micro",
        ],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=True,
    )
    lines = calls.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["a", "b", "b", "a"]
    assert all(
        line.split()[1:] == ["bench", "--dataset", "diginetica", "--no-micro"] for line in lines
    )
    result = json.loads(out.read_text())
    # the same cost on a machine that slows by 0.01 per run: equal means, B / A = 1
    assert abs(result["b_over_a"]["cpu_s_per_1k_events"] - 1.0) < 1e-9
    assert "B / A" in done.stdout


def test_the_same_configuration_twice_is_refused_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--", "--no-micro"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "A and B are the same" in done.stderr.strip().splitlines()[-1]
