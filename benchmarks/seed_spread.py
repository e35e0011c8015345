"""Seed spread: train config variants for several seeds each, in parallel worker processes, and
print how the final figures spread over the seeds (Q accuracy on real digits, generated accuracy,
failed demos, FLD). Made for choosing a default on a GPU, where one run of the default config
takes a minute or two and a dozen fit on one card side by side; it runs on a CPU too, slowly.

    .venv/bin/python benchmarks/seed_spread.py --seeds 0-4 --workers 10 --device cuda \\
        --variant e6 "train.epochs=6" --variant e8 "train.epochs=8" [-c FILE] [key=value ...]

Shared overrides (after the options) apply to every variant; each ``--variant NAME "k=v ..."``
adds its own. Every run is evaluated each epoch on the training budget and once at the end on
the evaluate stage's (eval.samples_per_code per code, eval.demos demos: pass eval.demos=1000 to
see rare failed demos). Nothing is logged to MLflow except the reference classifier, which is
found (or trained once) there as the evaluate stage does, or read from --classifier; the training
runs' figures go to the terminal and, one JSON object per evaluation, to --out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import hardware, loop, measure, reference, tracking  # noqa: E402
from pipeline.config import load_config, split_overrides  # noqa: E402
from pipeline.data import as_tensors, prepare  # noqa: E402


class Recorder(tracking.NullTracker):
    """A tracker that writes each evaluation as one JSON line (printed, and appended to ``out``
    as it happens) plus a short progress line on stderr, and logs nothing else."""

    def __init__(self, tag: str, out: str):
        self.tag, self.out = tag, out

    def log_metrics(self, metrics: dict, step: int) -> None:
        if "eval/gen_accuracy" in metrics:
            record(self.out, {"tag": self.tag, "step": step, **metrics})


def record(out: str, values: dict) -> None:
    line = json.dumps(values)
    print(line, flush=True)
    with open(out, "a") as f:  # one short line per write: appends from several workers do not interleave
        f.write(line + "\n")
    print(f"{values['tag']}: step {values['step']}{' (final)' if values.get('final') else ''}: gen "
          f"{values['eval/gen_accuracy']:.3f}, Q {values['eval/q_accuracy']:.3f}, demo min "
          f"{values['eval/demo_score_min']:.0f}, 10/10 {values['eval/demo_perfect_frac']:.0%}", file=sys.stderr, flush=True)


def load_classifier(path: str, device: torch.device) -> reference.Classifier:
    classifier = reference.Classifier().to(device)
    classifier.load_state_dict(torch.load(path, map_location=device))
    return classifier.eval()


def worker(tag: str, files: list[str], overrides: list[str], classifier_path: str, out: str) -> None:
    cfg = load_config(files, overrides)
    arrays, _ = prepare(cfg.data, log=lambda s: None)
    device = hardware.pick_device(cfg.train.device)
    tensors = as_tensors(arrays, device)
    evaluator = measure.Evaluator(cfg, load_classifier(classifier_path, device), tensors)
    with tempfile.TemporaryDirectory() as tmp:
        result = loop.fit(cfg, Recorder(tag, out), Path(tmp) / "last.pt", arrays=arrays,
                           evaluation=loop.Evaluation(evaluator), log=lambda s: None)
    final = evaluator(result.g, result.d, full=True).as_metrics()
    record(out, {"tag": tag, "step": result.step, "final": True, "demos": cfg.eval.demos, **final})


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,2,7")
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "OVERRIDES"),
                        help='a variant and its overrides in one string, e.g. e8 "train.epochs=8"')
    parser.add_argument("--workers", type=int, default=2, help="runs at a time")
    parser.add_argument("--device", default="auto", help="train.device of every run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("-c", "--config", action="append", default=[])
    parser.add_argument("--out", default="seed_spread.jsonl", help="every evaluation, one JSON per line")
    parser.add_argument("--classifier", metavar="FILE",
                        help="the reference classifier's state dict (classifier.pt of its MLflow run): "
                             "use it instead of looking it up in the store")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.worker:
        tag, overrides, classifier_path, out = args.worker
        return worker(tag, args.config, json.loads(overrides), classifier_path, out)

    shared = [*split_overrides(args.overrides), f"train.device={args.device}", f"train.threads={args.threads}"]
    variants = args.variant or [("default", "")]
    jobs = [(f"{name}/seed{seed}", [*shared, *split_overrides([extra]), f"seed={seed}"])
            for name, extra in variants for seed in seeds_of(args.seeds)]
    for _, overrides in jobs:
        load_config(args.config, overrides)  # a bad override fails here, not in every worker

    cfg = load_config(args.config, shared)
    arrays, info = prepare(cfg.data)
    tensors = as_tensors(arrays, hardware.pick_device(cfg.train.device))
    tmp = tempfile.TemporaryDirectory()
    if args.classifier:
        classifier_path = args.classifier
        accuracy = reference.test_accuracy(load_classifier(classifier_path, tensors["test_x"].device), tensors)
    else:
        tracking.configure()
        classifier, _, accuracy = reference.get_classifier(cfg, tensors, info.sha256)
        classifier_path = str(Path(tmp.name) / "classifier.pt")
        torch.save(classifier.state_dict(), classifier_path)
    print(f"{len(jobs)} runs, {args.workers} at a time; reference classifier test accuracy {accuracy:.4f}",
          flush=True)

    finals: dict[str, dict] = {}
    start, pending, running = time.perf_counter(), list(jobs), []
    while pending or running:
        while pending and len(running) < args.workers:
            tag, overrides = pending.pop(0)
            command = [sys.executable, __file__, *sum((["-c", f] for f in args.config), []),
                       "--worker", tag, json.dumps(overrides), classifier_path, args.out]
            running.append((tag, subprocess.Popen(command, stdout=subprocess.PIPE, text=True)))
        time.sleep(1)
        for tag, proc in [r for r in running if r[1].poll() is not None]:
            running.remove((tag, proc))
            for line in proc.stdout.read().splitlines():  # the worker appended them to --out already
                values = json.loads(line)
                if values.get("final"):
                    finals[tag] = values
            status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            print(f"{tag}: {status} at {time.perf_counter() - start:.0f} s", flush=True)

    print("\n| variant | seed | gen accuracy | Q accuracy | demo min | failed demos | FLD |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for tag, _ in jobs:
        if tag in finals:
            r = finals[tag]
            failed = round((1 - r["eval/demo_perfect_frac"]) * r["demos"])
            print(f"| {tag.split('/')[0]} | {tag.split('seed')[-1]} | {r['eval/gen_accuracy']:.4f} "
                  f"| {r['eval/q_accuracy']:.4f} | {r['eval/demo_score_min']:.0f} | {failed} "
                  f"| {r.get('eval/fld', float('nan')):.1f} |")
    print("\n| variant | runs | Q mean | Q min | gen min | runs with a failed demo |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _ in variants:
        rows = [r for tag, r in finals.items() if tag.split("/")[0] == name]
        if rows:
            q = np.array([r["eval/q_accuracy"] for r in rows])
            print(f"| {name} | {len(rows)} | {q.mean():.4f} | {q.min():.4f} "
                  f"| {min(r['eval/gen_accuracy'] for r in rows):.4f} "
                  f"| {sum(r['eval/demo_perfect_frac'] < 1 for r in rows)} |")
    tmp.cleanup()


if __name__ == "__main__":
    main()
