"""py-spy on a worker during the saturation phase, and the top frames of what it recorded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import StreamRecError

__all__ = ["top_frames"]


class _Profiler:
    """py-spy record on one process (raw collapsed stacks), stopped with SIGINT."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            raise StreamRecError("--profile needs py-spy (in the dev extra: pip install py-spy)")
        self.out = out
        self.log = open(out.with_suffix(".log"), "wb")
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
             "--nonblocking", "--output", str(out)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _frame_name(frame: str) -> str:
    """'handle (/x/site-packages/topologies/worker.py:123)' -> 'handle (topologies/worker.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", os.getcwd() + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


# Frames that wrap everything below them (thread and event-loop plumbing, the CLI entry):
# left out of the inclusive ranking, where they would sit on top and say nothing.
_WRAPPERS = ("threading.py", "concurrent/futures/", "asyncio/runners.py", "asyncio/base_events.py",
             "asyncio/events.py", "<frozen runpy>", "stream_rec/cli.py")


def top_frames(collapsed: Path, n: int = 15) -> dict[str, Any]:
    """Top functions by own samples and by inclusive samples from py-spy's raw output."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = [_frame_name(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + c
        for f in set(frames):
            if not any(w in f for w in _WRAPPERS):
                incl[f] = incl.get(f, 0) + c

    def top(d: dict[str, int]) -> list[dict[str, Any]]:
        best = sorted(d.items(), key=lambda kv: -kv[1])[:n]
        return [{"frame": f, "share": round(c / max(total, 1), 4)} for f, c in best]

    return {"samples": total, "own": top(own), "inclusive": top(incl)}
