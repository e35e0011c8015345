"""What the report says: the lab's sections (introduction, set-up, results, discussion,
conclusion) as document blocks, filled from the runs' params and metrics. Figures are drawn
into ``figures/`` as they are placed."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .. import metrics, names
from . import figures as fig
from . import spread
from .collect import RunData, read_png, variants
from .document import Document, Figure, Formula, Heading, Prose, Table, Text
from .wording import ARCH_NAMES, CHOICES, SETTINGS, mixed_codes, mixed_codes_in_comparison, moot, num, setting


class Writer:
    """Builds the document section by section; ``draw(name, figure)`` saves a figure to
    ``figures/<name>.png`` and returns its path relative to the report folder."""

    def __init__(self, folder: Path, experiment: str, runs: Sequence[RunData], sweeps: dict):
        self.folder, self.runs, self.sweeps = folder, list(runs), sweeps
        self.groups = variants(runs)
        archs = sorted({r.arch for r in runs})
        self.doc = Document("InfoGAN on MNIST: lab report",
                            f"experiment {experiment}: {len(runs)} training run(s) of "
                            f"{len(self.groups)} experiment(s); {', '.join(archs)}")

    def draw(self, name: str, figure) -> str:
        pyplot = fig.plt()
        figure.savefig(self.folder / "figures" / f"{name}.png", metadata={"Software": None})
        pyplot.close(figure)
        return f"figures/{name}.png"

    def copy(self, name: str, path: str) -> str:
        import shutil

        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        shutil.copyfile(path, self.folder / "figures" / f"{name}.png")
        return f"figures/{name}.png"

    def build(self) -> Document:
        self.introduction()
        self.setup()
        self.results()
        self.discussion()
        self.doc.add(Heading(1, "Conclusion"),
                     Prose("conclusion", "what worked, what did not, and what you would try next."))
        return self.doc

    # --- 1 -------------------------------------------------------------------------------------
    def introduction(self) -> None:
        self.doc.add(
            Heading(1, "Introduction"),
            Text("InfoGAN adds to a GAN a latent code c whose meaning is not given but learned: a third "
                 "network Q, sharing D's trunk, must read c back from the generated image, and G is rewarded "
                 "when it can. With a 10-way categorical code on MNIST, the code should come to stand for the "
                 "ten digits without any label. Every figure and table below was rebuilt from the MLflow "
                 "store by infogan report; the grey boxes are for your own words (prose.typ)."),
            Prose("introduction", "what InfoGAN adds to a GAN, and what you set out to show."))

    # --- 2 -------------------------------------------------------------------------------------
    def values(self, key: str, absent: str = "–") -> str:
        return ", ".join(sorted({num(r.params.get(key, absent), 4) for r in self.runs}))

    def setup(self) -> None:
        d = self.doc
        g_losses = sorted({r.g_loss for r in self.runs})
        d.add(Heading(1, "Experiment set-up"), Heading(2, "Adversarial loss"),
              Text("D outputs a logit ℓ; D(x) = σ(ℓ) is its probability that x is real. D minimises the binary "
                   "cross-entropy with real images labelled 1 and generated ones 0:",
                   "D outputs a logit $ell$; $D(x) = sigma(ell)$ is its probability that $x$ is real. D minimises "
                   "the binary cross-entropy with real images labelled 1 and generated ones 0:"),
              Formula("cal(L)_D = -EE_(x tilde p_\"data\") [log D(x)] - EE_(z, c) [log(1 - D(G(z, c)))]",
                      "L_D = −E_x[log D(x)] − E_{z,c}[log(1 − D(G(z,c)))]"),
              Text("Both terms are computed from the logits (log σ(ℓ) = −softplus(−ℓ)), so they stay finite "
                   "for any logit."),
              Heading(2, f"Generator loss (used here: {', '.join(g_losses)})"),
              Formula("cal(L)_G^\"NS\" = -EE_(z, c) [log D(G(z, c))] quad quad "
                      "cal(L)_G^\"sat\" = EE_(z, c) [log(1 - D(G(z, c)))]",
                      "non-saturating: L_G = −E[log D(G(z,c))];  saturating: L_G = E[log(1 − D(G(z,c)))]"),
              Text("The saturating loss is the original minimax objective. Its gradient with respect to D's "
                   "logit is −D(G(z,c)): while D rejects the fakes (D(G(z,c)) ≈ 0) G learns almost nothing. "
                   "The non-saturating loss has gradient −(1 − D(G(z,c))), strongest exactly then. Section 3 "
                   "shows both on runs that differ in this one setting."),
              Prose("generator_loss", "which generator loss you used and why."),
              Heading(2, "Mutual-information term"),
              Text("Q shares D's convolutional trunk and outputs logits over the 10 code values. The info "
                   "loss is the cross-entropy of Q against the code that made the image; H(c) minus it is "
                   "InfoGAN's variational lower bound on the mutual information I(c; G(z,c)):",
                   "Q shares D's convolutional trunk and outputs logits over the 10 code values. The info loss is "
                   "the cross-entropy of Q against the code that made the image; $H(c) - cal(L)_I$ is InfoGAN's "
                   "variational lower bound on the mutual information $I(c; G(z, c))$:"),
              Formula("cal(L)_I = -EE_(z, c) [log Q(c | G(z, c))], quad "
                      "min_(D, Q) cal(L)_D + lambda cal(L)_I, quad min_G cal(L)_G + lambda cal(L)_I",
                      "L_I = −E[log Q(c | G(z,c))];  D, Q minimise L_D + λ L_I;  G minimises L_G + λ L_I"),
              Text(f"λ = {self.values('train.code_weight')}. The info term trains D's shared trunk too: "
                   f"{self.values('train.info_trains_d_trunk')}. In G's step D and Q are fixed (no weight "
                   "gradients); in D's step the fakes are detached from G."),
              Heading(2, "Latent code, fixed noise and images"),
              Text(f"z ~ N(0, I) with {self.values('model.noise_dim')} dimensions; c uniform over "
                   f"{self.values('model.code_dim')} values, one-hot, concatenated with z as G's input. The "
                   "sample grids use 10 noise vectors drawn once per run from its seed (logged as "
                   "fixed_noise.npy): row k is code value k, column j noise vector j, so a row should be one "
                   "digit in ten styles. G ends in a sigmoid: pixels in [0, 1], 28×28, like the MNIST images "
                   "divided by 255."))
        self.settings()

    def settings(self) -> None:
        groups = self.groups
        rows = [[label] + [num(setting(g[0].params, key), 4) for g in groups.values()] for key, label in SETTINGS]
        rows.append(["seeds"] + [", ".join(r.seed for r in g) for g in groups.values()])
        self.doc.add(Heading(2, "Training settings"),
                     Text("Adam (β₁ and β₂ as in the table) for D with its head, Q's head and G. Each "
                          "experiment, trained for every seed listed:"),
                     Table(["setting", *groups], rows, "settings of each experiment (from the runs' params)",
                           align="l" * (len(groups) + 1), label="tab-settings"))
        used = []
        for key, on, what, why in CHOICES:
            users = [name for name, g in groups.items()
                     if key in g[0].params and not moot(g[0].params, key) and on(g[0].params[key])]
            if users:
                value = ", ".join(sorted({num(groups[name][0].params[key], 4) for name in users}))
                sentence = what.format(v=value)
                used.append(Text(f"{sentence[0].upper()}{sentence[1:]} ({', '.join(users)}): {why}."))
        if used:
            self.doc.add(Text("Beyond the handout's recipe, these changes are switched on, each for a reason:"), *used)
        self.doc.add(Prose("setup_notes", "anything about your set-up the tables do not say."))

    # --- 3 -------------------------------------------------------------------------------------
    def results(self) -> None:
        d, groups = self.doc, self.groups
        d.add(Heading(1, "Results"), Heading(2, "Samples"))
        finals = [(f"{r.variant}, seed {r.seed}", r.images["final"]) for g in groups.values() for r in g
                  if "final" in r.images]
        if finals:
            columns = max(len(g) for g in groups.values())
            panels = [(title, path) for name, g in groups.items()
                      for title, path in finals if title.startswith(f"{name}, ")]
            figure = fig.image_panels(panels, columns)
            d.add(Figure([self.draw("samples_final", figure)],
                         ["The last fixed-noise grid of every run (rows: experiments; columns: seeds). In each grid, "
                          "row k is code value k and column j noise vector j."], label="fig-samples",
                         width=figure.get_figwidth() / fig.FULL))
        for kind, what in (("demo", "the graded demo (rows: digits 0-9 through the code→digit mapping; "
                                    "columns: fresh noise; a column passes with ≥ 7 of 10 right)"),
                           ("confusion", "share of each code's samples the reference classifier reads as each digit")):
            shown = [(name, next(r for r in g if kind in r.images)) for name, g in groups.items()
                     if any(kind in r.images for r in g)]
            if shown:  # a lone one at 60% of the width: the demo is square, a full-width one fills the page
                d.add(Figure([self.copy(f"{kind}_{run.name}", run.images[kind]) for _, run in shown],
                             [f"{name}, seed {run.seed}: {what}." for name, run in shown], width=0.6))
        missing = [r.name for r in self.runs if not r.evaluated]
        if missing:
            d.add(Text("Not evaluated (run infogan evaluate --run-id ID for the demo and confusion matrix): "
                       + ", ".join(missing) + "."))
        d.add(Prose("results_samples", "what the samples show: does each code draw one digit, does z vary the style?"))
        self.evaluation()
        self.continuous_codes()
        d.add(Heading(2, "Training losses"),
              Figure([self.draw("losses", fig.loss_figure(self.runs))],
                     ["D, G and info losses against the training step (faint: each logged point, an average over "
                      "the logging interval; solid: a centred mean of 9 points). One colour per experiment, one "
                      "line per seed."]))
        archs = sorted({r.arch for r in self.runs})
        if len(archs) > 1:
            for arch in archs:
                subset = [r for r in self.runs if r.arch == arch]
                d.add(Figure([self.draw(f"losses_{arch}", fig.loss_figure(subset))],
                             [f"Losses of the {arch} runs ({ARCH_NAMES.get(arch, arch)})."]))
        d.add(Heading(2, "D's real-probability"),
              Figure([self.draw("real_probability", fig.probability_figure(self.runs))],
                     ["D(x) on real batches, and D(G(z,c)) before G's update and in G's step (centred means), "
                      "one panel per experiment with its seeds overlaid."]))
        self.g_losses()
        d.add(Prose("results_notes", "what the curves say about how training went."))

    def evaluation(self) -> None:
        d = self.doc
        shown = {names.DEMO_PERFECT_FRAC: lambda v: num(100 * v, 3), names.STYLE_SPREAD: lambda v: num(v, 2)}
        rows = [[r.variant, r.seed, *(shown.get(key, num)(r.final(key)) for key in names.REPORT_METRICS),
                 "yes" if r.evaluated else "no"] for r in self.runs]
        d.add(Heading(2, "Evaluation"),
              Text("A reference MNIST classifier (≈ 99% test accuracy, trained once) judges the generator. Each "
                   "code value is mapped to the digit the classifier sees most for it, one-to-one (Hungarian "
                   "algorithm). Generated accuracy: the share of samples the classifier reads as their code's "
                   "digit. Q accuracy: Q as a classifier of the real test digits, through the same mapping. Demo: "
                   "100 random 10×10 grids graded as the lab grades them. FLD: Fréchet distance between generated "
                   "and real test images in the classifier's features (lower is better). Style spread: how much "
                   "the images of one code vary with z, as a share of how much real digits of one class vary "
                   "(near 0: G ignores z and draws one image per code)."),
              Table(["experiment", "seed", "gen acc", "Q acc", "demo min", "demos 10/10 (%)", "FLD", "style spread",
                     "evaluated"],
                    rows, "each run's figures: the evaluate stage's (1,000 samples per code, 100 demos) where it ran, "
                          "else the last in-training evaluation", align="lrrrrrrrl", label="tab-runs"),
              Figure([self.draw("eval_curves", fig.eval_figure(self.runs))],
                     ["Evaluations during training (200 samples per code, after every epoch); a star marks the "
                      "evaluate stage's figure. The dashed line is the FLD between two sets of real test digits."]))
        mixed = spread.mixed_runs(self.runs)
        if mixed:
            d.add(Text(mixed_codes(mixed, metrics.MIXED_BELOW)))

    def continuous_codes(self) -> None:
        """The paper's continuous codes, for runs trained with them: what each code does to the
        images, measured (rank correlations with slant and width) and shown (traversals)."""
        runs = [r for r in self.runs if int(r.params.get("model.continuous_codes", "0")) > 0]
        if not runs:
            return
        n_codes = max(int(r.params["model.continuous_codes"]) for r in runs)
        rows = [[r.variant, r.seed] + [num(r.final(names.continuous_effect(k, what)))
                                       for k in range(1, n_codes + 1) for what in ("slant", "width")]
                for r in runs]
        header = ["experiment", "seed"] + [f"c{k} ~ {what}" for k in range(1, n_codes + 1) for what in ("slant", "width")]
        d = self.doc
        d.add(Heading(2, "Continuous codes"),
              Text(f"Beside the digit code, G gets {n_codes} continuous code(s) c_k ~ U(−1, 1). Q outputs a mean "
                   "μ_k for each; its info term is the negative log-likelihood of c_k under a Gaussian of unit "
                   "variance around μ_k, up to a constant (as in the InfoGAN code), added to the categorical term "
                   f"with weight {self.values('train.continuous_weight')}:",
                   f"Beside the digit code, G gets {n_codes} continuous code(s) $c_k tilde U(-1, 1)$. Q outputs a "
                   "mean $mu_k$ for each; its info term is the negative log-likelihood of $c_k$ under a Gaussian "
                   "of unit variance around $mu_k$, up to a constant (as in the InfoGAN code), added to the "
                   f"categorical term with weight {self.values('train.continuous_weight')}:"),
              Formula("cal(L)_I^\"cont\" = EE [sum_k 1/2 (c_k - mu_k (G(z, c, c_1, ...)))^2]",
                      "L_I,cont = E[Σ_k ½ (c_k − μ_k(G(z, c, c_1, …)))²]"),
              Text("What each code does, measured on 1,000 images: 100 random draws of the other inputs, each "
                   "with the code at 10 evenly spaced values in [−1, 1]. The table gives the Spearman rank "
                   "correlation of the code's value with the slant of the digit (the shear angle that would make "
                   "its ink upright, from the image moments) and with its stroke width (ink area over the length "
                   "of its skeleton), each relative to its draw's mean. The paper's claim holds for a code with "
                   "|ρ| near 1 for one property and near 0 for the other."),
              Table(header, rows, "rank correlations of each continuous code with slant and stroke width "
                                  "(the evaluate stage's where it ran, else the last in-training evaluation)",
                    align="ll" + "r" * (len(header) - 2), label="tab-continuous"))
        panels = [(f"{r.variant}, seed {r.seed}: c{k}", r.images[f"traversal_c{k}"])
                  for r in runs for k in range(1, n_codes + 1) if f"traversal_c{k}" in r.images]
        if panels:
            figure = fig.image_panels(panels, n_codes)
            d.add(Figure([self.draw("traversals", figure)],
                         ["The last traversal of each continuous code: rows are the digits 0-9 (through the code→digit "
                          "mapping of that epoch's evaluation), columns the code from −2 to 2 (the training range is "
                          "−1 to 1), one noise vector, the other codes at 0."], label="fig-traversals",
                         width=figure.get_figwidth() / fig.FULL))
        d.add(Prose("results_continuous", "what each continuous code learned, and whether it still varies smoothly "
                                          "beyond the range it was trained on."))

    def g_losses(self) -> None:
        pairs = [r for r in self.runs if any(o.g_loss != r.g_loss and _differ_in_g_loss_only(r, o) for o in self.runs)]
        if not pairs:
            return
        steps_per_epoch = min(min(r.grid_steps) for r in pairs if r.grid_steps) if any(r.grid_steps for r in pairs) else 500
        self.doc.add(Heading(2, "Saturating and non-saturating G loss"),
                     Text("These runs differ only in the G loss (and the seed). Over the first epoch:"),
                     Figure([self.draw("g_loss", fig.g_loss_figure(pairs, steps_per_epoch))],
                            ["D's probability on the fakes, the G loss and the norm of G's whole gradient (adversarial "
                             "plus λ times info term, averaged over each logging interval) for the two G losses, "
                             "first epoch."]))

    # --- 4 -------------------------------------------------------------------------------------
    def discussion(self) -> None:
        d = self.doc
        d.add(Heading(1, "Discussion"), Heading(2, "Checkerboard artefacts: transposed convolution vs upsample+conv"))
        self.checkerboard()
        d.add(Prose("discussion_checkerboard", "where the checkerboard comes from (the uneven overlap of a "
                    "stride-2 transposed convolution's kernels) and whether upsample+conv removes it."),
              Heading(2, "Generator losses"),
              Prose("discussion_g_loss", "what the difference between the two G losses is, with the curves above."),
              Heading(2, "Architecture comparison"))
        mixed = spread.mixed_runs(self.runs)
        d.add(Table(spread.COLUMNS, spread.comparison_rows(self.groups), spread.CAPTION, label="tab-comparison"),
              Text(mixed_codes_in_comparison(mixed, metrics.MIXED_BELOW)),
              Prose("discussion_architectures", "which variant learned the digits, how fast, and why."))
        self.sweep_sections()

    def checkerboard(self) -> None:
        by_arch = {arch: [r for r in self.runs if r.arch == arch and r.grid_steps] for arch in ("tconv", "upsample_sn")}
        if not all(by_arch.values()):
            self.doc.add(Text("(This needs a finished run of both tconv and upsample_sn; configs/experiments/ "
                              "has them. This report has " + ", ".join(sorted({r.arch for r in self.runs})) + ".)"))
            return
        runs = [r for group in by_arch.values() for r in group]
        common = sorted(set.intersection(*(set(r.grid_steps) for r in runs)))
        if not common:
            self.doc.add(Text("(The tconv and upsample_sn runs logged no sample grid at a common step.)"))
            return
        step = common[0]
        early = [by_arch["tconv"][0], by_arch["upsample_sn"][0]]
        spectra = {}
        real = next((r.images["real"] for r in self.runs if "real" in r.images), None)
        if real is not None:
            spectra["real digits"] = metrics.amplitude_spectrum(metrics.grid_cells(read_png(real), 10, 10))
        for arch, group in by_arch.items():
            cells = np.concatenate([metrics.grid_cells(read_png(r.images[f"step{step}"]), 10, 10) for r in group])
            spectra[f"{arch}, step {step}"] = metrics.amplitude_spectrum(cells)
        rows = [[str(s)] + [num(np.mean([_share(r, s) for r in group]) * 100, 3) for group in by_arch.values()]
                for s in common]
        self.doc.add(
            Text("The first sample grid both architectures logged, side by side, and the mean amplitude spectrum of "
                 "its images. A pattern that alternates from one pixel to the next puts its energy at 0.5 "
                 "cycles/pixel (the edge of each spectrum); the share of energy there is a number for the "
                 "checkerboard."),
            Figure([self.draw("checkerboard_early", fig.checkerboard_figure(early, step))],
                   [f"The fixed-noise grid at step {step}: {early[0].name} and {early[1].name}, one digit enlarged."]),
            Figure([self.draw("spectrum", fig.spectrum_figure(spectra))],
                   ["Mean amplitude spectrum (log scale) of real test digits and of the grids above (all seeds), and "
                    "its profile along the horizontal frequency."]),
            Table(["step", "tconv: energy at the 2-pixel period (%)", "upsample_sn (%)"], rows,
                  "share of spectral energy at the 2-pixel period in each logged grid (mean over seeds)"
                  + (f"; real digits: {metrics.period2_share(spectra['real digits']) * 100:.3g}%" if real else "")))

    def sweep_sections(self) -> None:
        for study, sweep in self.sweeps.items():
            trials = sweep["trials"]
            (self.folder / "tables" / f"sweep_{study}.csv").write_text(trials.to_csv(index=False))
            columns = [c for c in trials.columns if c in ("number", "state", "value") or c.startswith("params_")]
            rows = [[num(v, 4) for v in row] for row in trials[columns].itertuples(index=False)]
            self.doc.add(Heading(2, f"Sweep {study}"),
                         Table([c.removeprefix("params_") for c in columns], rows, f"the trials of sweep {study}"))
            paths = [self.copy(f"sweep_{study}_{Path(p).stem}", p) for p in sweep["figures"]]
            for start in range(0, len(paths), 2):
                pair = paths[start:start + 2]
                self.doc.add(Figure(pair, [f"Optuna's {Path(p).stem.split('_', 2)[-1].replace('_', ' ')} figure, "
                                           f"sweep {study}" for p in pair]))


def _differ_in_g_loss_only(a: RunData, b: RunData) -> bool:
    sa, sb = dict(a.setting()), dict(b.setting())
    return {k for k in sa.keys() | sb.keys() if sa.get(k) != sb.get(k)} == {"train.g_loss"}


def _share(run: RunData, step: int) -> float:
    return metrics.period2_share(metrics.amplitude_spectrum(metrics.grid_cells(read_png(run.images[f"step{step}"]), 10, 10)))
