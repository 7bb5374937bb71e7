"""README's "A session with separate processes", executed: the commands are read out of
README.md's code block, so the README cannot drift from the code.

What the test changes, and only this: the broker's port (a free one instead of 19092, in every
line), the training size (a tiny model instead of the default minutes-long one), ``tail`` stops
after its first record (``--max 1``), and bundles, state and logs live in a temporary directory.
After a background command it waits for what a reader would wait for: the broker's port, the
worker's status page.
"""

from __future__ import annotations

import http.client
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from stream_rec.kafka.probe import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CLI = ".venv/bin/stream-rec"
TINY_TRAINING = ["--events", "6000", "--epochs", "1", "--users", "150", "--items", "300", "--threads", "1"]


def readme_session() -> list[str]:
    """The command lines of the code block after "A session with separate processes"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"A session with separate processes:\s*```bash\n(.*?)```", text, re.S)
    assert block, "README.md lost its separate-processes session"
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def test_the_session_names_every_door():
    commands = [line.split()[1] for line in readme_session() if line.startswith(CLI)]
    assert commands == ["broker", "train", "worker", "produce", "tail"]


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the broker exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def _wait_for_stats(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the worker exited:\n{log.read_text(errors='replace')[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as r:
                if r.status == 200:
                    return
        except (OSError, http.client.HTTPException):  # not up yet (a self-connect reads back junk)
            pass
        time.sleep(0.5)
    raise AssertionError(f"the worker's /stats did not answer after {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_readme_session_runs(tmp_path):
    port, worker_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAM_REC_")},
           "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
           "STREAM_REC_WORKER_PORT": str(worker_port), "STREAM_REC_MODEL_POLL_S": "0"}
    background: list[subprocess.Popen[bytes]] = []
    outputs: dict[str, str] = {}
    try:
        for line in readme_session():
            line = line.replace("19092", str(port))
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                env[name] = value
                continue
            in_background = line.endswith("&")
            argv = shlex.split(line.rstrip("&"))
            assert argv[0] == CLI, f"not a stream-rec command: {line}"
            command = argv[1]
            argv = [sys.executable, "-m", "stream_rec.cli", *argv[1:]]
            if command == "train":
                argv += TINY_TRAINING
            if command == "tail":
                argv += ["--max", "1"]
            log = tmp_path / f"{command}.log"
            if in_background:
                with open(log, "wb") as out:
                    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
                background.append(proc)
                if command == "broker":
                    _wait_for_port(port, proc)
                elif command == "worker":
                    _wait_for_stats(worker_port, proc, log)
                continue
            done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, timeout=300)
            assert done.returncode == 0, f"{line}\n{done.stderr.decode(errors='replace')[-3000:]}"
            outputs[command] = done.stdout.decode()
    finally:
        for proc in reversed(background):
            _stop(proc)
    assert Path(tmp_path / outputs["train"].strip().splitlines()[-1]).is_dir()  # the bundle it wrote
    user = re.search(r"--user (\S+)", " ".join(readme_session())).group(1)
    line = outputs["tail"].strip().splitlines()[-1]
    assert line.split()[1] == user, line  # "HH:MM:SS <user> after <event> -> items ..."
    assert " -> " in line and "items" in line, line
