"""Compare two `stream-rec bench` configurations in one sitting, in the order A B B A.

Two code versions (``--a-dir``/``--b-dir``: checkouts, each with its own ``.venv``) or two bundles
(``--a-bundle``/``--b-bundle``), or both; the arguments after ``--`` go to every run. The machine
drifts over minutes: runs in the order A B A B put every B after a slower machine and read the
drift as B's cost (session 21 measured a 6% "regression" that way; A B B A found none). Each
round is A B B A, which cancels a linear drift; ``--rounds`` repeats it.

    python scripts/bench_pairs.py --a-dir ../old --b-dir . --rounds 1 -- \\
        --bundle bundles/B --dataset diginetica --no-micro

Prints each run's figures, then the means and B / A; ``--out F`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from statistics import mean

FIGURES = ("cpu_s_per_1k_events", "events_per_s", "baseline_events_per_s", "ratio", "rss_mb")
QUALITY = ("hr@20", "mrr@20")


def order(rounds: int) -> list[str]:
    """A B B A per round."""
    return ["A", "B", "B", "A"] * rounds


def run_once(directory: Path, bundle: str | None, args: list[str], log: Path) -> dict:
    exe = directory / ".venv" / "bin" / "stream-rec"
    if not exe.exists():
        raise SystemExit(
            f"{exe} does not exist: expected a checkout with its .venv (bash scripts/bootstrap.sh)"
        )
    cmd = [str(exe), "bench", *(["--bundle", bundle] if bundle else []), *args]
    with log.open("w") as err:
        out = subprocess.run(cmd, cwd=directory, stdout=subprocess.PIPE, stderr=err, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {out.returncode}; its log: {log}")
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"{' '.join(cmd)} printed no JSON; its log: {log}")
    return json.loads(lines[-1])


def summary(runs: list[tuple[str, dict]]) -> dict:
    by = {arm: [r for a, r in runs if a == arm] for arm in ("A", "B")}
    means = {
        arm: {f: mean(float(r[f]) for r in rs) for f in FIGURES if all(f in r for r in rs)}
        for arm, rs in by.items()
    }
    quality = {
        arm: sorted({tuple(r.get(q) for q in QUALITY) for r in rs}) for arm, rs in by.items()
    }
    return {
        "order": [a for a, _ in runs],
        "runs": [{"arm": a, **{f: r.get(f) for f in (*FIGURES, *QUALITY)}} for a, r in runs],
        "mean": means,
        "b_over_a": {f: means["B"][f] / means["A"][f] for f in means["A"] if means["A"][f]},
        "quality": quality,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rest: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a-dir", type=Path, default=Path("."), help="checkout of A (default: here)")
    p.add_argument("--b-dir", type=Path, default=Path("."), help="checkout of B (default: here)")
    p.add_argument("--a-bundle", help="bundle A serves (default: the bench's own)")
    p.add_argument("--b-bundle", help="bundle B serves (default: the bench's own)")
    p.add_argument("--rounds", type=int, default=1, help="A B B A rounds (default 1)")
    p.add_argument(
        "--logs", type=Path, default=Path("var/bench-pairs"), help="where each run's stderr goes"
    )
    p.add_argument("--out", type=Path, help="write the summary here as JSON")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1; got {args.rounds}")
    if args.a_dir.resolve() == args.b_dir.resolve() and args.a_bundle == args.b_bundle:
        p.error("A and B are the same: give --a-dir/--b-dir or --a-bundle/--b-bundle that differ")
    args.logs.mkdir(parents=True, exist_ok=True)
    runs: list[tuple[str, dict]] = []
    for i, arm in enumerate(order(args.rounds)):
        directory, bundle = (
            (args.a_dir, args.a_bundle) if arm == "A" else (args.b_dir, args.b_bundle)
        )
        print(f"[bench-pairs] run {i + 1}/{4 * args.rounds}: {arm}", file=sys.stderr, flush=True)
        runs.append(
            (arm, run_once(directory.resolve(), bundle, rest, args.logs / f"run{i + 1}-{arm}.err"))
        )
    result = summary(runs)
    for r in result["runs"]:
        print("  ".join(f"{k} {v}" for k, v in r.items()))
    for arm in ("A", "B"):
        print(f"mean {arm}: " + ", ".join(f"{k} {v:.4g}" for k, v in result["mean"][arm].items()))
    print("B / A: " + ", ".join(f"{k} {v:.3f}" for k, v in result["b_over_a"].items()))
    if len(result["quality"]["A"]) > 1 or len(result["quality"]["B"]) > 1:
        print("note: an arm's quality differs between its runs", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
