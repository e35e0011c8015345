"""The config schema: every key with its type, default and what it means. ``configs/base.yaml``
is the same tree written out for reading (a test keeps the two equal); ``config`` loads and
checks configs against it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class DataConfig:
    # Folder holding the four standard MNIST IDX files (plain or .gz); tried before any download.
    root: Optional[str] = None
    # Where the verified uint8 cache lives; relative paths are taken from the project directory.
    cache_dir: str = "data/mnist"
    # Try torchvision's downloader when there is no cache (needs the internet).
    download: bool = True
    # Train on the first N training images only (smoke runs); null = all 60,000.
    train_subset: Optional[int] = None


@dataclass
class ModelConfig:
    # paper: the InfoGAN paper's MNIST network (fastest to learn the digits) | tconv: the lab
    # handout's | upsample_sn: upsample+conv G, spectral-norm D, the handout's sizes.
    arch: str = "paper"
    noise_dim: int = 54
    code_dim: int = 10
    # Width of the hidden layer of Q's MLP head.
    q_hidden: int = 128
    # Continuous codes c1, c2, ... ~ U(-1, 1) given to G beside the categorical code, as in the
    # InfoGAN paper (2: rotation and width on MNIST). Q reads back their means. 0 = none.
    continuous_codes: int = 0


@dataclass
class TrainConfig:
    epochs: int = 5
    # 256 images a step at the paper's rates times sqrt(2) (2.8e-4, 1.4e-3): half the steps of
    # batch 128, each a larger share of the CPU's work, at the same quality (docs/results.md).
    batch_size: int = 256
    lr_d: float = 2.8e-4
    lr_g: float = 1.4e-3
    # Q's head at D's rate, as in openai/InfoGAN where Q is part of D's optimiser.
    lr_q: float = 2.8e-4
    # Over this fraction of the run, at its end, every learning rate falls linearly towards 0
    # (0 = constant rates; 0.5 = the second half). A fraction, so it fits any train.epochs.
    lr_decay_fraction: float = 0.5
    # Decay of an exponential moving average of G's weights (0 = none). With it, the average is
    # the generator that is evaluated, drawn in the sample grids and logged as the model; the
    # live G still trains. Averaging smooths out the last steps' jitter, which shows as the odd
    # unreadable style in the demos.
    ema_decay: float = 0.999
    beta1: float = 0.5
    beta2: float = 0.999
    # lambda: weight of the info (mutual-information) term.
    code_weight: float = 1.0
    # Weight of the continuous codes' part of the info term, 1/2 (c - mu)^2 per code (Q's
    # Gaussian with unit variance, as openai/InfoGAN); no effect without model.continuous_codes.
    continuous_weight: float = 1.0
    g_loss: str = "non_saturating"
    # As in openai/InfoGAN: the info term is part of D's objective too, so it trains D's trunk.
    info_trains_d_trunk: bool = True
    # Q learns to read the code from a randomly rotated (+-15 deg), scaled (+-15%) and shifted
    # (+-2 px) copy of each fake, so G's codes must differ in what survives that: the digit, not
    # its slant or size. Stops codes splitting one digit by style; one more D trunk pass per step.
    info_augment: bool = True
    # Weight of a second term for Q, on real digits (0 = off): Q learns to give a copy of a real
    # digit, rotated, scaled, shifted and with strokes up to half a pixel thicker or thinner, the
    # code it gives the plain digit with probability >= 0.8 (pseudo-labels, no labels used). Q's
    # codes then follow what survives those changes on real digits, so G cannot keep two codes
    # apart by stroke width or slant, each drawing the same two digits. One more D trunk pass.
    real_consistency: float = 1.0
    # D judges changed copies of the real and the fake digits (rotated, scaled, shifted, strokes
    # thicker or thinner, as real_consistency changes them): each image is changed with a
    # probability that falls linearly from 1 at the first step to d_augment_floor 80% into the
    # run (at the default floor) and stays there. Q's info term and its term on real digits read
    # D's passes on those images instead of two passes of their own, and G is trained against D
    # and Q on changed fakes; info_augment then does nothing. Continuous codes are still read from
    # the plain fakes (one more trunk pass). The step does the work of a textbook step. Needs
    # real_fake_batch=separate. Every such rule: pipeline/plan.py.
    d_augment: bool = True
    d_augment_floor: float = 0.2
    # Instance noise: Gaussian noise of this standard deviation (images are in [0, 1]) is added to
    # every image D sees, real and fake, falling linearly to 0 by the end of training. D then
    # cannot win on pixel detail that G cannot draw yet (the handout's G draws 4x4 blocks). 0 = off.
    instance_noise: float = 0.0
    # How D's batch norm sees real and fake batches: separate (as the InfoGAN code: D judges a
    # batch of fakes against a batch of reals) | joint (one batch: D judges each image alone) |
    # both (D's and G's adversarial losses from the two views, joint_weight on the joint one).
    # No effect without batch norm in D.
    real_fake_batch: str = "separate"
    joint_weight: float = 0.2
    # Mode seeking (Mao et al. 2019, "Mode seeking GANs"): G also maximises this weight times
    # min(|G(z1, c) - G(z2, c)| / |z1 - z2|, mode_seeking_cap) (mean absolute differences) over
    # pairs of the batch that share a code and differ in z. It stops G drawing one image per code
    # and ignoring z, which the handout's networks do once D sees real and fake as one batch.
    # It starts after mode_seeking_after_epochs, so Q first learns to read the code. 0 = off.
    mode_seeking: float = 0.0
    mode_seeking_after_epochs: float = 0.5
    mode_seeking_cap: float = 0.2
    # Cap on iterations per epoch (smoke runs); null = one pass over the training set.
    steps_per_epoch: Optional[int] = None
    # Metrics are averaged over this many iterations and logged in one batch.
    log_every: int = 25
    # auto = a CUDA GPU, else Apple's GPU (mps), else the CPU | cpu | cuda | mps; the run logs the
    # one it used (param device_used, tag infogan.device).
    device: str = "auto"
    # Forward passes of the step and of the evaluation after each epoch in bf16 autocast (weights,
    # optimiser state, losses and the evaluate stage stay fp32): auto = bf16 where the hardware runs
    # it (a CUDA GPU with bf16, a CPU with AMX or AVX512-BF16), fp32 elsewhere | fp32 | bf16.
    precision: str = "auto"
    # torch intra-op threads; 0 = one per CPU core, fewer while other processes keep cores busy
    # (hardware.ThreadShare); N = exactly N.
    threads: int = 0


@dataclass
class EvalConfig:
    # Evaluate during training every N epochs (0 = never); the final evaluation is `infogan evaluate`.
    every_epochs: int = 1
    # Samples per code value for the code -> digit mapping: during training, and in the evaluate stage.
    train_samples_per_code: int = 200
    samples_per_code: int = 1000
    # Random demos (10 digits x 10 fresh styles each) graded as the lab grades them.
    demos: int = 100
    # Generated and real test images compared by the Frechet distance in classifier features (FLD);
    # eval/fld_floor is the distance between the next as many real test images and those (the floor).
    fld_samples: int = 2000
    # Q's accuracy (eval/q_accuracy) on the first N real test images; null = all 10,000.
    q_test_images: Optional[int] = None
    # The reference classifier: trained once, logged to this experiment, reused while these keys,
    # the data and the classifier's code match.
    classifier_experiment: str = "classifier"
    classifier_epochs: int = 3
    classifier_lr: float = 3e-3
    # Its training step's precision, as train.precision: auto = bf16 where the hardware runs it.
    classifier_precision: str = "auto"
    # Keep the trained classifier in the user's cache folder too ($INFOGAN_CACHE_DIR, else
    # $XDG_CACHE_HOME/infogan-pipeline, else ~/.cache/infogan-pipeline), so a new store or a fresh
    # clone on this machine logs that copy instead of training it again; false = train per store.
    classifier_cache: bool = True
    # Train it on the first N training images only (smoke runs); null = all 60,000.
    classifier_train_subset: Optional[int] = None


@dataclass
class TrackingConfig:
    experiment: str = "infogan"
    # The training run's name in the MLflow UI; null = "train <arch> s<seed>", e.g. "train paper s0".
    run_name: Optional[str] = None
    # Log the final generator and discriminator/Q with mlflow.pytorch.log_model.
    log_model: bool = True
    # Sample CPU, memory, disk and network use into the training run's system/ metrics (MLflow's
    # system metrics tab) every 10 s (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL sets another interval).
    system_metrics: bool = True
    # `infogan evaluate` registers the run's generator (the pyfunc model, mapping inside) under
    # this name in the MLflow Model Registry; null = do not register.
    registered_model: Optional[str] = "infogan-generator"
    # ... and Q, read through the same mapping, as an unsupervised digit classifier under this
    # name (images in, digits out); null = do not register.
    registered_classifier: Optional[str] = "infogan-classifier"
    # Working checkpoints, written every epoch; relative to the project directory.
    checkpoint_dir: str = "checkpoints"
    # What a finished run keeps: last = its final checkpoint, logged once as the run's artifact
    # (the working copy is then removed: one copy on disk) | none = nothing logged; the working
    # copy stays until `infogan gc` removes it. With a tracking server, `last` also uploads each
    # epoch's checkpoint, so another machine can resume the run.
    checkpoint_keep: str = "last"


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
