"""What a run's codes draw, and in which style: for each code, the digits the reference classifier
reads in its samples, with each digit's mean stroke width (px) and slant (degrees). Where two
codes share two digits (`evaluate`'s mixed-code warning), this shows what still tells the codes
apart, which is what Q learned to read instead of the digit.

    .venv/bin/python benchmarks/code_styles.py RUN_ID [RUN_ID ...] [--samples 1000] [--all]

Reads each run's checkpoint (local or logged) and the cached reference classifier; trains
nothing. Without --all, only codes whose most frequent digit is under 80% of their samples.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import latents, metrics, reference, runs  # noqa: E402
from pipeline.data import as_tensors, prepare  # noqa: E402


def code_rows(run_id: str, samples: int, every_code: bool) -> list[tuple]:
    """(code, digit, share of the code's samples, mean width, mean slant) for the top two digits."""
    trained = runs.load_run(run_id, log=lambda _: None)
    arrays, info = prepare(trained.cfg.data, log=lambda _: None)
    tensors = as_tensors(arrays, torch.device("cpu"))
    classifier, _, _ = reference.get_classifier(trained.cfg, tensors, info.sha256, log=lambda _: None)
    generator = torch.Generator().manual_seed(trained.cfg.seed)
    rows = []
    for code in range(trained.g.code_dim):
        z = torch.randn(samples, trained.g.noise_dim, generator=generator)
        with torch.no_grad():
            images = trained.g(z, latents.one_hot(torch.full((samples,), code), trained.g.code_dim))
        digits = reference.predict(classifier, images).numpy()
        counts = np.bincount(digits, minlength=10)
        if counts.max() >= metrics.MIXED_BELOW * samples and not every_code:
            continue
        pixels = images.squeeze(1).numpy()
        width, slant = metrics.stroke_width(pixels), metrics.slant_degrees(pixels)
        for digit in np.argsort(-counts)[:2]:
            drawn = digits == digit
            if drawn.any():
                rows.append((code, int(digit), counts[digit] / samples, width[drawn].mean(), slant[drawn].mean()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_ids", nargs="+")
    parser.add_argument("--samples", type=int, default=1000, help="samples per code (default 1000)")
    parser.add_argument("--all", action="store_true", help="every code, not only those drawing a mix")
    args = parser.parse_args()
    print("| run | code | digit | share | width px | slant ° |")
    print("|---|---:|---:|---:|---:|---:|")
    for run_id in args.run_ids:
        for code, digit, share, width, slant in code_rows(run_id, args.samples, args.all):
            print(f"| {run_id[:8]} | {code} | {digit} | {share:.2f} | {width:.2f} | {slant:.1f} |")


if __name__ == "__main__":
    main()
