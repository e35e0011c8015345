"""Each experiment's spread over its seeds, for the report's comparison: the mean ± standard
deviation of its figures, its worst seed and worst code, and the runs in which a code draws more
than one digit. A recipe is judged by its worst seed: the mean hides the one that failed."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import metrics, names
from .collect import RunData
from .wording import num

COLUMNS = ["experiment", "seeds", "gen acc", "worst seed: gen acc", "Q acc", "worst code", "worst demo",
           "demos 10/10 (%)", "FLD"]
CAPTION = ("each experiment over its seeds: mean ± standard deviation; the seed with the lowest generated "
           "accuracy; the lowest share of its own digit among any code's samples (below 0.8 a code draws two "
           "digits); the worst demo of any seed")


def mean_sd(values: np.ndarray) -> str:
    values = values[~np.isnan(values)]
    if not len(values):
        return "–"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def _finals(group: Sequence[RunData], key: str) -> np.ndarray:
    return np.array([r.final(key) for r in group], dtype=float)


def _worst(group: Sequence[RunData], key: str) -> str:
    """"s<seed>: value" of the run with the lowest ``key`` (NaN counts as lowest)."""
    values = _finals(group, key)
    index = int(np.argmin(np.where(np.isnan(values), -np.inf, values)))
    return f"s{group[index].seed}: {num(values[index])}"


def comparison_rows(groups: dict[str, list[RunData]]) -> list[list[str]]:
    """One row per experiment, in ``COLUMNS``' order."""
    rows = []
    for name, group in groups.items():
        demo_min, perfect = _finals(group, names.DEMO_SCORE_MIN), _finals(group, names.DEMO_PERFECT_FRAC)
        rows.append([name, str(len(group)), mean_sd(_finals(group, names.GEN_ACCURACY)),
                     _worst(group, names.GEN_ACCURACY), mean_sd(_finals(group, names.Q_ACCURACY)),
                     _worst(group, names.MIN_CODE_PURITY),
                     num(np.nanmin(demo_min) if not np.isnan(demo_min).all() else float("nan")),
                     num(100 * np.nanmean(perfect) if not np.isnan(perfect).all() else float("nan"), 3),
                     num(np.nanmean(_finals(group, names.FLD)))])
    return rows


def mixed_runs(runs: Sequence[RunData]) -> list[str]:
    """"experiment seed s (NN%)" for each run whose worst code draws its own digit in under
    ``metrics.MIXED_BELOW`` of its samples."""
    return [f"{r.variant} seed {r.seed} ({100 * purity:.0f}%)" for r in runs
            if (purity := r.final(names.MIN_CODE_PURITY)) < metrics.MIXED_BELOW]
