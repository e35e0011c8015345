"""The project's vocabulary in the tracking store: every metric key, tag key and artifact name.

Runs logged by any version of the pipeline are read back by these names (the report, resume,
sweeps), so a name here changes only with a migration. No other module spells them out.
"""
from __future__ import annotations

# --- training metrics (train_step's scalars, averaged over train.log_every steps) ---------------
LOSS_D = "loss/d"
LOSS_G = "loss/g"
LOSS_INFO = "loss/info"
LOSS_INFO_CONT = "loss/info_cont"  # only for a model with continuous codes
# only with train.real_consistency: Q's pseudo-label loss on changed copies of real digits
LOSS_INFO_REAL = "loss/info_real"
MODE_SEEKING = "loss/mode_seeking"  # only with train.mode_seeking: the capped reward G maximises (0 before it starts)
PROB_D_REAL = "prob/d_real"
PROB_D_FAKE_BEFORE_G = "prob/d_fake_before_g"
PROB_D_FAKE_AFTER_G = "prob/d_fake_after_g"
GRAD_G_NORM = "grad/g_norm"
STEP_METRICS = (LOSS_D, LOSS_G, LOSS_INFO, PROB_D_REAL, PROB_D_FAKE_BEFORE_G, PROB_D_FAKE_AFTER_G, GRAD_G_NORM)
# The curves the report draws for every run (the gradient norm is drawn where G losses differ).
CURVE_METRICS = STEP_METRICS[:-1]

PERF_IMG_PER_S = "perf/img_per_s"
PERF_TRAIN_SECONDS = "perf/train_seconds"  # training time so far, evaluation excluded
PERF_THREADS = "perf/threads"  # torch threads at the logging point (a CPU run gives up cores other processes use)
PERF_EPOCH = "perf/epoch"  # logged once an epoch's end (evaluation, grid) is done

# --- evaluation metrics (in training at the step, and by the evaluate stage) --------------------
EVAL_PREFIX = "eval/"
GEN_ACCURACY = "eval/gen_accuracy"
Q_ACCURACY = "eval/q_accuracy"
DEMO_SCORE_MEAN = "eval/demo_score_mean"
DEMO_SCORE_MIN = "eval/demo_score_min"
DEMO_PERFECT_FRAC = "eval/demo_perfect_frac"
MIN_CODE_PURITY = "eval/min_code_purity"
FLD = "eval/fld"
FLD_FLOOR = "eval/fld_floor"
# How much G's images vary with z for a fixed code, as a fraction of how much real test digits of
# one class vary (mean per-pixel standard deviation): about 1 for a G that draws varied digits,
# near 0 for one that ignores z and draws one image per code.
STYLE_SPREAD = "eval/style_spread"
EVAL_METRICS = (GEN_ACCURACY, Q_ACCURACY, DEMO_SCORE_MEAN, DEMO_SCORE_MIN, DEMO_PERFECT_FRAC,
                MIN_CODE_PURITY, FLD, STYLE_SPREAD)
# Figures the report's evaluation table shows per run, in its column order.
REPORT_METRICS = (GEN_ACCURACY, Q_ACCURACY, DEMO_SCORE_MIN, DEMO_PERFECT_FRAC, FLD, STYLE_SPREAD)
CLASSIFIER_ACCURACY = "test_accuracy"  # the reference classifier's run

# --- a seed check's parent run (``infogan seeds``) -----------------------------------------------
SEEDS_EVALUATED = "seeds/evaluated"  # seeds with the evaluate stage's figures
SEEDS_PASSED = "seeds/passed"  # of those, the seeds that meet the check's bar


def seed_summary(key: str, label: str) -> str:
    """A seed check's ``label`` (mean, sd or worst) of evaluation metric ``key`` over its seeds:
    ``seeds/gen_accuracy_worst``, ..."""
    return f"seeds/{key.removeprefix(EVAL_PREFIX)}_{label}"


def continuous_effect(code: int, what: str) -> str:
    """Correlation of continuous code ``code`` (1-based) with ``what`` ("slant" or "width")."""
    return f"eval/cont_c{code}_{what}"


# --- step-indexed images and artifacts ----------------------------------------------------------
SAMPLES = "samples"  # the fixed-noise grid, one per epoch


def traversal(index: int) -> str:
    """The step-indexed image of continuous code ``index`` (0-based): ``traversal/c1``, ..."""
    return f"traversal/c{index + 1}"


REAL_GRID = "samples/real.png"
FINAL_GRID = "samples/final.png"
CONFIG_FILE = "config.yaml"
DATA_MANIFEST_FILE = "data_manifest.json"
FIXED_NOISE_FILE = "fixed_noise.npy"
CHECKPOINTS_DIR = "checkpoints"
MAPPING_FILE = "eval/mapping.json"
DEMO_FIGURE = "eval/demo.png"
CONFUSION_FIGURE = "eval/confusion.png"
CLASSIFIER_WEIGHTS = "classifier.pt"
SEEDS_TABLE_MD = "seeds.md"
SEEDS_TABLE_CSV = "seeds.csv"

# --- tags ---------------------------------------------------------------------------------------
TAG_PREFIX = "infogan."
STAGE = "infogan.stage"  # data | train | evaluate | report | pipeline | classifier | sweep | seeds
CONFIG_HASH = "infogan.config_hash"
HOST = "infogan.host"
PRECISION = "infogan.precision"
DEVICE = "infogan.device"  # where the run trained: cpu | cuda | mps
STOP_REASON = "infogan.stop_reason"  # finished | non_finite | a reason set from outside
DATA_SOURCE = "infogan.data_source"
DATA_SHA256 = "infogan.data_sha256"
DATA_CACHE = "infogan.data_cache"
CLASSIFIER_KEY = "infogan.classifier_key"
CLASSIFIER_RUN_ID = "infogan.classifier_run_id"
CLASSIFIER_CACHED_FROM = "infogan.classifier_cached_from"  # a classifier run logged from the user cache
EVALUATED_STEP = "infogan.evaluated_step"
EVALUATED_RUN_ID = "infogan.evaluated_run_id"
REPORT_RUNS = "infogan.report_runs"
SWEEP_PARENT_RUN_ID = "infogan.sweep_parent_run_id"
PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's own tag on a child run
SEEDS_KEY = "infogan.seeds_key"  # a seed check's parent: its config and seeds, to find it again
SEEDS_PARENT_RUN_ID = "infogan.seeds_parent_run_id"  # on the run `mlflow run -e seeds` opened
SEEDS_PASSED_TAG = "infogan.seeds_passed"  # "4 of 5"
SEEDS_WORST = "infogan.seeds_worst"  # the seed with the lowest generated accuracy

# --- a sweep's tags (``infogan sweep``): Optuna's study and trial on the MLflow runs ---------------
OPTUNA_STUDY = "optuna.study"  # on the sweep's parent run and on each trial's run
OPTUNA_TRIAL = "optuna.trial"  # the trial's number
OPTUNA_STATE = "optuna.state"  # RUNNING, then COMPLETE | PRUNED | FAIL
OPTUNA_RETRIED_FROM = "optuna.retried_from"  # a crashed trial's number, on the trial that resumed it
OPTUNA_STORAGE = "optuna.storage"  # the study's storage URL, password hidden
OPTUNA_DIRECTION = "optuna.direction"
OPTUNA_METRIC = "optuna.metric"  # the objective's metric key
OPTUNA_BEST_TRIAL = "optuna.best_trial"
OPTUNA_BEST_RUN_ID = "optuna.best_run_id"


def stage_run_id(stage: str) -> str:
    """The pipeline's parent run's tag naming its ``stage`` child: ``infogan.train_run_id``, ..."""
    return f"infogan.{stage}_run_id"
