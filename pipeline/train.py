"""The training stage: the InfoGAN step, the loop's cadence (logging, sample grids,
checkpoints), resume, and the ``train`` stage function that wraps it all in an MLflow run."""
from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import sys
import threading
import time
import contextlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Optional

import numpy as np
import torch
from omegaconf import DictConfig
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from . import augment, checkpoint, faults, hardware, judge, latents, losses, models
from .config import ConfigError, config_hash, flatten, from_yaml, resolve_path, to_yaml
from .data import CACHE_FILE, as_tensors, prepare
from .images import grid_array

METRICS = ("loss/d", "loss/g", "loss/info", "prob/d_real", "prob/d_fake_before_g", "prob/d_fake_after_g",
           "grad/g_norm")
CONTINUOUS_METRIC = "loss/info_cont"  # logged beside METRICS when the model has continuous codes
# How long an epoch's end waits for its metric points to be stored before training goes on.
EPOCH_END_WAIT_S = 30.0
N_STYLES = 10  # noise vectors in the fixed grid (columns); rows are the code values
# Q's view of a fake under train.info_augment: digits keep their identity under these.
INFO_AUGMENT = {"max_degrees": 15.0, "max_scale": 0.15, "max_shift_px": 2.0}


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or inf; the run stops and the last good checkpoint is kept."""


class Interrupted(InterruptedError):
    """SIGTERM, turned into an exception so the loop can checkpoint on the way out."""


@dataclass
class Optimisers:
    d: torch.optim.Optimizer  # D's trunk and head
    q: torch.optim.Optimizer  # Q's head
    g: torch.optim.Optimizer

    def state_dict(self) -> dict:
        return {"d": self.d.state_dict(), "q": self.q.state_dict(), "g": self.g.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.d.load_state_dict(state["d"])
        self.q.load_state_dict(state["q"])
        self.g.load_state_dict(state["g"])


def make_optimisers(g: models.Generator, d: models.Discriminator, tcfg) -> Optimisers:
    betas = (tcfg.beta1, tcfg.beta2)
    d_params = [*d.trunk.parameters(), *d.head.parameters()]
    return Optimisers(
        d=torch.optim.Adam(d_params, lr=tcfg.lr_d, betas=betas),
        q=torch.optim.Adam(d.q.parameters(), lr=tcfg.lr_q, betas=betas),
        g=torch.optim.Adam(g.parameters(), lr=tcfg.lr_g, betas=betas),
    )


def q_view(rng: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ``info_view`` of ``train_step`` under ``train.info_augment``, drawing from ``rng``."""
    return lambda images: augment.random_affine(images, rng, **INFO_AUGMENT)


def lr_scale(step: int, total_steps: int, decay_steps: int) -> float:
    """The factor on every base learning rate for the iteration after ``step`` completed ones:
    1, then over the last ``decay_steps`` iterations a linear fall that reaches 1/decay_steps on
    the last one. A function of the step alone, so a resumed run continues the schedule."""
    if decay_steps <= 0:
        return 1.0
    return min(1.0, (total_steps - step) / decay_steps)


def decay_steps_of(tcfg, total_steps: int) -> int:
    """How many of ``total_steps`` iterations the learning-rate decay spans."""
    return round(tcfg.lr_decay_fraction * total_steps)


def set_lr_scale(opt: Optimisers, tcfg, scale: float) -> None:
    for optimiser, base in ((opt.d, tcfg.lr_d), (opt.q, tcfg.lr_q), (opt.g, tcfg.lr_g)):
        for group in optimiser.param_groups:
            group["lr"] = base * scale


def instance_noise_std(step: int, total_steps: int, start: float) -> float:
    """The standard deviation of the noise added to D's inputs at ``step``: ``start`` at step 0,
    falling linearly to 0 at the end of training."""
    return start * max(0.0, 1.0 - step / max(total_steps, 1))


def noisy(std: float, rng: torch.Generator) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """Adds N(0, std^2) noise drawn from ``rng`` to a batch of images; None when std is 0."""
    if std <= 0:
        return None
    return lambda images: images + std * torch.randn(images.shape, generator=rng, device=images.device,
                                                     dtype=images.dtype)


def averaged(net: torch.nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``net``'s weights and buffers (torch's AveragedModel;
    call ``update_parameters(net)`` after each step, read ``.module``). After n updates the decay
    is min(decay, (1 + n) / (10 + n)), so early on the average follows the network closely
    instead of dragging the random initial weights along."""

    @torch.no_grad()
    def update(average: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        if not torch.is_floating_point(average[0]):  # batch norm's step counters
            for a, c in zip(average, current):
                a.copy_(c)
            return
        weight = 1.0 - torch.clamp((1.0 + n) / (10.0 + n), max=decay)  # stays on the device
        torch._foreach_lerp_(average, current, weight)

    return AveragedModel(net, multi_avg_fn=update, use_buffers=True)


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """No weight gradients for ``module`` (gradients still flow through it to its input)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


def train_step(g: models.Generator, d: models.Discriminator, opt: Optimisers, x: torch.Tensor,
               z: torch.Tensor, c: torch.Tensor, code_weight: float, g_loss_kind: str,
               info_trains_d_trunk: bool, joint_batch: bool = False,
               info_view: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
               precision: Callable[[], ContextManager] = contextlib.nullcontext,
               d_input: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
               u: Optional[torch.Tensor] = None, continuous_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """One InfoGAN iteration on real batch ``x`` with latents (z, c). Returns detached scalars.

    One fake batch serves both steps: G runs once, the D step reads it detached, the G step
    backpropagates through the updated D into G without computing D's weight gradients.

    ``joint_batch`` only matters when D has batch norm. Separate (the default, as in the InfoGAN
    code): real and fake batches are normalised each with their own statistics, which keeps D
    from winning on batch-level differences. Joint: one batch of both, which the handout's
    network needs, since it normalises the 1x1 features right before the D head and, normalised
    separately, a batch of fakes looks like a batch of reals to that head.

    ``info_view`` (``train.info_augment``): in the D step Q learns to read the code from
    ``info_view(fake)``, a randomly rotated, scaled and shifted copy, so Q relies on what survives
    such changes (the digit's identity), not on slant, size or position. The G step is unchanged:
    G makes its codes recognisable to that Q. Costs one more trunk pass in the D step.

    ``d_input`` (``train.instance_noise``): what D sees of every image, real and fake, in both
    steps: the images with fresh Gaussian noise added, so D cannot win on pixel detail that G
    cannot draw yet. The G step reads D on the same noisy fake it was trained against.

    ``u`` (``model.continuous_codes``): the continuous codes G draws from. Q's means for them add
    ``continuous_weight`` times their info term to the categorical one, in both steps. Q learns
    them from the plain fake, never from ``info_view``: rotating and scaling a digit is exactly
    what they are meant to encode.

    ``precision()`` is the context the forward passes run in (``hardware.autocast``: bf16
    autocast, or nothing); the losses are computed in fp32 from the logits either way.
    """
    n_real = x.shape[0]
    with precision():
        fake = g(z, latents.one_hot(c, g.code_dim), u)
    if d_input is not None:
        x, fake = d_input(x), d_input(fake)

    def trunk(images: torch.Tensor) -> torch.Tensor:
        """D's trunk on [real; images], or on images alone; returns the features of images."""
        if joint_batch and d.batch_norm:
            return d.trunk(torch.cat([x, images]))[n_real:]
        return d.trunk(images)

    # D step: real -> 1, fake -> 0; Q learns to read c back from the fake (openai/InfoGAN puts
    # the info term in D's objective; the flag decides whether it may shape D's trunk too).
    with precision():
        if joint_batch and d.batch_norm:
            h = d.trunk(torch.cat([x, fake.detach()]))
            d_real, d_fake = d.head(h).squeeze(1).split([n_real, fake.shape[0]])
            h_fake = h[n_real:]
        else:
            d_real = d.head(d.trunk(x)).squeeze(1)
            h_fake = d.trunk(fake.detach())
            d_fake = d.head(h_fake).squeeze(1)
        h_plain = h_fake if info_trains_d_trunk else h_fake.detach()
        h_view = h_plain
        if info_view is not None:
            h_view = trunk(info_view(fake.detach()))
            h_view = h_view if info_trains_d_trunk else h_view.detach()
        q_logits, q_means = d.read_codes(h_view)
        if u is not None and info_view is not None:
            q_means = d.read_codes(h_plain)[1]
    d_real, d_fake = d_real.float(), d_fake.float()
    loss_d = losses.d_loss(d_real, d_fake)
    info_d = losses.info_loss(q_logits.float(), c)
    if u is not None:
        info_d = info_d + continuous_weight * losses.info_loss_continuous(q_means.float(), u)
    opt.d.zero_grad(set_to_none=True)
    opt.q.zero_grad(set_to_none=True)
    (loss_d + code_weight * info_d).backward()
    opt.d.step()
    opt.q.step()

    # G step: fool the updated D, and make c recoverable by Q; D and Q stay fixed here.
    with frozen(d):
        with precision():
            h = trunk(fake)
            d_fake_after = d.head(h).squeeze(1).float()
            q_logits, q_means = d.read_codes(h)
        loss_g = losses.g_loss(d_fake_after, g_loss_kind)
        loss_info = losses.info_loss(q_logits.float(), c)
        info_g = loss_info
        if u is not None:
            loss_info_cont = losses.info_loss_continuous(q_means.float(), u)
            info_g = loss_info + continuous_weight * loss_info_cont
        opt.g.zero_grad(set_to_none=True)
        (loss_g + code_weight * info_g).backward()
        # How much G is told to change: where the saturating loss's gradient vanishes, this shows it.
        g_norm = torch.nn.utils.get_total_norm([p.grad for p in g.parameters() if p.grad is not None])
        opt.g.step()

    stats = {
        "loss/d": loss_d.detach(),
        "loss/g": loss_g.detach(),
        "loss/info": loss_info.detach(),
        "prob/d_real": torch.sigmoid(d_real.detach()).mean(),
        "prob/d_fake_before_g": torch.sigmoid(d_fake.detach()).mean(),
        "prob/d_fake_after_g": torch.sigmoid(d_fake_after.detach()).mean(),
        "grad/g_norm": g_norm.detach(),
    }
    if u is not None:
        stats[CONTINUOUS_METRIC] = loss_info_cont.detach()
    return stats


@torch.no_grad()
def sample_grid(g: models.Generator, noise: torch.Tensor) -> torch.Tensor:
    """The fixed-noise grid in eval mode (batch-norm running statistics stay untouched):
    [code_dim * n_styles, 1, 28, 28], row k = code value k."""
    was_training = g.training
    g.eval()
    z, c = latents.grid_inputs(noise, g.code_dim)
    images = g(z, latents.one_hot(c, g.code_dim))
    g.train(was_training)
    return images


def step_metrics(model_cfg) -> tuple[str, ...]:
    """The names of the scalars ``train_step`` returns for this model."""
    return METRICS + ((CONTINUOUS_METRIC,) if model_cfg.continuous_codes else ())


def traversal_key(index: int) -> str:
    """The step-indexed image of continuous code ``index`` (0-based): ``traversal/c1``, ..."""
    return f"traversal/c{index + 1}"


def traversal_grid(g: models.Generator, index: int, noise: torch.Tensor,
                   codes: Optional[list[int]] = None) -> np.ndarray:
    """Continuous code ``index`` from -2 to 2 (columns) for each code value in ``codes`` (rows;
    default: every code value in order) with one noise vector, as a grid image."""
    rows = torch.arange(g.code_dim) if codes is None else torch.tensor(codes)
    images = judge.traversal(g, index, noise, rows)
    return grid_array(images, nrow=latents.TRAVERSAL_VALUES.shape[0])


class _Accumulator:
    """Sums of step scalars between two logging points (kept on the device; no per-step sync)."""

    def __init__(self, keys: tuple[str, ...] = METRICS):
        self.keys = keys
        self.sums: Optional[torch.Tensor] = None
        self.count = 0

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        values = torch.stack([stats[k] for k in self.keys])
        self.sums = values if self.sums is None else self.sums + values
        self.count += 1

    def means(self) -> dict[str, float]:
        return dict(zip(self.keys, (self.sums / self.count).tolist()))

    def state(self) -> dict:
        return {"sums": None if self.sums is None else self.sums.cpu(), "count": self.count}

    def load(self, state: dict, device: torch.device) -> None:
        if state["sums"] is not None and state["sums"].shape[0] != len(self.keys):
            return  # saved before a metric was added: the interval's next point averages fewer steps
        self.sums = None if state["sums"] is None else state["sums"].to(device)
        self.count = state["count"]


def fit(cfg: DictConfig, tracker, ckpt_path: Path, resume: Optional[dict] = None,
        log: Callable[[str], None] = print, arrays: Optional[dict] = None,
        evaluator: Optional[Callable] = None,
        on_eval: Optional[Callable[[int, int, dict], None]] = None) -> dict:
    """Train ``cfg`` to the end, logging through ``tracker``; returns the last logged metrics.

    ``resume`` is a checkpoint dict to continue from. A checkpoint is written at the end of every
    epoch and on Ctrl-C/SIGTERM, so a resumed run repeats no step and skips none.
    ``evaluator(g, d)`` (see evaluate.Evaluator) runs every ``eval.every_epochs`` epochs; its
    ``eval/`` metrics are logged at the training step, with ``perf/train_seconds`` (training
    time so far, evaluation excluded) for time-to-quality curves. ``on_eval(epoch, step,
    metrics)`` is called after each evaluation once that epoch's checkpoint is saved (a sweep
    reports to its pruner there; an exception it raises ends training with the run resumable).
    """
    tcfg, mcfg = cfg.train, cfg.model
    hardware.set_threads(tcfg.threads)
    device = hardware.pick_device(tcfg.device)
    precision = hardware.resolve_precision(tcfg.precision, device)
    torch.manual_seed(cfg.seed)
    g, d = models.build(mcfg)
    g.to(device)
    d.to(device)
    opt = make_optimisers(g, d, tcfg)
    rng = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    noise = latents.fixed_noise(N_STYLES, mcfg.noise_dim, cfg.seed).to(device)
    log(f"training on {device.type} in {precision} ({hardware.describe(device, tcfg.precision, precision)})")
    tracker.set_tags({"infogan.precision": precision})
    if resume is None:
        tracker.log_params({"precision_used": precision})
    info_view = q_view(rng) if tcfg.info_augment else None
    g_ema = averaged(g, tcfg.ema_decay) if tcfg.ema_decay else None
    shown_g = g if g_ema is None else g_ema.module  # the generator evaluated, drawn and returned

    if arrays is None:
        arrays, _ = prepare(cfg.data, log=log)
    train_x = as_tensors(arrays, device, cfg.data.train_subset)["train_x"]
    n = train_x.shape[0]
    bsz = tcfg.batch_size
    steps_per_epoch = n // bsz if tcfg.steps_per_epoch is None else min(tcfg.steps_per_epoch, n // bsz)
    total_steps = tcfg.epochs * steps_per_epoch
    decay_steps = decay_steps_of(tcfg, total_steps)

    step, epoch, it, perm = 0, 0, 0, None
    train_seconds = 0.0
    keys = step_metrics(mcfg)
    acc = _Accumulator(keys)
    if resume is not None:
        g.load_state_dict(resume["g"])
        d.load_state_dict(resume["d"])
        if g_ema is not None and resume.get("g_ema") is not None:
            g_ema.module.load_state_dict(resume["g_ema"])
            g_ema.n_averaged.fill_(resume["step"])  # one update per step since the first
        opt.load_state_dict(resume["opt"])
        rng.set_state(resume["rng"])
        torch.set_rng_state(resume["torch_rng"])
        noise = resume["fixed_noise"].to(device)
        step, epoch, it = resume["step"], resume["epoch"], resume["iter"]
        train_seconds = resume.get("train_seconds", 0.0)
        perm = None if resume["perm"] is None else resume["perm"].to(device)
        acc.load(resume["acc"], device)
        log(f"resuming at epoch {epoch + 1}, iteration {it}, step {step}")
        trained_for = from_yaml(resume["config"]).train.epochs
        if trained_for != tcfg.epochs and tcfg.lr_decay_fraction:
            planned = trained_for * steps_per_epoch
            before = lr_scale(step, planned, decay_steps_of(tcfg, planned))
            after = lr_scale(step, total_steps, decay_steps)
            log(f"train.epochs is now {tcfg.epochs} (was {trained_for}): the learning-rate decay spans the "
                f"last {tcfg.lr_decay_fraction:g} of the new length, so the rates go on at {after:.3g}x "
                f"their base values instead of {before:.3g}x")
    # Steps already in the store (logged after the checkpoint, before a crash) are recomputed
    # identically but not logged twice.
    logged_through = tracker.last_step("loss/d")
    # The same for the epoch-end work (evaluation, grid): perf/epoch marks it done at a step.
    epoch_end_through = tracker.last_step("perf/epoch") if resume is not None else -1
    grid_steps = tracker.image_steps("samples") if resume is not None else set()
    traversal_steps = {traversal_key(i): tracker.image_steps(traversal_key(i)) if resume is not None else set()
                       for i in range(mcfg.continuous_codes)}

    def state() -> dict:
        return {
            "g": g.state_dict(), "d": d.state_dict(), "opt": opt.state_dict(),
            "g_ema": None if g_ema is None else g_ema.module.state_dict(),
            "rng": rng.get_state(), "torch_rng": torch.get_rng_state(),
            "fixed_noise": noise.cpu(), "step": step, "epoch": epoch, "iter": it,
            "perm": None if perm is None else perm.cpu(), "acc": acc.state(), "train_seconds": train_seconds,
            "config": to_yaml(cfg), "run_id": tracker.run_id,
        }

    last: dict[str, float] = {}
    interval_start, interval_images = time.perf_counter(), 0
    # SIGTERM only sets a flag; the loop stops at the next iteration boundary. (Raised from the
    # handler, the exception could land inside MLflow's artifact copy, whose cleanup then fails
    # with another error and hides it.)
    stop = threading.Event()

    def stop_requested() -> None:
        if stop.is_set():
            raise Interrupted("terminated by SIGTERM")

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set()) if _main_thread() else None
    try:
        while epoch < tcfg.epochs:
            measured = None
            if perm is None:
                perm = torch.randperm(n, generator=rng, device=device)
            bar = tqdm(total=steps_per_epoch, initial=it, desc=f"epoch {epoch + 1}/{tcfg.epochs}",
                       unit="it", leave=False, dynamic_ncols=True, disable=None, file=sys.stderr)
            while it < steps_per_epoch:
                x = train_x[perm[it * bsz:(it + 1) * bsz]].float().div_(255.0)
                z, c = latents.sample(bsz, mcfg.noise_dim, mcfg.code_dim, rng, device)
                u = latents.continuous(bsz, mcfg.continuous_codes, rng, device)
                if decay_steps:
                    set_lr_scale(opt, tcfg, lr_scale(step, total_steps, decay_steps))
                d_input = noisy(instance_noise_std(step, total_steps, tcfg.instance_noise), rng)
                acc.add(train_step(g, d, opt, x, z, c, tcfg.code_weight, tcfg.g_loss,
                                   tcfg.info_trains_d_trunk, tcfg.real_fake_batch == "joint", info_view,
                                   lambda: hardware.autocast(precision, device), d_input,
                                   u, tcfg.continuous_weight))
                if g_ema is not None:
                    g_ema.update_parameters(g)
                step += 1
                it += 1
                interval_images += bsz
                bar.update(1)
                if step % tcfg.log_every == 0:
                    last = acc.means()
                    bad = [k for k, v in last.items() if not math.isfinite(v)]
                    if bad:
                        raise NonFiniteLoss(
                            f"{', '.join(bad)} became non-finite at step {step} (epoch {epoch + 1}); "
                            f"stopped. The last good checkpoint ({ckpt_path}) is kept. Try lower "
                            f"learning rates (train.lr_d, train.lr_g) or another seed.")
                    elapsed = time.perf_counter() - interval_start
                    train_seconds += elapsed
                    last["perf/img_per_s"] = interval_images / max(elapsed, 1e-9)
                    if step > logged_through:
                        tracker.log_metrics(last, step=step)
                    faults.point("step_logged")
                    bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in last.items()
                                     if k in ("loss/d", "loss/g", "loss/info")})
                    acc = _Accumulator(keys)
                    interval_start, interval_images = time.perf_counter(), 0
                stop_requested()  # after this step's logging, so the checkpoint resumes cleanly
            bar.close()
            train_seconds += time.perf_counter() - interval_start
            epoch, it, perm = epoch + 1, 0, None
            _check_finite_params(g, d, step, ckpt_path)
            every = cfg.eval.every_epochs
            if step not in grid_steps:
                tracker.log_image(grid_array(sample_grid(shown_g, noise), nrow=N_STYLES), key="samples", step=step)
            rows = None  # the traversals' rows: digits 0-9 once a mapping gives each a code
            if evaluator is not None and every and (epoch % every == 0 or epoch == tcfg.epochs):
                measurement = evaluator(shown_g, d)
                measured, rows = measurement.as_metrics(), measurement.codes_by_digit()
                last.update(measured)
                faults.point("evaluated")
            for index in range(mcfg.continuous_codes):
                key = traversal_key(index)
                if step not in traversal_steps[key]:
                    tracker.log_image(traversal_grid(shown_g, index, noise[0], rows), key=key, step=step)
            if step > epoch_end_through:
                tracker.log_metrics({**(measured or {}), "perf/train_seconds": train_seconds,
                                     "perf/epoch": float(epoch)}, step=step)
            if measured is not None:
                log(f"epoch {epoch} evaluation: generated accuracy {measured['eval/gen_accuracy']:.3f}, "
                    f"Q accuracy {measured['eval/q_accuracy']:.3f}, demo min "
                    f"{measured['eval/demo_score_min']:.0f}/10"
                    + (f", FLD {measured['eval/fld']:.1f}" if "eval/fld" in measured else "")
                    + "".join(f", c{k + 1} ~ slant {measured[f'eval/cont_c{k + 1}_slant']:+.2f} / width "
                              f"{measured[f'eval/cont_c{k + 1}_width']:+.2f}" for k in range(mcfg.continuous_codes)))
            if not tracker.flush(timeout=EPOCH_END_WAIT_S):  # the store is down: do not stall training
                log(f"{tracker.waiting()} metric points wait for the tracking store; training goes on "
                    f"and the checkpoint is written locally")
            checkpoint.save(ckpt_path, state())
            if tracker.remote and cfg.tracking.checkpoint_keep == "last":
                tracker.log_artifact(ckpt_path, "checkpoints")  # where another machine can resume
            log(f"epoch {epoch}/{tcfg.epochs} done at step {step}: "
                + ", ".join(f"{k} {v:.3f}" for k, v in last.items() if not k.startswith("eval/")))
            if on_eval is not None and measured is not None:
                on_eval(epoch, step, measured)
            faults.point("epoch_done")
            stop_requested()
            interval_start, interval_images = time.perf_counter(), 0
    except (KeyboardInterrupt, Interrupted):
        _check_finite_params(g, d, step, ckpt_path)
        tracker.flush()
        checkpoint.save(ckpt_path, state())
        log(f"\ninterrupted at step {step}; checkpoint saved to {ckpt_path}. "
            f"Continue with: infogan train --resume {tracker.run_id}")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return {"metrics": last, "step": step, "g": shown_g, "d": d, "noise": noise}


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _check_finite_params(g, d, step: int, ckpt_path: Path) -> None:
    for name, module in (("G", g), ("D", d)):
        if not all(torch.isfinite(p).all() for p in module.parameters()):
            raise NonFiniteLoss(f"{name}'s weights became non-finite by step {step}; stopped "
                                f"without overwriting the last good checkpoint ({ckpt_path}).")


# --- the stage ---------------------------------------------------------------------------------

def checkpoint_path(cfg: DictConfig, run_id: str) -> Path:
    return resolve_path(cfg.tracking.checkpoint_dir) / run_id / checkpoint.CHECKPOINT_FILE


def checkpoint_logged(run_id: str) -> bool:
    """Whether the run has logged a checkpoint as its artifact (nothing is downloaded)."""
    from mlflow import MlflowClient

    try:
        logged = MlflowClient().list_artifacts(run_id, "checkpoints")
    except Exception:
        return False
    return any(a.path.endswith(f"/{checkpoint.CHECKPOINT_FILE}") for a in logged)


def has_checkpoint(cfg: DictConfig, run_id: str) -> bool:
    """Whether the run has a local checkpoint or a logged one (nothing is downloaded)."""
    return checkpoint_path(cfg, run_id).is_file() or checkpoint_logged(run_id)


def load_checkpoint(cfg: DictConfig, run_id: str) -> Optional[dict]:
    """The run's checkpoint: the local working copy, else the logged one (downloaded to a
    temporary folder, so no second copy stays on disk); None when it has neither."""
    local = checkpoint_path(cfg, run_id)
    if local.is_file():
        return checkpoint.load(local)
    import tempfile

    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = MlflowClient().download_artifacts(run_id, f"checkpoints/{checkpoint.CHECKPOINT_FILE}", tmp)
        except Exception:
            return None
        return checkpoint.load(Path(path))


def find_interrupted_run(cfg: DictConfig, log: Callable[[str], None] = print) -> Optional[str]:
    """A run of the same config that stopped before finishing, has a checkpoint, and no live
    process holds: what ``infogan train`` resumes automatically after a crash.

    A run of this config and this machine still marked RUNNING that no process holds and that
    has no checkpoint (killed before its first epoch ended) cannot be resumed: it is ended
    FAILED with the reason as a tag, and the user is told."""
    from mlflow import MlflowClient

    from . import tracking

    client = MlflowClient()
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`infogan.config_hash` = '{config_hash(cfg)}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=20)
    found = None
    for run in runs:
        if run.data.tags.get("infogan.stop_reason") == "non_finite":
            continue
        folder = checkpoint_path(cfg, run.info.run_id).parent
        if checkpoint.RunLock(folder).is_held_elsewhere():
            continue
        if has_checkpoint(cfg, run.info.run_id):
            found = found or run.info.run_id
        elif run.info.status == "RUNNING" and run.data.tags.get("infogan.host") == socket.gethostname():
            tracking.end_run(run.info.run_id, "FAILED", reason="killed before its first checkpoint")
            log(f"run {run.info.run_id} was left RUNNING by a process that died before its first "
                "checkpoint; nothing to resume, so it is now marked FAILED")
    return found


def run(cfg: DictConfig, resume: Optional[str] = None, epochs: Optional[int] = None,
        auto_resume: bool = True, nested: bool = False, log: Callable[[str], None] = print,
        parent_run_id: Optional[str] = None, tags: Optional[dict] = None,
        on_eval: Optional[Callable[[int, int, dict], None]] = None,
        on_start: Optional[Callable[[str], None]] = None) -> str:
    """The ``train`` stage: train ``cfg`` inside an MLflow run; returns the run id.

    ``resume`` continues that run from its last checkpoint with the config stored in it
    (``epochs``, when given, extends or shortens the schedule). Without it, an interrupted run of
    the same config is resumed when ``auto_resume`` is on. A sweep trial passes
    ``parent_run_id`` (the run is a child of the sweep's run), extra ``tags``, ``on_start(run_id)``
    (called once the run exists) and ``on_eval`` (see :func:`fit`).
    """
    from . import serving, tracking

    tracking.configure()
    state = None
    # Under `mlflow run` the run is already chosen (MLFLOW_RUN_ID): never swap in another one.
    if resume is None and auto_resume and not os.environ.get("MLFLOW_RUN_ID"):
        resume = find_interrupted_run(cfg, log)
        if resume:
            log(f"found interrupted run {resume} with this config; resuming it (--fresh starts anew)")
    if resume is not None:
        state = load_checkpoint(cfg, resume)
        if state is None:
            raise ConfigError(f"run {resume} has no checkpoint to resume from "
                              f"(looked in {checkpoint_path(cfg, resume).parent} and its artifacts)")
        cfg = from_yaml(state["config"])
        if epochs is not None:
            cfg.train.epochs = epochs
        if state["epoch"] >= cfg.train.epochs:
            stored = tracking.get_run(resume)
            if stored is None or stored.info.status == "FINISHED":
                raise ConfigError(f"run {resume} already trained {state['epoch']} epochs; pass "
                                  f"train.epochs=N with N > {state['epoch']} to train it longer")
            # Its training ended but the process died before the close: the final grid, the
            # models and the run's status are all that is left to do.
            log(f"run {resume} finished training but was not closed; completing it")

    arrays, info = prepare(cfg.data, log=log)
    evaluator = None
    if cfg.eval.every_epochs:
        from .evaluate import Evaluator, get_classifier

        tensors = as_tensors(arrays, hardware.pick_device(cfg.train.device))
        classifier, _, _ = get_classifier(cfg, tensors, info.sha256, log)
        evaluator = Evaluator(cfg, classifier, tensors)
    name = None if resume is not None else cfg.tracking.run_name or f"train {cfg.model.arch} s{cfg.seed}"
    with tracking.start_run(cfg.tracking.experiment, name, run_id=resume, nested=nested,
                            parent_run_id=parent_run_id, system_metrics=cfg.tracking.system_metrics) as active:
        run_id = active.info.run_id
        tracker = tracking.MlflowTracker(run_id)
        if tags:
            tracker.set_tags(tags)
        if on_start is not None:
            on_start(run_id)
        lock = checkpoint.RunLock(checkpoint_path(cfg, run_id).parent)
        if not lock.acquire():
            raise RuntimeError(f"run {run_id} is being trained by another process")
        checkpoint.remove_partial(checkpoint_path(cfg, run_id).parent)
        try:
            if state is None:
                tracker.log_params(flatten(cfg))
                tracker.set_tags({"infogan.stage": "train", "infogan.config_hash": config_hash(cfg),
                                  "infogan.host": socket.gethostname(),
                                  "infogan.data_source": info.source, "infogan.data_sha256": info.sha256})
                tracker.log_text(to_yaml(cfg), "config.yaml")
                # What it learnt from, as an input of the run (the UI's dataset column).
                tracker.log_dataset(arrays["train_images"], arrays["train_labels"], name="mnist-train",
                                    source=str(info.cache / CACHE_FILE), digest=info.sha256,
                                    context="training")
                _log_fixed_noise(tracker, latents.fixed_noise(N_STYLES, cfg.model.noise_dim, cfg.seed))
                # Real test digits in the sample grid's layout: what the report compares grids with.
                real = torch.from_numpy(arrays["test_images"][:N_STYLES * cfg.model.code_dim]).unsqueeze(1)
                _log_png(tracker, grid_array(real.float() / 255.0, nrow=N_STYLES), "samples/real.png")
            try:
                result = fit(cfg, tracker, checkpoint_path(cfg, run_id), resume=state, log=log, arrays=arrays,
                             evaluator=evaluator, on_eval=on_eval)
            except NonFiniteLoss:
                tracker.set_tags({"infogan.stop_reason": "non_finite"})
                raise
            faults.point("trained")
            final = grid_array(sample_grid(result["g"], result["noise"]), nrow=N_STYLES)
            _log_png(tracker, final, "samples/final.png")
            if cfg.tracking.log_model:
                for name, module in (("generator", result["g"]), ("discriminator", result["d"])):
                    if state is None or not tracker.has_model(name):  # a resumed close logs each once
                        tracker.log_model(models.exportable(module.cpu()), name)
                    faults.point(f"{name}_logged")
                if state is None or not tracker.has_model(serving.MODEL_NAME):
                    # Servable without this package or unpickling; digits once evaluate maps the codes.
                    serving.log_generator(result["g"].cpu(), run_id)
            if cfg.tracking.checkpoint_keep == "last":
                tracker.log_artifact(checkpoint_path(cfg, run_id), "checkpoints")
                faults.point("checkpoint_logged")
            tracker.set_tags({"infogan.stop_reason": "finished"})
            tracker.flush()
        finally:
            lock.release()
    if cfg.tracking.checkpoint_keep == "last":
        # The logged copy is the one kept; resume and evaluate read it from there.
        shutil.rmtree(checkpoint_path(cfg, run_id).parent, ignore_errors=True)
    log(f"run {run_id} finished at step {result['step']}")
    return run_id


def _log_png(tracker, image: np.ndarray, artifact_file: str) -> None:
    import tempfile

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        Image.fromarray(image).save(path)
        tracker.log_artifact(path, str(Path(artifact_file).parent))


def _log_fixed_noise(tracker, noise: torch.Tensor) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fixed_noise.npy"
        np.save(path, noise.numpy())
        tracker.log_artifact(path)
