"""infogan-pipeline: InfoGAN on MNIST, staged, tracked in MLflow."""
import os

from .cpuinfo import BF16_FLAGS, cpu_flags

# Same seed and config, same losses: without conditional numerical reproducibility MKL may take
# a different code path depending on how a buffer happens to be aligned, and a GAN amplifies
# the last-bit difference within a few steps. Set before torch loads MKL; a user's value wins.
os.environ.setdefault("MKL_CBWR", "AUTO")

# OpenMP's wait policy, read when torch loads OpenMP, so set before any torch import; a user's
# value wins. Measured on 2-core VMs (benchmarks/train_speed.py --beside; docs/results.md):
# - fp32 (a CPU without bf16 units, where train.precision=auto is fp32): threads that sleep as
#   soon as they wait kept 62-66% of the step's speed beside a second busy process, against
#   22-25% with libgomp's default (spin a while, then sleep), at about 10% when alone.
# - bf16 (a CPU with AMX): sleeping threads cost the step a fifth of its speed alone (750 against
#   950 img/s), and beside a second 2-thread run the bf16 step collapsed under either policy
#   (3-4% kept with sleeping threads, 2-20% with libgomp's default), so libgomp's default is kept
#   there. What holds beside another run is one thread each (train.threads=1: 95-101% kept).
if not BF16_FLAGS & cpu_flags():
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# One OpenBLAS thread for NumPy and SciPy, read when NumPy loads it (before torch, which imports
# NumPy); a user's value wins. Their work here is small (the FLD's covariances and eigenvalues
# of 128 features), where one thread is fastest and a second only spins on the cores torch
# trains on: the FLD of 100 samples beside a busy process took 65 ms (114 ms of CPU) with
# OpenBLAS's two threads and 4.5 ms with one (docs/results.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
