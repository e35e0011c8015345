"""The command line: parse arguments, load the config, call one stage function. Nothing else."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from omegaconf import DictConfig

from .arguments import build_parser
from .config import ConfigError, UsageError, load_config, split_overrides, to_yaml


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001  (stage errors carry their own explanation)
        code, label = _exit_code(e)
        if code is None:
            raise
        if label is not None:
            print(f"infogan {args.command}: {label}{e}", file=sys.stderr)
        return code


def _exit_code(error: Exception) -> tuple[Optional[int], Optional[str]]:
    """The exit code of an error that ends a command, and the prefix of its one-line message
    (None: nothing printed); (None, None) for an unexpected error, which shows its traceback."""
    from .data import DataError
    from .lanes import JobsFailed
    from .loop import Interrupted, NonFiniteLoss
    from .compat import IncompatibleState
    from .tracking import TrackingUnreachable

    table = ((UsageError, 2, "error: "), (ConfigError, 2, "config error: "), (Interrupted, 143, None),
             ((DataError, NonFiniteLoss, TrackingUnreachable, IncompatibleState, JobsFailed), 1, ""))
    for kinds, code, label in table:
        if isinstance(error, kinds):
            return code, label
    return None, None


def _configured(run: Callable[[DictConfig, argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    """A command that loads ``-c`` files and overrides into a config, then runs."""
    def command(args) -> int:
        run(load_config(args.config, split_overrides(args.overrides)), args)
        return 0
    return command


def _evaluate(args) -> int:
    from . import evaluate

    evaluate.stage(args.run_id)
    return 0


def _promote(args) -> int:
    from . import evaluate

    evaluate.promote(args.run_id, args.alias)
    return 0


def _report(args) -> int:
    from . import report

    if args.compile:
        print(f"wrote {report.compile_pdf(args.compile)}")
    else:
        report.build(args.experiment, args.runs, out=args.out)
    return 0


def _train(args) -> int:
    from . import train

    overrides = split_overrides(args.overrides)
    if args.resume:
        return _resume(args, overrides)
    train.stage(load_config(args.config, overrides), auto_resume=not args.fresh)
    return 0


def _data(cfg: DictConfig, args) -> None:
    from . import stages

    stages.data(cfg)


def _pipeline(cfg: DictConfig, args) -> None:
    from . import stages

    stages.main(cfg)


def _gc(cfg: DictConfig, args) -> None:
    from . import cleanup

    cleanup.collect(cfg, remove=args.yes)


def _config(cfg: DictConfig, args) -> None:
    print(to_yaml(cfg), end="")


def _generate(args) -> int:
    from . import evaluate

    if args.n < 1 or args.styles < 1:
        raise UsageError("--n and --styles must be at least 1")
    if args.raw and args.out.suffix != ".npz":
        raise UsageError(f"--raw writes an .npz array; --out is {args.out}")
    if not args.raw and args.out.suffix.lower() != ".png":
        raise UsageError(f"--out must end in .png (or .npz with --raw); not {args.out}")
    _check_writable(args.out)
    vary = None
    if args.vary is not None:
        if args.digit is None or args.model:
            raise UsageError("--vary draws a traversal of one digit: use it with --run-id and --digit")
        if not (args.vary[:1] == "c" and args.vary[1:].isdigit() and int(args.vary[1:]) >= 1):
            raise UsageError(f"--vary names a continuous code as c1, c2, ...; not {args.vary!r}")
        vary = int(args.vary[1:]) - 1
    if args.model:
        if args.digit is None:
            raise UsageError("with --model only --digit is supported (--demo and --raw need --run-id)")
        evaluate.generate_from_model(args.model, args.out, args.digit, n=args.n, seed=args.seed)
        return 0
    evaluate.generate(args.run_id, args.out, evaluate.Drawing(
        digit=args.digit, n=args.n, demo_grid=args.demo, raw_styles=args.styles if args.raw else None,
        seed=args.seed, vary=vary, styles=args.styles))
    return 0


def _classify(args) -> int:
    from .classify import DEFAULT_MODEL, classify

    model = args.model or (f"runs:/{args.run_id}/classifier_pyfunc" if args.run_id else DEFAULT_MODEL)
    classify(model, args.images)
    return 0


def _demo(args) -> int:
    from . import demo

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, not {args.port}")
    demo.check_port(args.host, args.port)
    demo.serve(demo.open_demo(args.model, args.run_id, args.classifier, args.ui_url), args.host, args.port)
    return 0


def _check_writable(path: Path) -> None:
    """Fail before any work when the output file cannot be written (a missing folder is made)."""
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as e:
        raise UsageError(f"cannot write --out {path}: {e.strerror or e}") from None
    if not existed:
        path.unlink()


def _sweep(args) -> int:
    from . import sweep

    args.storage = args.storage or None
    if args.worker:
        spec = sweep.load_spec(args.sweep_file)
        sweep.work(spec, args.storage or spec.storage or sweep.default_storage(), threads=args.threads,
                   worker=args.worker_name)
        return 0
    sweep.stage(args.sweep_file, storage=args.storage, workers=args.workers, export_best=args.export_best)
    return 0


def _run_experiments(args) -> int:
    from . import stages
    from .config import resolve_path

    files = [a for a in args.configs if a and "=" not in a]
    overrides = [a for a in args.configs if "=" in a]
    if not files:
        files = sorted(str(p) for p in resolve_path("configs/experiments").glob("*.yaml"))
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        raise UsageError(f"--seeds takes whole numbers separated by commas, e.g. 0,1,2; not {args.seeds!r}") from None
    # A --job is one run that run-experiments started in a process of its own: it trains there.
    stages.experiments(files, overrides, seeds=seeds, out=args.out, workers=1 if args.job else args.workers,
                       build_report=not args.job)
    return 0


def _seeds(args) -> int:
    from . import seeds

    found = seeds.parse_seeds(args.seeds)
    overrides = split_overrides(args.overrides)
    if args.parent_run:
        seeds.worker(args.config, overrides, found[0], args.experiment, args.worker_threads, args.parent_run)
        return 0
    seeds.stage(args.config, overrides, found, experiment=args.experiment, workers=args.workers,
                bar=seeds.Bar(args.min_gen, args.min_purity, args.min_perfect))
    return 0


def _init(args) -> int:
    from . import tracking

    experiment = args.experiment
    uri = tracking.configure()
    experiment_id = tracking.ensure_experiment(experiment)
    location = tracking.artifact_location(experiment_id)
    print(f"tracking store {uri}\nexperiment '{experiment}' (id {experiment_id}), artifacts in {location}\n"
          f"in `mlflow ui`: /#/experiments/{experiment_id}?workflowType=machine_learning")
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
    train.stage(load_config(), resume=args.resume, epochs=epochs)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "data": _configured(_data), "train": _train, "evaluate": _evaluate, "generate": _generate,
    "promote": _promote, "classify": _classify, "demo": _demo, "gc": _configured(_gc), "pipeline": _configured(_pipeline), "sweep": _sweep,
    "report": _report, "run-experiments": _run_experiments, "seeds": _seeds, "init": _init, "config": _configured(_config),
}
