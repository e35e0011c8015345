"""`infogan run-experiments`: every config with every seed trained and evaluated, runs side by
side in processes of their own with --workers, one report of them, and finished runs reused."""
import yaml
import cli_process
from conftest import REPO, SMOKE, subprocess_env

from pipeline import names, tracking


def test_run_experiments_trains_side_by_side_then_reports_and_reuses_the_runs(home, smoke_overrides):
    smoke = yaml.safe_load(open(SMOKE))
    files = []
    for name, loss in (("ns", "non_saturating"), ("sat", "saturating")):
        config = {**smoke, "train": {**smoke["train"], "g_loss": loss, "threads": 0},
                  "tracking": {**smoke["tracking"], "run_name": name}}
        files.append(home / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump(config))
    command = ["run-experiments", *map(str, files), *smoke_overrides, "--seeds", "3", "--workers", "2",
               "--out", str(home / "report")]
    done = cli_process.run(command, subprocess_env(home), cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 of 2 runs to train, 2 at a time, 1 torch thread(s) each" in done.stdout
    for name in ("ns", "sat"):  # each trained in a lane of its own, its lines prefixed with its job
        assert f"[{name} s3] [1/1] {home / name}.yaml, seed 3: training" in done.stdout
    trained = tracking.search_runs("smoke", tracking.stage_filter("train"))
    assert sorted(r.info.run_name for r in trained) == ["ns s3", "sat s3"]
    for run in trained:
        assert run.info.status == "FINISHED" and run.data.params["train.threads"] == "1"
        assert run.data.tags[names.EVALUATED_STEP] == "16" and names.GEN_ACCURACY in run.data.metrics
    assert (home / "report" / "report.pdf").is_file()
    assert "| ns | 1 |" in (home / "report" / "report.md").read_text()

    again = cli_process.run(command, subprocess_env(home), cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 of 2 runs to train" in again.stdout and again.stdout.count("reusing finished run") == 2
    assert len(tracking.search_runs("smoke", tracking.stage_filter("train"))) == 2
