"""Per-epoch checkpoints: a run stopped after any epoch and resumed ends with the same model as
a run that was never stopped; `stream-rec train --resume DIR` does it from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from stream_rec.errors import ConfigError  # noqa: E402
from stream_rec.model import build_vocab  # noqa: E402
from stream_rec.model.checkpoint import CHECKPOINT, load_checkpoint  # noqa: E402

from .tiny_model import successor_corpus, train_tiny  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Distillation and sampled negatives on, so every random stream a step uses is in the checkpoint.
RUN = dict(epochs=4, lr_decay_every=2, patience=0, distill=0.5, negatives=40)


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def corpus():
    sessions, ids = successor_corpus(300, 80, mixed=True)
    return sessions, build_vocab(ids)


def _stop_after(epoch: int):
    def progress(line: str) -> None:
        if line.startswith(
            f"epoch {epoch + 1}/"
        ):  # the next epoch's result: its checkpoint is not written
            raise Stop(line)

    return progress


@pytest.mark.parametrize("stopped_after", [1, 3])
def test_resumed_run_ends_with_the_same_model(corpus, tmp_path, stopped_after):
    whole, whole_metrics = train_tiny(*corpus, **RUN)
    run = tmp_path / "run"
    with pytest.raises(Stop):
        train_tiny(*corpus, progress=_stop_after(stopped_after), checkpoint_dir=str(run), **RUN)
    assert load_checkpoint(run, len(corpus[1])).epoch == stopped_after
    lines: list[str] = []
    resumed, metrics = train_tiny(*corpus, progress=lines.append, checkpoint_dir=str(run), **RUN)
    assert any(
        line.startswith(f"resumed from {run}: {stopped_after} epochs done") for line in lines
    )
    for name, want in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], want, atol=0, rtol=0, msg=name)
    assert [h["hr@20"] for h in metrics.history] == [h["hr@20"] for h in whole_metrics.history]
    assert (metrics.best_epoch, metrics.epochs_run) == (
        whole_metrics.best_epoch,
        whole_metrics.epochs_run,
    )


def test_a_finished_run_resumes_straight_to_the_refit(corpus, tmp_path):
    run = tmp_path / "run"
    first, _ = train_tiny(*corpus, checkpoint_dir=str(run), **RUN)
    lines: list[str] = []
    again, _ = train_tiny(*corpus, progress=lines.append, checkpoint_dir=str(run), **RUN)
    assert not any(line.startswith("epoch ") for line in lines)
    for name, want in first.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], want, atol=0, rtol=0, msg=name)


def test_a_checkpoint_of_other_data_is_refused(corpus, tmp_path):
    run = tmp_path / "run"
    train_tiny(*corpus, checkpoint_dir=str(run), **{**RUN, "epochs": 1})
    other, ids = successor_corpus(200, 50)
    with pytest.raises(ConfigError, match="checkpoint .* is for 80 items but the data gives 50"):
        train_tiny(other, build_vocab(ids), checkpoint_dir=str(run), **RUN)
    (run / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        train_tiny(*corpus, checkpoint_dir=str(run), **RUN)


def test_cli_resume_continues_a_stopped_run_and_records_its_time(tmp_path, capsys, monkeypatch):
    from stream_rec.cli import main

    monkeypatch.delenv("STREAM_REC_BUNDLES_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # a resume that ignored the run's --bundles-dir would write here

    run, bundles = tmp_path / "run", tmp_path / "out"
    args = [
        "train",
        "--events",
        "3000",
        "--users",
        "200",
        "--items",
        "150",
        "--epochs",
        "2",
        "--threads",
        "1",
        "--order",
        "chronological",
        "--bundles-dir",
        str(bundles),
    ]
    assert main([*args, "--checkpoint-dir", str(run)]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    options = json.loads((run / "options.json").read_text())
    chosen = (options["epochs"], options["order"], options["refit_rates"])
    assert chosen == (2, "chronological", None)
    assert options["bundles_dir"] == str(bundles.resolve())
    # the finished run refits again with another candidate rate, which is its option from now on;
    # without --bundles-dir its bundle goes where the run started writing
    again = ["--threads", "1", "--refit-rates", "5e-3"]
    assert main(["train", "--resume", str(run), *again, "--refit-tail", "1"]) == 0
    options = json.loads((run / "options.json").read_text())
    assert (options["refit_rates"], options["refit_tail"]) == ([5e-3], 1.0)
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert Path(second).parent == bundles and not (tmp_path / "bundles").exists()
    manifests = [
        json.loads((bundles / p / "manifest.json").read_text())
        for p in (first, second)
    ]
    training = [m["training"] for m in manifests]
    runs = [m["metrics"]["epochs_run"] for m in manifests]  # epochs run: the manifest's metrics
    assert runs[0] == runs[1] == 2
    assert training[0]["epoch_seconds"] == training[1]["epoch_seconds"] > 0
    assert training[1]["epoch_cpu_seconds"] > 0
    orders = {t["hyperparameters"]["order"] for t in training}
    assert orders == {"chronological"}
    # the extra refit rate is a candidate on the validation halves beside the recipe's two
    assert [t["hyperparameters"]["refit_rates"] for t in training] == [[], [5e-3]]
    halves = [set(t["refit"]["half_scores"]) for t in training]
    assert {"0.001 x1", "0.0001 x1"} <= halves[0] and "0.005 x1" not in halves[0]
    assert {"0.005 x1", "0.001 x1", "0.0001 x1"} <= halves[1]
    assert training[1]["refit"]["lr"] in (1e-4, 5e-3, 1e-3)
    # and it learned as many of the newest training sessions as the slice has, first
    assert [t["hyperparameters"]["refit_tail"] for t in training] == [0.0, 1.0]
    assert training[0]["refit"]["tail_sessions"] == 0
    assert training[1]["refit"]["tail_sessions"] == training[1]["valid_sessions"] > 0
    assert (
        main(["train", "--resume", str(tmp_path / "nothing"), "--bundles-dir", str(bundles)]) != 0
    )
    assert "no options.json there" in capsys.readouterr().err
