"""Same numbers before and after a change of the step or the loop: train every shipped config
(the defaults and each file under configs/) briefly from a checkout, one thread, into a store of
its own, and write every metric point it logged (but perf/ and system/) to a JSON file; then
compare two such files point for point.

    .venv/bin/python benchmarks/metric_points.py dump /tmp/before-clone /tmp/before.json
    .venv/bin/python benchmarks/metric_points.py dump . /tmp/after.json
    .venv/bin/python benchmarks/metric_points.py compare /tmp/before.json /tmp/after.json

Each config trains 2 epochs of 30 steps, logging every 5, with a small evaluation after each
epoch (about 20 minutes for the ten shipped configs on a 2-core CPU). The checkout's own package
is imported (``PYTHONPATH``), so an older commit cloned elsewhere runs with this environment.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SHORT = ["train.epochs=2", "train.steps_per_epoch=30", "train.log_every=5", "train.threads=1",
         "eval.train_samples_per_code=50", "eval.demos=10", "eval.fld_samples=200", "eval.q_test_images=1000",
         "tracking.log_model=false", "tracking.system_metrics=false", "tracking.experiment=metric-points"]


def shipped(tree: Path) -> list[str]:
    return ["base"] + sorted(str(p.relative_to(tree)) for p in tree.glob("configs/**/*.yaml") if p.name != "base.yaml")


def dump(tree: Path, out: Path, extra: list[str]) -> None:
    store = out.with_name(out.stem + "-store")
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store}/mlflow.db"
    env = dict(os.environ, INFOGAN_HOME=str(store), MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(tree))
    for name in shipped(tree):
        files = [] if name == "base" else ["-c", str(tree / name)]
        command = [sys.executable, "-m", "pipeline", "train", *files, *SHORT, *extra,
                   f"tracking.run_name={name.replace('/', '_')}"]
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
        print(name, "trained" if done.returncode == 0 else f"FAILED: {done.stderr[-1500:]}", flush=True)
    import mlflow

    client = mlflow.MlflowClient(uri)
    points = {}
    for run in client.search_runs([client.get_experiment_by_name("metric-points").experiment_id]):
        points[run.info.run_name] = {
            key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                     key=lambda m: (m.step, m.timestamp))]
            for key in run.data.metrics if not key.startswith(("perf/", "system/"))}
    out.write_text(json.dumps(points, sort_keys=True))
    print(f"{sum(len(v) for run in points.values() for v in run.values())} points from {len(points)} runs -> {out}")


def compare(first: Path, second: Path) -> int:
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    total = equal = 0
    print("| config | points | equal | first difference |\n|---|---:|---:|---|")
    for run in sorted(set(a) | set(b)):
        ra, rb = a.get(run, {}), b.get(run, {})
        n = e = 0
        first_diff = ""
        for key in sorted(set(ra) | set(rb)):
            pa, pb = ra.get(key, []), rb.get(key, [])
            n += max(len(pa), len(pb))
            same = sum(x == y for x, y in zip(pa, pb))
            e += same
            if not first_diff and (same < max(len(pa), len(pb))):
                first_diff = key
        total, equal = total + n, equal + e
        print(f"| {run} | {n} | {e} | {first_diff or '–'} |")
    print(f"| all | {total} | {equal} | |")
    return 0 if equal == total else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="train every shipped config of a checkout briefly; write its metric points")
    d.add_argument("tree", type=Path, help="the checkout (its configs/ and its package)")
    d.add_argument("out", type=Path, help="the JSON file to write (its store goes beside it)")
    d.add_argument("overrides", nargs="*", help="key=value for every run")
    c = sub.add_parser("compare", help="compare two dumps point for point; exit 1 if any differs")
    c.add_argument("first", type=Path)
    c.add_argument("second", type=Path)
    a = parser.parse_args()
    if a.command == "dump":
        dump(a.tree.resolve(), a.out.resolve(), a.overrides)
        return 0
    return compare(a.first, a.second)


if __name__ == "__main__":
    sys.exit(main())
