"""Standard two-file splits: named ones checked against SOURCE.md, any other from --data-dir."""

from pathlib import Path

import pytest

from stream_rec.cli import main
from stream_rec.datasets.diginetica.files import data_root
from stream_rec.datasets.splits import NOWPLAYING_STATS, load_named_split, split_dir
from stream_rec.errors import ConfigError, DataError
from stream_rec.serving.bundle import ModelBundle


def _write_split(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    train = ["1 2 3", "2 3", "3 4 1", "4 2", "1 3 2 4"]
    (d / "train_sessions.txt").write_text("\n".join(train) + "\n")
    # Test session [2, 3, 1] written as SR-GNN does: longest prefix first.
    (d / "test_prefixes.tsv").write_text("prefix\ttarget\n2 3\t1\n2\t3\n")
    return d


def test_a_sessions_split_is_read_from_its_directory_and_reported(tmp_path):
    named = load_named_split("sessions", data_dir=_write_split(tmp_path / "mine"))
    assert not named.checked
    assert named.stats.train_sessions == 5 and named.stats.test_prefixes == 2
    assert named.stats.items == 4 and named.split.test_sessions == [["2", "3", "1"]]


def test_sessions_needs_a_directory_and_names_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="--data-dir"):
        split_dir("sessions")
    with pytest.raises(ConfigError, match="expected one of"):
        split_dir("tmall")
    assert split_dir("nowplaying", tmp_path) == tmp_path / "nowplaying"
    # A named split whose numbers differ from its SOURCE.md is refused, each number named.
    _write_split(tmp_path / "nowplaying")
    with pytest.raises(DataError, match="train_sessions: expected 128,077, got 5"):
        load_named_split("nowplaying", tmp_path)


def test_nowplaying_matches_its_source_md():
    d = data_root() / "nowplaying"
    if not (d / "train_sessions.txt").is_file():
        pytest.skip(f"{d} not present")
    named = load_named_split("nowplaying")
    assert named.checked and named.stats == NOWPLAYING_STATS


def test_train_and_evaluate_a_sessions_split_from_the_cli(tmp_path, capsys):
    data = _write_split(tmp_path / "split")
    common = ["--dataset", "sessions", "--data-dir", str(data), "--bundles-dir", str(tmp_path / "b")]
    assert main(["train", *common, "--epochs", "1", "--dim", "8", "--threads", "1", "--negatives", "2"]) == 0
    bundle = capsys.readouterr().out.strip().splitlines()[-1]
    manifest = ModelBundle.load(bundle).manifest
    assert manifest["training"]["data"] == "sessions"
    assert manifest["training"]["hyperparameters"]["negatives"] == 2
    assert main(["evaluate", *common, "--bundle", bundle, "--json"]) == 0
    assert '"prefixes":2' in capsys.readouterr().out
