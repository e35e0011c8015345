"""infogan-pipeline: InfoGAN on MNIST, staged, tracked in MLflow."""
import os

# Same seed and config, same losses: without conditional numerical reproducibility MKL may take
# a different code path depending on how a buffer happens to be aligned, and a GAN amplifies
# the last-bit difference within a few steps. Set before torch loads MKL; a user's value wins.
os.environ.setdefault("MKL_CBWR", "AUTO")
