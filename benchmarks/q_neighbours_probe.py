"""Probe: could a finished run's Q read real digits better through its neighbours (SCAN's first
step)? SCAN trains a classifier to give each image the class of its nearest neighbours in a
learned feature space; that pays only where the neighbours carry the right digit more often than
the classifier itself does. This measures that, for D's trunk features and Q's hidden layer, on
the real training digits:

- how often an image's k nearest neighbours (cosine) show its own digit;
- the accuracy of a vote of Q's probabilities over the neighbours, on the training digits (what
  SCAN would train on) and on the test digits (neighbours taken among the training digits);
- the digit pairs Q confuses most on the test digits.

Labels are read only for these figures. Nothing is logged and the run is not changed.

    .venv/bin/python benchmarks/q_neighbours_probe.py RUN_ID [--k 5,20] [--features hidden,trunk]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pipeline import hardware  # noqa: E402
from q_selflabel_probe import load_evaluated  # noqa: E402  (this folder's other probe of Q)


def outputs(d, x: torch.Tensor, precision, batch: int = 1000) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Q's probabilities and the two feature layers for uint8 images ``x``."""
    seen: dict[str, list] = {"trunk": [], "hidden": []}
    hooks = [d.trunk.register_forward_hook(lambda m, i, o: seen["trunk"].append(o.float())),
             d.q[-2].register_forward_hook(lambda m, i, o: seen["hidden"].append(o.float()))]
    probabilities = []
    with torch.no_grad(), hardware.autocast(precision, torch.device("cpu")):
        for i in range(0, len(x), batch):
            probabilities.append(torch.softmax(d(x[i:i + batch].float() / 255)[1].float(), 1))
    for hook in hooks:
        hook.remove()
    return torch.cat(probabilities), {name: torch.cat(parts) for name, parts in seen.items()}


def neighbours(queries: torch.Tensor, keys: torch.Tensor, k: int, same: bool) -> torch.Tensor:
    """Indices of each query's k most similar keys (cosine); ``same``: queries are the keys, and
    an image is not its own neighbour."""
    queries, keys = F.normalize(queries, dim=1), F.normalize(keys, dim=1)
    found = []
    for i in range(0, len(queries), 2000):
        similarity = queries[i:i + 2000] @ keys.T
        if same:
            rows = torch.arange(similarity.shape[0])
            similarity[rows, rows + i] = -2.0
        found.append(similarity.topk(k, 1).indices)
    return torch.cat(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_id")
    parser.add_argument("--k", default="5,20", help="neighbour counts, comma-separated")
    parser.add_argument("--features", default="hidden,trunk", help="Q's hidden layer and/or D's trunk")
    args = parser.parse_args()
    trained, digit_of_code, tensors, precision = load_evaluated(args.run_id)
    d = trained.d.eval()
    train_p, train_f = outputs(d, tensors["train_x"], precision)
    test_p, test_f = outputs(d, tensors["test_x"], precision)
    train_y, test_y = tensors["train_y"], tensors["test_y"]
    read = digit_of_code[test_p.argmax(1)]
    print(f"run {args.run_id}: Q through the mapping, training digits "
          f"{float((digit_of_code[train_p.argmax(1)] == train_y).float().mean()):.4f}, "
          f"test digits {float((read == test_y).float().mean()):.4f} ({precision})")
    wrong = Counter((int(t), int(r)) for t, r in zip(test_y[read != test_y], read[read != test_y]))
    print("most confused on the test digits (true -> read: count): "
          + ", ".join(f"{t}->{r}: {n}" for (t, r), n in wrong.most_common(8)))
    print("| features | k | neighbours with the same digit | vote, training digits | vote, test digits | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.features.split(","):
        name = name.strip()
        for k in (int(v) for v in args.k.split(",")):
            start = time.perf_counter()
            near_train = neighbours(train_f[name], train_f[name], k, same=True)
            near_test = neighbours(test_f[name], train_f[name], k, same=False)
            agree = float((train_y[near_train] == train_y[:, None]).float().mean())
            vote_train = float((digit_of_code[train_p[near_train].mean(1).argmax(1)] == train_y).float().mean())
            vote_test = float((digit_of_code[train_p[near_test].mean(1).argmax(1)] == test_y).float().mean())
            print(f"| {name} ({train_f[name].shape[1]}) | {k} | {agree:.4f} | {vote_train:.4f} | {vote_test:.4f} | "
                  f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
