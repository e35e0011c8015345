"""The training loop: a typed :class:`TrainState` (everything a checkpoint holds) and :func:`fit`,
which only keeps cadence: a step every iteration, the logged means every ``train.log_every``
steps and at the run's last step, and at each epoch's end the sample grid, the evaluation, the
checkpoint and the sweep's hook. The maths is in ``step``; what is logged goes through a
``tracking.Tracker``.

A resumed run repeats no step and skips none: the checkpoint holds the random generators, the
epoch's permutation and position, and the running means; points a crashed run had already
logged after its checkpoint are recomputed identically and not logged twice.
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from . import checkpoint, faults, hardware, latents, measure, models, names, optim, plan, step
from .config import from_yaml, to_yaml
from .data import as_tensors, prepare
from .figures import sample_grid, traversal_grid
from .images import grid_array

# How long an epoch's end waits for its metric points to be stored before training goes on.
EPOCH_END_WAIT_S = 30.0
N_STYLES = 10  # noise vectors in the fixed grid (columns); rows are the code values


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or inf; the run stops and the last good checkpoint is kept."""


class Interrupted(InterruptedError):
    """SIGTERM, turned into an exception so the loop can checkpoint on the way out."""


@dataclass
class TrainState:
    """The networks, optimisers, random generators and position of a run: what a checkpoint holds."""
    g: models.Generator
    d: models.Discriminator
    opt: optim.Optimisers
    g_ema: Optional[torch.optim.swa_utils.AveragedModel]
    rng: torch.Generator
    noise: torch.Tensor  # the fixed grid's noise vectors
    acc: step.Accumulator
    config: str  # the run's config as YAML
    run_id: Optional[str]
    step: int = 0
    epoch: int = 0  # epochs completed
    it: int = 0  # iterations into the current epoch
    perm: Optional[torch.Tensor] = None  # the current epoch's order of training images
    train_seconds: float = 0.0

    @property
    def shown_g(self) -> models.Generator:
        """The generator evaluated, drawn and returned: G's average when the run keeps one."""
        return self.g if self.g_ema is None else self.g_ema.module

    def state_dict(self) -> dict:
        return {
            "g": self.g.state_dict(), "d": self.d.state_dict(), "opt": self.opt.state_dict(),
            "g_ema": None if self.g_ema is None else self.g_ema.module.state_dict(),
            "rng": self.rng.get_state(), "torch_rng": torch.get_rng_state(),
            "fixed_noise": self.noise.cpu(), "step": self.step, "epoch": self.epoch, "iter": self.it,
            "perm": None if self.perm is None else self.perm.cpu(), "acc": self.acc.state(),
            "train_seconds": self.train_seconds, "config": self.config, "run_id": self.run_id,
        }

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        if self.g_ema is not None and state.get("g_ema") is not None:
            self.g_ema.module.load_state_dict(state["g_ema"])
            self.g_ema.n_averaged.fill_(state["step"])  # one update per step since the first
        self.opt.load_state_dict(state["opt"])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.noise = state["fixed_noise"].to(device)
        self.step, self.epoch, self.it = state["step"], state["epoch"], state["iter"]
        self.train_seconds = state.get("train_seconds", 0.0)
        self.perm = None if state["perm"] is None else state["perm"].to(device)
        self.acc.load(state["acc"], device)


@dataclass
class FitResult:
    metrics: dict[str, float]  # the last logged values
    step: int
    g: models.Generator  # the generator shown (G's average when kept)
    d: models.Discriminator
    noise: torch.Tensor


@dataclass
class Logged:
    """What a resumed run already has in the store, so nothing is logged twice."""
    through: int = -1  # the last step of the step metrics
    epoch_end_through: int = -1  # the last epoch end (evaluation, grid): perf/epoch marks it
    image_steps: dict[str, set[int]] = field(default_factory=dict)

    @classmethod
    def read(cls, tracker, resumed: bool, continuous_codes: int) -> "Logged":
        keys = [names.SAMPLES] + [names.traversal(i) for i in range(continuous_codes)]
        return cls(tracker.last_step(names.LOSS_D), tracker.last_step(names.PERF_EPOCH) if resumed else -1,
                   {key: tracker.image_steps(key) if resumed else set() for key in keys})


@dataclass
class Evaluation:
    """What runs at an epoch's end: ``measure(g, d)`` (see measure.Evaluator), every
    ``eval.every_epochs`` epochs, its ``eval/`` metrics logged at the training step with
    ``perf/train_seconds`` (training time so far, evaluation excluded); then ``then(epoch, step,
    metrics)`` once that epoch's checkpoint is saved (a sweep reports to its pruner there; an
    exception it raises ends training with the run resumable)."""
    measure: Optional[Callable] = None
    then: Optional[Callable[[int, int, dict], None]] = None


def fit(cfg: DictConfig, tracker, ckpt_path: Path, resume: Optional[dict] = None,
        log: Callable[[str], None] = print, arrays: Optional[dict] = None,
        evaluation: Optional[Evaluation] = None,
        nets: Optional[tuple[models.Generator, models.Discriminator]] = None) -> FitResult:
    """Train ``cfg`` to the end, logging through ``tracker``; returns the last logged metrics.

    ``resume`` is a checkpoint dict to continue from. A checkpoint is written at the end of every
    epoch and on Ctrl-C/SIGTERM. ``evaluation`` says what is measured at an epoch's end.
    ``nets`` replaces the networks ``model`` describes (tests train toy ones).
    """
    evaluation = evaluation or Evaluation()
    on_eval = evaluation.then
    loop = Loop(cfg, tracker, ckpt_path, resume, log, arrays, evaluation.measure, nets)
    with sigterm_stops() as stop_requested:
        try:
            while loop.state.epoch < cfg.train.epochs:
                loop.start_epoch()
                while loop.state.it < loop.steps_per_epoch:
                    loop.iteration()
                    if loop.state.step % cfg.train.log_every == 0 or loop.state.step == loop.plan.total_steps:
                        loop.log_interval()  # the last step too: a run shorter than log_every has curves
                    stop_requested()  # after this step's logging, so the checkpoint resumes cleanly
                measured = loop.end_epoch()
                if on_eval is not None and measured is not None:
                    on_eval(loop.state.epoch, loop.state.step, measured)
                faults.point("epoch_done")
                stop_requested()
                loop.restart_clock()
        except (KeyboardInterrupt, Interrupted):
            loop.save_on_the_way_out()
            raise
    s = loop.state
    return FitResult(loop.last, s.step, s.shown_g, s.d, s.noise)


class Loop:
    """What :func:`fit` calls: set-up and resume, one iteration, a logging point, an epoch's end."""

    def __init__(self, cfg: DictConfig, tracker, ckpt_path: Path, resume: Optional[dict], log,
                 arrays: Optional[dict], evaluator: Optional[Callable], nets) -> None:
        tcfg = cfg.train
        self.cfg, self.tracker, self.ckpt_path, self.log, self.evaluator = cfg, tracker, ckpt_path, log, evaluator
        hardware.set_threads(tcfg.threads)
        self.device = hardware.pick_device(tcfg.device)
        self.share = hardware.ThreadShare.for_run(tcfg.threads, self.device)
        self.precision = hardware.resolve_precision(tcfg.precision, self.device)
        self.state = self._new_state(nets)
        log(f"training on {self.device.type} in {self.precision} "
            f"({hardware.describe(self.device, tcfg.precision, self.precision)})")
        tracker.set_tags({names.PRECISION: self.precision, names.DEVICE: self.device.type})
        if resume is None:
            tracker.log_params({"precision_used": self.precision, "device_used": self.device.type})
        if arrays is None:
            arrays, _ = prepare(cfg.data, log=log)
        self.train_x = as_tensors(arrays, self.device, cfg.data.train_subset)["train_x"]
        n = self.train_x.shape[0]
        per_epoch = n // tcfg.batch_size
        self.steps_per_epoch = per_epoch if tcfg.steps_per_epoch is None else min(tcfg.steps_per_epoch, per_epoch)
        self.plan = plan.Plan.of(cfg, self.steps_per_epoch)
        for line in plan.unused_keys(cfg):
            log(line)
        if resume is not None:
            self._resume(resume)
        self.logged = Logged.read(tracker, resume is not None, cfg.model.continuous_codes)
        self.last: dict[str, float] = {}
        self.restart_clock()

    def _new_state(self, nets) -> TrainState:
        cfg, device = self.cfg, self.device
        torch.manual_seed(cfg.seed)
        g, d = models.build(cfg.model) if nets is None else nets
        g.to(device)
        d.to(device)
        opt = optim.make_optimisers(g, d, cfg.train)
        rng = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        noise = latents.fixed_noise(N_STYLES, cfg.model.noise_dim, cfg.seed).to(device)
        g_ema = optim.averaged(g, cfg.train.ema_decay) if cfg.train.ema_decay else None
        return TrainState(g, d, opt, g_ema, rng, noise, step.Accumulator(plan.step_metrics(cfg)),
                          to_yaml(cfg), self.tracker.run_id)

    def _resume(self, resume: dict) -> None:
        tcfg, s = self.cfg.train, self.state
        s.load_state_dict(resume, self.device)
        self.log(f"resuming at epoch {s.epoch + 1}, iteration {s.it}, step {s.step}")
        trained_for = from_yaml(resume["config"]).train.epochs
        if trained_for != tcfg.epochs and tcfg.lr_decay_fraction:
            planned = trained_for * self.steps_per_epoch
            before = optim.lr_scale(s.step, planned, optim.decay_steps_of(tcfg, planned))
            after = optim.lr_scale(s.step, self.plan.total_steps, self.plan.decay_steps)
            self.log(f"train.epochs is now {tcfg.epochs} (was {trained_for}): the learning-rate decay spans "
                     f"the last {tcfg.lr_decay_fraction:g} of the new length, so the rates go on at "
                     f"{after:.3g}x their base values instead of {before:.3g}x")

    def restart_clock(self) -> None:
        self.interval_start, self.interval_images = time.perf_counter(), 0

    def start_epoch(self) -> None:
        s = self.state
        if s.perm is None:
            s.perm = torch.randperm(self.train_x.shape[0], generator=s.rng, device=self.device)
        self.bar = tqdm(total=self.steps_per_epoch, initial=s.it, desc=f"epoch {s.epoch + 1}/{self.cfg.train.epochs}",
                        unit="it", leave=False, dynamic_ncols=True, disable=None, file=sys.stderr)

    def iteration(self) -> None:
        tcfg, mcfg, s, device = self.cfg.train, self.cfg.model, self.state, self.device
        bsz = tcfg.batch_size
        x = self.train_x[s.perm[s.it * bsz:(s.it + 1) * bsz]].float().div_(255.0)
        z, c = latents.sample(bsz, mcfg.noise_dim, mcfg.code_dim, s.rng, device)
        u = latents.continuous(bsz, mcfg.continuous_codes, s.rng, device)
        settings = self.plan.settings(s.step, s.rng, lambda: hardware.autocast(self.precision, device))
        s.acc.add(step.train_step(step.Nets(s.g, s.d), s.opt, step.Batch(x, z, c, u), settings))
        if s.g_ema is not None:
            s.g_ema.update_parameters(s.g)
        s.step += 1
        s.it += 1
        self.interval_images += bsz
        self.bar.update(1)
        if self.share is not None and self.share.tick():
            self.log(self.share.line())

    def log_interval(self) -> None:
        s = self.state
        last = s.acc.means()
        bad = [k for k, v in last.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteLoss(f"{', '.join(bad)} became non-finite at step {s.step} (epoch {s.epoch + 1}); "
                                f"stopped. The last good checkpoint ({self.ckpt_path}) is kept. Try lower "
                                f"learning rates (train.lr_d, train.lr_g) or another seed.")
        elapsed = time.perf_counter() - self.interval_start
        s.train_seconds += elapsed
        last[names.PERF_IMG_PER_S] = self.interval_images / max(elapsed, 1e-9)
        last[names.PERF_THREADS] = float(torch.get_num_threads())
        if s.step > self.logged.through:
            self.tracker.log_metrics(last, step=s.step)
        faults.point("step_logged")
        self.bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in last.items()
                              if k in (names.LOSS_D, names.LOSS_G, names.LOSS_INFO)})
        self.last = last
        s.acc = step.Accumulator(s.acc.keys)
        self.restart_clock()

    def end_epoch(self) -> Optional[dict[str, float]]:
        """The grid, the evaluation (when due), the traversals, the epoch's metrics and its
        checkpoint; returns the evaluation's metrics (None when none was due)."""
        s, tcfg = self.state, self.cfg.train
        self.bar.close()
        s.train_seconds += time.perf_counter() - self.interval_start
        s.epoch, s.it, s.perm = s.epoch + 1, 0, None
        self._check_finite_params()
        self._image(names.SAMPLES, lambda: grid_array(sample_grid(s.shown_g, s.noise), nrow=N_STYLES))
        measured, rows = None, None  # the traversals' rows: digits 0-9 once a mapping gives each a code
        every = self.cfg.eval.every_epochs
        if self.evaluator is not None and every and (s.epoch % every == 0 or s.epoch == tcfg.epochs):
            # In the step's precision: bf16 halves its cost where training runs in bf16
            # (benchmarks/eval_speed.py); the evaluate stage's figures of record stay fp32.
            with hardware.autocast(self.precision, self.device):
                measurement = self.evaluator(s.shown_g, s.d)
            measured, rows = measurement.as_metrics(), measurement.codes_by_digit()
            self.last.update(measured)
            faults.point("evaluated")
        for index in range(self.cfg.model.continuous_codes):
            self._image(names.traversal(index), lambda: traversal_grid(s.shown_g, index, s.noise[0], rows))
        if s.step > self.logged.epoch_end_through:
            self.tracker.log_metrics({**(measured or {}), names.PERF_TRAIN_SECONDS: s.train_seconds,
                                      names.PERF_EPOCH: float(s.epoch)}, step=s.step)
        if measured is not None:
            self.log(measure.evaluation_line(s.epoch, measured, self.cfg.model.continuous_codes))
        if not self.tracker.flush(timeout=EPOCH_END_WAIT_S):  # the store is down: do not stall training
            self.log(f"{self.tracker.waiting()} metric points wait for the tracking store; training goes on "
                     f"and the checkpoint is written locally")
        checkpoint.save(self.ckpt_path, s.state_dict())
        if self.tracker.remote and self.cfg.tracking.checkpoint_keep == "last":
            self.tracker.log_artifact(self.ckpt_path, names.CHECKPOINTS_DIR)  # where another machine can resume
        self.log(f"epoch {s.epoch}/{tcfg.epochs} done at step {s.step}: "
                 + ", ".join(f"{k} {v:.3f}" for k, v in self.last.items() if not k.startswith(names.EVAL_PREFIX)))
        return measured

    def _image(self, key: str, draw: Callable[[], np.ndarray]) -> None:
        if self.state.step not in self.logged.image_steps[key]:
            self.tracker.log_image(draw(), key=key, step=self.state.step)

    def _check_finite_params(self) -> None:
        s = self.state
        for name, module in (("G", s.g), ("D", s.d)):
            if not all(torch.isfinite(p).all() for p in module.parameters()):
                raise NonFiniteLoss(f"{name}'s weights became non-finite by step {s.step}; stopped "
                                    f"without overwriting the last good checkpoint ({self.ckpt_path}).")

    def save_on_the_way_out(self) -> None:
        """Ctrl-C or SIGTERM: checkpoint where the loop stopped (unless the weights went bad)."""
        self._check_finite_params()
        self.tracker.flush()
        checkpoint.save(self.ckpt_path, self.state.state_dict())
        self.log(f"\ninterrupted at step {self.state.step}; checkpoint saved to {self.ckpt_path}. "
                 f"Continue with: infogan train --resume {self.tracker.run_id}")


class sigterm_stops:
    """A context in which SIGTERM only sets a flag, and the callable it yields raises
    :class:`Interrupted` once the flag is set. The loop calls it at iteration boundaries: raised
    from the handler itself, the exception could land inside MLflow's artifact copy, whose
    cleanup then fails with another error and hides it. Outside the main thread (where signals
    cannot be handled) nothing is installed."""

    def __enter__(self) -> Callable[[], None]:
        self.stop = threading.Event()
        main = threading.current_thread() is threading.main_thread()
        self.previous = signal.signal(signal.SIGTERM, lambda signum, frame: self.stop.set()) if main else None
        return self.requested

    def requested(self) -> None:
        if self.stop.is_set():
            raise Interrupted("terminated by SIGTERM")

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
