"""What a run's codes draw, and in which style: for each code, the digits the reference classifier
reads in its samples, with each digit's mean stroke width (px) and slant (degrees). Where two
codes share two digits (`evaluate`'s mixed-code warning), this shows what still tells the codes
apart, which is what Q learned to read instead of the digit.

    .venv/bin/python benchmarks/code_styles.py RUN_ID [RUN_ID ...] [--samples 1000] [--all]

Reads each run's checkpoint (local or logged) and the cached reference classifier; trains
nothing. Without --all, only codes whose own digit (as `evaluate` maps them) is under 80% of
their samples.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import measure, metrics, reference, runs  # noqa: E402
from pipeline.data import as_tensors, prepare  # noqa: E402


def code_rows(run_id: str, samples: int, every_code: bool) -> list[tuple]:
    """(code, digit, share of the code's samples, mean width, mean slant) for the top two digits
    of each code whose own digit (the evaluate stage's mapping) is under ``metrics.MIXED_BELOW``
    of its samples, or of every code."""
    trained = runs.load_run(run_id, log=lambda _: None)
    arrays, info = prepare(trained.cfg.data, log=lambda _: None)
    tensors = as_tensors(arrays, torch.device("cpu"))
    classifier, _, _ = reference.get_classifier(trained.cfg, tensors, info.sha256, log=lambda _: None)
    g = trained.g
    c = torch.arange(g.code_dim).repeat_interleave(samples)
    z = torch.randn(c.shape[0], g.noise_dim, generator=torch.Generator().manual_seed(trained.cfg.seed))
    images = measure.generate(g, z, c)
    digits = reference.predict(classifier, images).numpy()
    mapping = metrics.map_codes(c.numpy(), digits, g.code_dim)
    pixels = images.squeeze(1).numpy()
    width, slant = metrics.stroke_width(pixels), metrics.slant_degrees(pixels)
    rows = []
    for code, purity in enumerate(mapping.purity()):
        if purity >= metrics.MIXED_BELOW and not every_code:
            continue
        counts = mapping.counts[code]
        for digit in np.argsort(-counts)[:2]:
            drawn = (c.numpy() == code) & (digits == digit)
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
