"""What a finished run keeps on disk (tracking.checkpoint_keep) and `infogan gc`."""
from __future__ import annotations

from mlflow import MlflowClient

from conftest import SMOKE
from pipeline import checkpoint, cli, evaluate, runs, train
from pipeline.config import load_config


def logged_checkpoints(run_id: str) -> list[str]:
    return [a.path for a in MlflowClient().list_artifacts(run_id, "checkpoints")]


def test_a_finished_run_keeps_one_checkpoint_and_gc_clears_what_nothing_needs(home, smoke_overrides, capsys):
    kept = train.stage(load_config([SMOKE], smoke_overrides), log=lambda m: None)
    assert logged_checkpoints(kept) == ["checkpoints/last.pt"]
    assert not (home / "checkpoints" / kept).exists()  # the logged copy is the only one
    assert runs.load_checkpoint(load_config(), kept)["step"] == 16
    evaluate.evaluate_run(kept, log=lambda m: None)  # reads the logged copy

    local_only = train.stage(load_config([SMOKE], smoke_overrides + ["tracking.checkpoint_keep=none", "seed=1"]),
                           log=lambda m: None)
    assert logged_checkpoints(local_only) == []
    assert (home / "checkpoints" / local_only / checkpoint.CHECKPOINT_FILE).is_file()

    unknown = home / "checkpoints" / "0123456789abcdef0123456789abcdef"  # a run no store knows
    unknown.mkdir(parents=True)
    (unknown / checkpoint.CHECKPOINT_FILE).write_bytes(b"x" * 1000)
    client = MlflowClient()
    stopped = client.create_run(client.get_experiment_by_name("smoke").experiment_id).info.run_id
    resumable = home / "checkpoints" / stopped
    resumable.mkdir()
    (resumable / checkpoint.CHECKPOINT_FILE).write_bytes(b"y" * 10)
    client.set_terminated(stopped, "KILLED")

    capsys.readouterr()
    assert cli.main(["gc"]) == 0  # a dry run
    listing = capsys.readouterr().out
    assert f"{local_only}" in listing and "would remove  finished; this is its only checkpoint" in listing
    assert "would remove  no such run in the tracking store" in listing
    assert f"kept          killed; resumable with: infogan train --resume {stopped}" in listing
    assert (home / "checkpoints" / local_only).exists() and unknown.exists()

    assert cli.main(["gc", "--yes"]) == 0
    assert "freed" in capsys.readouterr().out
    assert not (home / "checkpoints" / local_only).exists() and not unknown.exists()
    assert resumable.exists()
