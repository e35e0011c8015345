"""infogan-pipeline: InfoGAN on MNIST, staged, tracked in MLflow."""
import os

# Same seed and config, same losses: without conditional numerical reproducibility MKL may take
# a different code path depending on how a buffer happens to be aligned, and a GAN amplifies
# the last-bit difference within a few steps. Set before torch loads MKL; a user's value wins.
os.environ.setdefault("MKL_CBWR", "AUTO")
# Two processes that each keep 2 OpenMP threads spinning on a 2-core machine thrash: beside a
# second busy process the step kept 22-25% of its speed with libgomp's default (spin, then
# sleep) and 62-66% with its threads sleeping as soon as they wait, at a cost of about 10% when
# alone (benchmarks/train_speed.py --beside; docs/results.md). Read when torch loads OpenMP, so
# set before any torch import; a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
