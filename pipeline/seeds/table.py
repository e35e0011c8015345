"""A seed check's table: each seed's evaluate-stage figures, their mean, standard deviation and
worst case, and the bar every seed is held to; as printed text, Markdown, CSV and the parent
run's metrics."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import names

# The figures of each seed, in the table's column order, and which end of each is the worse.
FIGURES = (names.GEN_ACCURACY, names.MIN_CODE_PURITY, names.DEMO_SCORE_MIN, names.DEMO_PERFECT_FRAC,
           names.Q_ACCURACY, names.FLD)
HIGHER_IS_WORSE = (names.FLD,)
HEADER = ("seed", "run", "gen acc", "worst code", "demo min", "demos 10/10", "Q acc", "FLD", "meets the bar")


@dataclass(frozen=True)
class Bar:
    """What every seed must reach: the lab's bar for a network that learned the ten digits."""
    gen: float = 0.97  # generated accuracy
    purity: float = 0.90  # the worst code's share of its own digit: below it, a code draws two digits
    perfect: float = 0.95  # the share of demos graded 10/10

    def met(self, figures: dict[str, float]) -> bool:
        return (figures.get(names.GEN_ACCURACY, 0) >= self.gen and figures.get(names.MIN_CODE_PURITY, 0) >= self.purity
                and figures.get(names.DEMO_PERFECT_FRAC, 0) >= self.perfect)

    def __str__(self) -> str:
        return (f"generated accuracy >= {self.gen:g}, worst code >= {self.purity:g}, "
                f"demos 10/10 >= {self.perfect:.0%}")


@dataclass
class SeedRow:
    seed: int
    run_id: Optional[str]
    figures: dict[str, float]  # the evaluate stage's, logged to the run; empty when it has none
    status: str  # "evaluated", or why there are no figures (not trained, diverged, ...)


@dataclass
class SeedTable:
    parent_run_id: str
    rows: list[SeedRow]
    bar: Bar

    @property
    def evaluated(self) -> list[SeedRow]:
        return [r for r in self.rows if r.status == "evaluated"]

    def summary(self) -> dict[str, dict[str, float]]:
        """{"mean" | "sd" | "worst": {figure: value}} over the evaluated seeds (sd with ddof 1)."""
        out: dict[str, dict[str, float]] = {"mean": {}, "sd": {}, "worst": {}}
        for key in FIGURES:
            values = np.array([r.figures[key] for r in self.evaluated if key in r.figures], dtype=float)
            if not len(values):
                continue
            out["mean"][key] = float(values.mean())
            out["sd"][key] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out["worst"][key] = float(values.max() if key in HIGHER_IS_WORSE else values.min())
        return out

    def passed(self) -> int:
        return sum(self.bar.met(r.figures) for r in self.evaluated)

    def worst_seed(self) -> Optional[SeedRow]:
        """The seed with the lowest generated accuracy (a seed that has no figures counts as worst)."""
        if not self.rows:
            return None
        return min(self.rows, key=lambda r: (r.status == "evaluated", r.figures.get(names.GEN_ACCURACY, -1.0)))

    def cells(self) -> list[list[str]]:
        """The table's rows as text: one per seed, then mean, sd and worst."""
        rows = []
        for r in self.rows:
            if r.status != "evaluated":
                rows.append([str(r.seed), (r.run_id or "-")[:8], r.status] + [""] * (len(HEADER) - 3))
                continue
            rows.append([str(r.seed), r.run_id[:8], *_figure_cells(r.figures),
                         "yes" if self.bar.met(r.figures) else "NO"])
        summary = self.summary()
        for label in ("mean", "sd", "worst"):
            rows.append([label, "", *_figure_cells(summary[label], sd=label == "sd"),
                         f"{self.passed()} of {len(self.rows)}" if label == "worst" else ""])
        return rows

    def markdown(self) -> str:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in self.cells()]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["seed", "run_id", "status", *FIGURES, "meets_bar"])
        for r in self.rows:
            writer.writerow([r.seed, r.run_id or "", r.status, *(r.figures.get(k, "") for k in FIGURES),
                             self.bar.met(r.figures) if r.status == "evaluated" else ""])
        return out.getvalue()

    def metrics(self) -> dict[str, float]:
        """What the parent run logs: ``seeds/<figure>_mean``, ``_sd``, ``_worst``, and the counts."""
        out = {names.seed_summary(key, label): value
               for label, values in self.summary().items() for key, value in values.items()}
        out[names.SEEDS_EVALUATED] = float(len(self.evaluated))
        out[names.SEEDS_PASSED] = float(self.passed())
        return out


def _figure_cells(figures: dict[str, float], sd: bool = False) -> list[str]:
    def cell(key: str, digits: int, scale: float = 1.0) -> str:
        if key not in figures:
            return "-"
        return f"{figures[key] * scale:.{digits}f}"

    demo_digits = 1 if sd else 0
    return [cell(names.GEN_ACCURACY, 4), cell(names.MIN_CODE_PURITY, 3), cell(names.DEMO_SCORE_MIN, demo_digits),
            cell(names.DEMO_PERFECT_FRAC, demo_digits, 100) + ("" if names.DEMO_PERFECT_FRAC not in figures else "%"),
            cell(names.Q_ACCURACY, 4), cell(names.FLD, 1)]
