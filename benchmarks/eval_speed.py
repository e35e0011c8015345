"""What the evaluation after each training epoch costs, part by part, against the epoch it follows:
a finished run's generator and Q measured with the run's ``eval`` settings (the training budget),
in fp32 and in the run's training precision, median of ``--repeats`` (run it alone).

    .venv/bin/python benchmarks/eval_speed.py RUN_ID [--repeats 3] [--threads 0]

Parts: ``mapping`` (G's samples of every code, read by the classifier), ``q`` (Q on the real test
digits), ``demos`` (the graded 10x10 demos: drawn and read), ``fld`` (classifier features of the
FLD's samples and the distance), ``spread`` (the style spread); ``whole`` is one call of the
evaluator as the training loop makes it. The epoch's seconds come from the run's own
``perf/train_seconds`` over its epochs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipeline import hardware, measure, metrics, names, runs, tracking  # noqa: E402
from pipeline.data import as_tensors, prepare  # noqa: E402
from pipeline.reference import features, get_classifier, predict  # noqa: E402


def parts(evaluator: measure.Evaluator, g, d) -> dict[str, float]:
    """Seconds of each part of one in-training evaluation, done as measure.measure does it."""
    e, tensors, classifier = evaluator.cfg.eval, evaluator.tensors, evaluator.classifier
    generator = torch.Generator().manual_seed(0)
    out = {}
    t = time.perf_counter()
    c = torch.arange(g.code_dim).repeat_interleave(e.train_samples_per_code)
    images = measure.generate(g, torch.randn(c.shape[0], g.noise_dim, generator=generator), c)
    mapping = metrics.map_codes(c.numpy(), predict(classifier, images).numpy(), g.code_dim)
    out["mapping"] = time.perf_counter() - t
    t = time.perf_counter()
    measure.q_codes(d, tensors["test_x"][:e.q_test_images])
    out["q"] = time.perf_counter() - t
    t = time.perf_counter()
    if len(set(mapping.digit_of_code.tolist())) >= 10:
        z, cd = measure.demo_inputs(e.demos, g.noise_dim, mapping.code_of_digit, generator, torch.device("cpu"))
        predict(classifier, measure.generate(g, z, cd))
    out["demos"] = time.perf_counter() - t
    t = time.perf_counter()
    if e.fld_samples:
        metrics.frechet_distance(features(classifier, images[:e.fld_samples]), evaluator.reference.features)
    out["fld"] = time.perf_counter() - t
    t = time.perf_counter()
    measure.style_spread(images, c, evaluator.real_spread)
    out["spread"] = time.perf_counter() - t
    t = time.perf_counter()
    evaluator(g, d)
    out["whole"] = time.perf_counter() - t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_id")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = one per core)")
    args = parser.parse_args()
    tracking.configure()
    hardware.set_threads(args.threads)
    trained = runs.load_run(args.run_id, log=lambda line: None)
    cfg = trained.cfg
    arrays, info = prepare(cfg.data, log=lambda line: None)
    tensors = as_tensors(arrays, torch.device("cpu"))
    classifier, _, _ = get_classifier(cfg, tensors, info.sha256, log=print)
    evaluator = measure.Evaluator(cfg, classifier, tensors)
    run = tracking.get_run(args.run_id)
    epoch_s = run.data.metrics[names.PERF_TRAIN_SECONDS] / cfg.train.epochs
    precision = hardware.resolve_precision(cfg.train.precision, torch.device("cpu"))
    print(f"run {args.run_id} ({cfg.model.arch}): an epoch trains in {epoch_s:.1f} s; evaluation budget: "
          f"{cfg.eval.train_samples_per_code} samples per code, {cfg.eval.demos} demos, FLD on "
          f"{cfg.eval.fld_samples}, Q on {cfg.eval.q_test_images or 10000} test digits; "
          f"{torch.get_num_threads()} threads")
    rows = {}
    for variant in dict.fromkeys(("fp32", precision)):
        timings = []
        for _ in range(args.repeats):
            with hardware.autocast(variant, torch.device("cpu")):
                timings.append(parts(evaluator, trained.g, trained.d))
        rows[variant] = {k: statistics.median(t[k] for t in timings) for k in timings[0]}
    keys = list(next(iter(rows.values())))
    print("| precision | " + " | ".join(f"{k} s" for k in keys) + " | whole / epoch |")
    print("|---|" + "---:|" * (len(keys) + 1))
    for variant, row in rows.items():
        print(f"| {variant} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + f" | {row['whole'] / epoch_s:.1%} |")


if __name__ == "__main__":
    main()
