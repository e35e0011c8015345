"""Probe: does self-labelling raise Q's accuracy on real digits after training? A copy of a finished
run's D (trunk and Q) is fine-tuned on the real training digits without labels, FixMatch's way:
Q's code for the plain digit, where its probability reaches ``--tau``, is the target for a
strongly changed copy of the same digit. With ``--objective iic`` the target is IIC's instead:
the mutual information between Q's codes of two changed copies of each digit (``--weak`` and
``--strong``), which takes no target from Q's own argmax. Labels are read only to print how often
the confident codes are right, Q's accuracy on the real test digits (through the run's mapping)
and, for IIC, how many test sevens Q reads as 2. Nothing is logged and the run is not changed.

    .venv/bin/python benchmarks/q_selflabel_probe.py RUN_ID [--epochs 1] [--tau 0.95] [--lr 1e-4]
        [--strong affine|cutout] [--batch 256] [--objective fixmatch|iic] [--weak none|affine|cutout]

``affine``: rotation up to 20 degrees, scale 20%, shift 3 px and strokes up to a pixel thicker or
thinner; ``cutout``: stronger (25 degrees, 25%, 4 px) and an 8x8 box blanked. D's batch norm
keeps its running statistics; a moving average of the weights (0.99) is measured beside them.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pipeline import augment, hardware, measure, runs, tracking  # noqa: E402
from pipeline.data import as_tensors, prepare  # noqa: E402


def strong_view(x: torch.Tensor, rng: torch.Generator, kind: str) -> torch.Tensor:
    if kind == "affine":
        return augment.random_stroke_width(augment.random_affine(x, rng, 20.0, 0.2, 3.0), rng, 1.0)
    y = augment.random_stroke_width(augment.random_affine(x, rng, 25.0, 0.25, 4.0), rng, 1.0)
    b = x.shape[0]
    cy, cx = torch.randint(0, 28, (b,), generator=rng), torch.randint(0, 28, (b,), generator=rng)
    rows, cols = torch.arange(28).view(1, 28, 1), torch.arange(28).view(1, 1, 28)
    box = ((rows - cy.view(-1, 1, 1)).abs() < 4) & ((cols - cx.view(-1, 1, 1)).abs() < 4)
    return y * (~box).unsqueeze(1)


def iic_loss(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """Minus the mutual information of the codes of two copies (IIC): their joint distribution
    over the batch, made symmetric, against the product of its marginals."""
    joint = (p1.unsqueeze(2) * p2.unsqueeze(1)).mean(0)
    joint = ((joint + joint.t()) / 2).clamp_min(1e-8)
    rows, cols = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    return -(joint * (joint.log() - rows.log() - cols.log())).sum()


def load_evaluated(run_id: str):
    """An evaluated run's checkpoint, its code -> digit mapping as a tensor (digit of each code),
    the MNIST tensors on the CPU and the precision `auto` picks there."""
    hardware.set_threads(0)
    tracking.configure()
    trained = runs.load_run(run_id, log=lambda line: None)
    digit_of_code = torch.from_numpy(runs.read_mapping(run_id).digit_of_code)
    arrays, _ = prepare(trained.cfg.data, log=lambda line: None)
    cpu = torch.device("cpu")
    return trained, digit_of_code, as_tensors(arrays, cpu), hardware.resolve_precision("auto", cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_id")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--tau", type=float, default=0.95, help="confidence a code needs to become a target")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--strong", choices=("affine", "cutout"), default="cutout")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--objective", choices=("fixmatch", "iic"), default="fixmatch",
                        help="iic: maximise the mutual information of Q's codes of two changed copies")
    parser.add_argument("--weak", choices=("none", "affine", "cutout"), default="none",
                        help="iic: the first copy's change (the second is --strong)")
    args = parser.parse_args()
    trained, digit_of_code, tensors, precision = load_evaluated(args.run_id)
    cpu = torch.device("cpu")

    def read(d) -> tuple[float, int]:
        """Q's accuracy on the real test digits and how many test sevens it reads as 2."""
        digits = digit_of_code[measure.q_codes(d, tensors["test_x"])]
        sevens_as_two = int(((tensors["test_y"] == 7) & (digits == 2)).sum())
        return float((digits == tensors["test_y"]).float().mean()), sevens_as_two

    def fixmatch(x: torch.Tensor):
        """Cross-entropy of the strong copy's code against the plain digit's confident code."""
        with torch.no_grad(), hardware.autocast(precision, cpu):
            probability, target = torch.softmax(d(x)[1].float(), 1).max(1)
        with hardware.autocast(precision, cpu):
            logits = d(strong_view(x, rng, args.strong))[1].float()
        return (F.cross_entropy(logits, target, reduction="none") * (probability >= args.tau)).mean(), probability, target

    def iic(x: torch.Tensor):
        """Minus the mutual information of the two copies' codes; the first copy's code is read."""
        first = x if args.weak == "none" else strong_view(x, rng, args.weak)
        with hardware.autocast(precision, cpu):
            both = d(torch.cat([first, strong_view(x, rng, args.strong)]))[1].float()
        p1, p2 = torch.softmax(both, 1).chunk(2)
        probability, target = p1.detach().max(1)
        return iic_loss(p1, p2), probability, target

    d = copy.deepcopy(trained.d).eval()
    ema = torch.optim.swa_utils.AveragedModel(d, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.99))
    opt = torch.optim.Adam(d.parameters(), lr=args.lr)
    rng = torch.Generator().manual_seed(0)
    n = tensors["train_x"].shape[0]
    steps = int(args.epochs * n / args.batch)
    perm = torch.randperm(n, generator=rng)
    objective = fixmatch if args.objective == "fixmatch" else iic
    before, sevens = read(d)
    print(f"run {args.run_id}: Q on the real test digits {before:.4f} before ({sevens} sevens read "
          f"as 2); {steps} steps, {args.objective}, tau {args.tau}, lr {args.lr}, strong view {args.strong}, {precision}")
    extra = ("", "") if args.objective == "fixmatch" else (" mutual information | sevens read as 2 |", "---:|---:|")
    print("| step | seconds | confident share | confident codes right | Q accuracy | its average |" + extra[0])
    print("|---:|---:|---:|---:|---:|---:|" + extra[1])
    start, confident, right, seen = time.perf_counter(), 0, 0, 0
    for s in range(steps):
        idx = perm[(s * args.batch) % n:][:args.batch]
        loss, probability, target = objective(tensors["train_x"][idx].float() / 255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update_parameters(d)
        mask = probability >= args.tau
        confident, seen = confident + int(mask.sum()), seen + len(idx)
        right += int(((digit_of_code[target] == tensors["train_y"][idx]) & mask).sum())
        if (s + 1) % 100 == 0 or s == steps - 1:
            accuracy, sevens = read(d)
            line = (f"| {s + 1} | {time.perf_counter() - start:.0f} | {confident / seen:.3f} | "
                    f"{right / max(confident, 1):.4f} | {accuracy:.4f} | {read(ema.module)[0]:.4f} |")
            if args.objective == "iic":
                line += f" {-float(loss.detach()):.3f} | {sevens} |"
            print(line, flush=True)
            confident, right, seen = 0, 0, 0

if __name__ == "__main__":
    main()
