"""The seed check (``infogan seeds``): seeds parsed as written, the bar applied at its edges, and a
smoke config checked on two seeds whose table (per seed, mean, sd, worst) is what MLflow holds."""
import numpy as np
import pytest
import cli_process
from conftest import REPO, SMOKE, own_store, subprocess_env

from pipeline import names, seeds, tracking
from pipeline.config import UsageError


def test_seeds_are_parsed_as_ranges_and_lists():
    assert seeds.parse_seeds("100-104") == [100, 101, 102, 103, 104]
    assert seeds.parse_seeds("0,2,7") == [0, 2, 7]
    assert seeds.parse_seeds("0-2, 7,1") == [0, 1, 2, 7]
    for bad in ("a", "5-3", "1-", ""):
        with pytest.raises(UsageError, match="--seeds takes whole numbers"):
            seeds.parse_seeds(bad)


def test_the_bar_holds_at_its_edges_and_fails_just_below_each():
    bar = seeds.Bar(gen=0.97, purity=0.9, perfect=0.95)
    edge = {names.GEN_ACCURACY: 0.97, names.MIN_CODE_PURITY: 0.9, names.DEMO_PERFECT_FRAC: 0.95}
    assert bar.met(edge)
    for key in edge:
        assert not bar.met({**edge, key: edge[key] - 1e-9})
    assert not bar.met({})


def _child_metrics(run_id: str) -> dict:
    return tracking.get_run(run_id).data.metrics


@pytest.fixture(scope="module")
def checked(tmp_path_factory, store_template, mnist_cache):
    """A seed check of the smoke config on seeds 0 and 1 (one process) in a store of its own:
    the table, what it printed, the store's folder and the overrides."""
    overrides = [f"data.cache_dir={mnist_cache}"]
    with own_store(tmp_path_factory.mktemp("seeds"), store_template) as folder:
        lines = []
        table = seeds.stage([SMOKE], overrides, [0, 1], log=lines.append)
        yield table, lines, folder, overrides


def test_each_seed_is_a_child_of_one_parent_and_its_row_is_its_mlflow_metrics(checked):
    table, lines, *_ = checked
    assert [r.seed for r in table.rows] == [0, 1] and [r.status for r in table.rows] == ["evaluated"] * 2
    parent = tracking.get_run(table.parent_run_id)
    assert parent.data.tags[names.STAGE] == "seeds" and parent.data.params["seeds"] == "0,1"
    assert parent.info.status == "FINISHED"
    assert tracking.experiment_name(parent.info.experiment_id) == seeds.EXPERIMENT
    for row in table.rows:
        run = tracking.get_run(row.run_id)
        assert run.data.tags[names.PARENT_RUN_ID] == table.parent_run_id
        assert run.data.params["seed"] == str(row.seed) and run.data.tags.get(names.EVALUATED_STEP)
        assert row.figures == {k: run.data.metrics[k] for k in seeds.FIGURES}
    # The printed table has one line per seed with its run and figures, as MLflow holds them.
    for row in table.rows:
        m = _child_metrics(row.run_id)
        line = next(line for line in lines if line.startswith(f"| {row.seed} | {row.run_id[:8]} |"))
        assert f"| {m[names.GEN_ACCURACY]:.4f} | {m[names.MIN_CODE_PURITY]:.3f} |" in line
        assert f"| {m[names.Q_ACCURACY]:.4f} | {m[names.FLD]:.1f} |" in line


def test_the_parent_logs_mean_sd_and_worst_of_the_seeds_mlflow_metrics(checked):
    table, lines, *_ = checked
    logged = tracking.get_run(table.parent_run_id).data.metrics
    per_seed = [_child_metrics(r.run_id) for r in table.rows]
    for key in seeds.FIGURES:
        values = np.array([m[key] for m in per_seed])
        worst = values.max() if key == names.FLD else values.min()
        assert logged[names.seed_summary(key, "worst")] == pytest.approx(worst, abs=1e-12)
        assert logged[names.seed_summary(key, "mean")] == pytest.approx(values.mean(), abs=1e-12)
        assert logged[names.seed_summary(key, "sd")] == pytest.approx(values.std(ddof=1), abs=1e-12)
    # The two seeds' Q and FLD differ, so "worst" is not just either seed's value.
    q = [m[names.Q_ACCURACY] for m in per_seed]
    assert q[0] != q[1] and logged[names.seed_summary(names.Q_ACCURACY, "worst")] == min(q)
    assert logged[names.SEEDS_EVALUATED] == 2 and logged[names.SEEDS_PASSED] == 0  # smoke runs learn nothing
    worst_line = next(line for line in lines if line.startswith("| worst |"))
    assert f"| {min(q):.4f} |" in worst_line and worst_line.endswith("| 0 of 2 |")
    stored = tracking.read_text(table.parent_run_id, names.SEEDS_TABLE_MD)
    assert stored == table.markdown() and worst_line in stored
    assert "0 of 2 seeds meet the bar" in "\n".join(lines)


def test_the_same_check_again_with_two_workers_reuses_every_seed(checked):
    table, _, home, smoke_overrides = checked
    trained = {r.run_id for r in table.rows}
    done = cli_process.run(["seeds", "-c", SMOKE, "--seeds", "0-1", "--workers", "2", *smoke_overrides],
                           subprocess_env(home), cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"going on with the seed check of run {table.parent_run_id}" in done.stdout
    for row in table.rows:
        assert f"[seed {row.seed}] seed {row.seed}: reusing finished run {row.run_id}" in done.stdout
    again = seeds.read_table(seeds.configs([SMOKE], smoke_overrides, [0, 1], seeds.EXPERIMENT), table.parent_run_id,
                             seeds.Bar())
    assert {r.run_id for r in again.rows} == trained and again.markdown() == table.markdown()
    train_runs = tracking.search_runs(seeds.EXPERIMENT, tracking.stage_filter("train"))
    assert len(train_runs) == 2
