"""Short probes of training variants for the handout's networks (`tconv`, `upsample_sn`): trains
for a few hundred steps outside MLflow and prints, every ``--eval-every`` steps, what the
training loop's evaluation measures (generated accuracy, Q accuracy, demo grades, style spread)
beside D's losses and probabilities. One thread per probe, so two run side by side on 2 cores.

    .venv/bin/python benchmarks/handout_probe.py [--arch tconv] [--steps 702] [VARIANT OPTIONS]

Besides the settings the config has (learning rates, code weight, batch handling, Q's view), it
tries these, each off by default:
  --mode-seeking W   G also maximises W * min(|G(z1,c) - G(z2,c)| / |z1 - z2|, --cap): pairs of
                     the batch share a code and differ in z (Mao et al. 2019, "Mode seeking GANs");
                     from step --mode-seeking-after on (the package's train.mode_seeking);
                     --pair-noise S makes the pairs' z close, which the package does not do
  --r1 GAMMA         D's loss adds GAMMA/2 * |grad_x D(x)|^2 on real batches (Mescheder et al. 2018)
  --batch split      D's first layers see real and fake batches apart, its last normalisation
                     both together (``joint``, ``separate``: as ``train.real_fake_batch``)
It judges with the project's reference classifier (logged in the store; trained once if absent).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import augment, data, latents, measure, models, optim, reference, step  # noqa: E402
from pipeline.config import load_config  # noqa: E402

SPLIT_AT = 5  # the handout D's trunk: conv, act, conv, norm, act | flatten, linear, norm, act


def options() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="tconv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=702)
    p.add_argument("--eval-every", type=int, default=117)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr-g", type=float, default=1e-3)
    p.add_argument("--lr-d", type=float, default=1e-4)
    p.add_argument("--lr-q", type=float, default=1e-3)
    p.add_argument("--code-weight", type=float, default=1.0)
    p.add_argument("--info-trains-d-trunk", action="store_true")
    p.add_argument("--no-info-augment", action="store_true")
    p.add_argument("--batch", choices=("joint", "separate", "split"), default="joint")
    p.add_argument("--instance-noise", type=float, default=0.0, help="constant std of noise on D's inputs")
    p.add_argument("--r1", type=float, default=0.0)
    p.add_argument("--mode-seeking", type=float, default=0.0)
    p.add_argument("--cap", type=float, default=0.2)
    p.add_argument("--mode-seeking-after", type=int, default=0, help="steps before the mode-seeking term starts")
    p.add_argument("--pair-noise", type=float, default=0.0,
                   help="the pairs' second z is the first plus this times N(0, 1) noise (0 = drawn apart)")
    p.add_argument("--lr-decay-fraction", type=float, default=0.5)
    return p.parse_args()


class Probe:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.cfg = load_config([], [f"model.arch={a.arch}", f"train.lr_g={a.lr_g}", f"train.lr_d={a.lr_d}",
                                    f"train.lr_q={a.lr_q}", f"train.lr_decay_fraction={a.lr_decay_fraction}"])
        arrays, info = data.prepare(self.cfg.data, log=lambda m: None)
        self.tensors = data.as_tensors(arrays, torch.device("cpu"))
        self.classifier = reference.get_classifier(self.cfg, self.tensors, info.sha256, log=print)[0]
        self.g, self.d = models.build(self.cfg.model)
        self.opt = optim.make_optimisers(self.g, self.d, self.cfg.train)
        self.average = optim.averaged(self.g, self.cfg.train.ema_decay)
        self.rng = torch.Generator().manual_seed(a.seed)
        self.view = None if a.no_info_augment else augment.q_view(torch.Generator().manual_seed(a.seed + 1))
        self.batch = a.batch if self.d.batch_norm else "separate"
        self.real_spread = measure.real_style_spread(self.tensors)
        add_noise = optim.noisy(a.instance_noise, self.rng)
        self.noisy = add_noise or (lambda images: images)

    def trunk(self, x: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's features of a real and a fake batch, normalised as ``--batch`` says."""
        t = self.d.trunk
        if self.batch == "separate":
            return t(x), t(fake)
        if self.batch == "joint":
            h = t(torch.cat([x, fake]))
        else:
            h = t[SPLIT_AT:](torch.cat([t[:SPLIT_AT](x), t[:SPLIT_AT](fake)]))
        return h[:x.shape[0]], h[x.shape[0]:]

    def step(self, x: torch.Tensor, s: int) -> dict[str, float]:
        a, d, b = self.a, self.d, x.shape[0]
        seeking = a.mode_seeking if s >= a.mode_seeking_after else 0.0
        z, c = latents.sample(b, self.g.noise_dim, self.g.code_dim, self.rng, x.device)
        if seeking:
            c = step.pair_codes(c)
            if a.pair_noise:
                z[b // 2:] = z[:b // 2] + a.pair_noise * torch.randn(z[:b // 2].shape, generator=self.rng)
        fake = self.g(z, latents.one_hot(c, self.g.code_dim))
        x = self.noisy(x).requires_grad_(a.r1 > 0)
        h_real, h_fake = self.trunk(x, self.noisy(fake.detach()))
        d_real, d_fake = d.head(h_real).squeeze(1), d.head(h_fake).squeeze(1)
        h_q = self.trunk(x.detach(), self.view(fake.detach()))[1] if self.view else h_fake
        q_logits = d.read_codes(h_q if a.info_trains_d_trunk else h_q.detach())[0]
        loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        total = loss_d + a.code_weight * F.cross_entropy(q_logits, c)
        if a.r1:
            grad, = torch.autograd.grad(d_real.sum(), x, create_graph=True)
            total = total + a.r1 / 2 * grad.pow(2).flatten(1).sum(1).mean()
        self.opt.d.zero_grad(set_to_none=True)
        self.opt.q.zero_grad(set_to_none=True)
        total.backward()
        self.opt.d.step()
        self.opt.q.step()

        with step.frozen(d):
            h = self.trunk(x.detach(), self.noisy(fake))[1]
            d_after = d.head(h).squeeze(1)
            loss_info = F.cross_entropy(d.read_codes(h)[0], c)
            loss_g = F.binary_cross_entropy_with_logits(d_after, torch.ones_like(d_after))
            total = loss_g + a.code_weight * loss_info
            if seeking:
                total = total - seeking * step.mode_seeking_reward(fake, z, a.cap)
            self.opt.g.zero_grad(set_to_none=True)
            total.backward()
            self.opt.g.step()
        self.average.update_parameters(self.g)
        return {"loss_d": float(loss_d.detach()), "loss_info": float(loss_info.detach()),
                "d_real": float(torch.sigmoid(d_real.detach()).mean()), "d_fake": float(torch.sigmoid(d_after).mean())}

    def evaluate(self) -> dict[str, float]:
        g = self.average.module
        g.eval(), self.d.eval()
        m = measure.measure(g, self.d, self.classifier, self.tensors, measure.Budget(200, 100, q_test_images=2000),
                            seed=7, real_spread=self.real_spread)
        g.train(), self.d.train()
        return {"gen": m.gen_accuracy, "q": m.q_accuracy, "demo_min": int(m.demo_scores.min()),
                "demos_10": int((m.demo_scores == 10).sum()), "style_spread": m.style_spread}


def main() -> None:
    a = options()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    probe = Probe(a)
    train_x = probe.tensors["train_x"]
    per_epoch = train_x.shape[0] // a.batch_size
    decay = optim.decay_steps_of(probe.cfg.train, a.steps)
    sums: dict[str, float] = {}
    start = time.monotonic()
    for s in range(a.steps):
        if s % per_epoch == 0:
            perm = torch.randperm(train_x.shape[0], generator=probe.rng)
        i = s % per_epoch
        x = train_x[perm[i * a.batch_size:(i + 1) * a.batch_size]].float().div_(255.0)
        t = probe.cfg.train
        optim.set_lr_scale(probe.opt, (t.lr_d, t.lr_q, t.lr_g), optim.lr_scale(s, a.steps, decay))
        for key, value in probe.step(x, s).items():
            sums[key] = sums.get(key, 0.0) + value
        if (s + 1) % a.eval_every == 0 or s + 1 == a.steps:
            row = {"step": s + 1, "epoch": round((s + 1) / per_epoch, 2), **probe.evaluate(),
                   **{k: v / a.eval_every for k, v in sums.items()},
                   "img_per_s": (s + 1) * a.batch_size / (time.monotonic() - start)}
            sums = {}
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
