"""Time to quality: train a config from scratch for several seeds, evaluating every epoch, and
print what the evaluations logged (training seconds, epoch, generated accuracy, Q accuracy, the
worst demo grade, FLD) plus when each seed first reached the target: gen_accuracy >= 0.95 and
every demo 10/10.

    .venv/bin/python benchmarks/time_to_quality.py [--seeds 0,1,2] [-c FILE] [key=value ...]
    .venv/bin/python benchmarks/time_to_quality.py --runs RUN_ID [RUN_ID ...]   # tabulate finished runs

Runs are logged to the experiment `time-to-quality` of the project's store (look at them with
`make ui`); the numbers printed are read back from MLflow, not from the training process.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import tracking, train  # noqa: E402
from pipeline.config import load_config, split_overrides  # noqa: E402

COLUMNS = ("perf/train_seconds", "perf/epoch", "eval/gen_accuracy", "eval/q_accuracy",
           "eval/demo_score_min", "eval/fld", "eval/fld_floor")
TARGET_ACCURACY = 0.95


def table(run_id: str) -> list[dict]:
    from mlflow import MlflowClient

    client = MlflowClient()
    by_step: dict[int, dict] = {}
    for key in COLUMNS:
        for m in client.get_metric_history(run_id, key):
            by_step.setdefault(m.step, {"step": m.step})[key] = m.value
    return [by_step[s] for s in sorted(by_step)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("-c", "--config", action="append", default=[])
    parser.add_argument("--runs", nargs="+", metavar="RUN_ID",
                        help="train nothing: tabulate these finished training runs (seed read from each)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    overrides = ["tracking.experiment=time-to-quality", "eval.every_epochs=1", *split_overrides(args.overrides)]
    tracking.configure()
    summary = []
    jobs = [(None, run_id) for run_id in args.runs] if args.runs else \
        [(int(s), None) for s in args.seeds.split(",")]
    for seed, run_id in jobs:
        if run_id is None:
            cfg = load_config(args.config, [*overrides, f"seed={seed}", f"tracking.run_name=ttq-seed{seed}"])
            run_id = train.stage(cfg, auto_resume=False)
        else:
            seed = int(tracking.get_run(run_id).data.params["seed"])
        rows = table(run_id)
        print(f"\nseed {seed} (run {run_id})")
        print("| train s | epoch | step | gen_accuracy | q_accuracy | demo_score_min | FLD |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        reached = None
        for r in rows:
            print(f"| {r.get('perf/train_seconds', float('nan')):.0f} | {r.get('perf/epoch', float('nan')):.0f} "
                  f"| {r['step']} | {r.get('eval/gen_accuracy', float('nan')):.3f} "
                  f"| {r.get('eval/q_accuracy', float('nan')):.3f} | {r.get('eval/demo_score_min', float('nan')):.0f} "
                  f"| {r.get('eval/fld', float('nan')):.1f} |")
            if reached is None and r.get("eval/gen_accuracy", 0) >= TARGET_ACCURACY \
                    and r.get("eval/demo_score_min", 0) == 10:
                reached = r
        floors = [r["eval/fld_floor"] for r in rows if "eval/fld_floor" in r]
        if floors:
            print(f"FLD floor (two real test splits of the same size): {floors[-1]:.1f}")
        final = rows[-1] if rows else {}
        summary.append((seed, run_id, reached, final))
    print("\n| seed | target reached at (train s / epoch) | final gen_accuracy | final q_accuracy | final demo min | final FLD |")
    print("|---:|---|---:|---:|---:|---:|")
    for seed, run_id, reached, final in summary:
        when = "not reached" if reached is None else \
            f"{reached['perf/train_seconds']:.0f} s / epoch {reached['perf/epoch']:.0f}"
        print(f"| {seed} | {when} | {final.get('eval/gen_accuracy', float('nan')):.3f} "
              f"| {final.get('eval/q_accuracy', float('nan')):.3f} | {final.get('eval/demo_score_min', float('nan')):.0f} "
              f"| {final.get('eval/fld', float('nan')):.1f} |")


if __name__ == "__main__":
    main()
