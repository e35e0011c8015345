"""What the reference classifier costs to train, and what it then reads: seconds and test
accuracy for each training recipe, one after another in this process (run it alone).

    .venv/bin/python benchmarks/classifier_speed.py [--recipes 5:128:fp32,3:256:bf16] [--lr 0.003]
        [--threads 0] [data.cache_dir=...]

A recipe is ``epochs:batch:precision``; the learning rate is the peak of the one-cycle schedule
(``eval.classifier_lr``), the same for every recipe unless ``--lr`` says otherwise. The project's
recipe is ``eval.classifier_epochs`` at batch 128 in ``eval.classifier_precision``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import hardware  # noqa: E402
from pipeline.config import load_config, split_overrides  # noqa: E402
from pipeline.data import as_tensors, prepare  # noqa: E402
from pipeline.reference import CLASSIFIER_SEED, train_classifier  # noqa: E402

DEFAULT_RECIPES = "5:128:fp32,5:128:bf16,3:128:bf16,3:256:bf16,2:128:bf16"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=DEFAULT_RECIPES, help=f"comma-separated epochs:batch:precision "
                                                                     f"(default {DEFAULT_RECIPES})")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default eval.classifier_lr)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = one per core)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.cache_dir=PATH")
    args = parser.parse_args()
    cfg = load_config([], split_overrides(args.overrides))
    hardware.set_threads(args.threads)
    arrays, _ = prepare(cfg.data, log=lambda line: None)
    tensors = as_tensors(arrays, hardware.pick_device("cpu"))
    lr = args.lr if args.lr is not None else cfg.eval.classifier_lr
    print(f"reference classifier, peak lr {lr}, {hardware.torch.get_num_threads()} threads, "
          f"bf16 in hardware: {hardware.bf16_is_fast(hardware.pick_device('cpu'))}")
    print("| epochs | batch | precision | seconds | test accuracy | per epoch |")
    print("|---:|---:|---|---:|---:|---|")
    for recipe in args.recipes.split(","):
        epochs, batch, precision = recipe.split(":")
        curve: list[float] = []
        start = time.perf_counter()
        _, accuracy = train_classifier(tensors, int(epochs), int(batch), lr, CLASSIFIER_SEED,
                                       lambda epoch, acc: curve.append(acc), precision=precision)
        seconds = time.perf_counter() - start
        print(f"| {epochs} | {batch} | {precision} | {seconds:.1f} | {accuracy:.4f} | "
              f"{' '.join(f'{a:.4f}' for a in curve)} |", flush=True)


if __name__ == "__main__":
    main()
