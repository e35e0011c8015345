"""The shims in pipeline/compat.py, each on the stored form it keeps loading (the spectral-norm
state's: tests/test_models.py; the old model-code path's: tests/test_serving.py)."""
import hashlib

import torch

from pipeline import compat, names, step
from pipeline.config import NOT_HASHED, config_hash, flatten, from_yaml, load_config, to_yaml


def test_a_config_stored_with_the_decay_in_epochs_loads_as_a_fraction():
    stored = to_yaml(load_config([], ["train.epochs=6"])).replace("lr_decay_fraction: 0.5", "lr_decay_epochs: 3")
    assert "lr_decay_epochs: 3" in stored
    assert from_yaml(stored).train.lr_decay_fraction == 0.5


def test_a_config_stored_before_d_augment_reads_as_the_step_it_ran():
    stored = to_yaml(load_config([], [])).replace("  d_augment: true\n", "")
    assert from_yaml(stored).train.d_augment is False
    assert from_yaml(to_yaml(load_config([], []))).train.d_augment is True


def test_a_run_made_before_a_key_existed_keeps_its_config_hash():
    """The hash of a config with every later key at its "as before" value is the hash of the
    config without those keys, as it was computed before they existed."""
    before = {"train.instance_noise=0.0", "model.continuous_codes=0", "train.d_augment=false",
              "train.mode_seeking=0.0", "eval.classifier_precision=auto"}
    cfg = load_config([], sorted(before))
    old_keys = {k: v for k, v in flatten(cfg).items() if k not in NOT_HASHED and k not in compat.ADDED_LATER}
    assert config_hash(cfg) == hashlib.sha256(repr(sorted(old_keys.items())).encode()).hexdigest()[:16]
    assert config_hash(load_config([], [*sorted(before), "train.instance_noise=0.1"])) != config_hash(cfg)


def test_a_checkpoint_with_fewer_running_sums_restarts_the_interval():
    keys = names.STEP_METRICS + (names.LOSS_INFO_REAL,)
    older = {"sums": torch.ones(len(names.STEP_METRICS)), "count": 3}  # saved before loss/info_real was logged
    acc = step.Accumulator(keys)
    acc.load(older, torch.device("cpu"))
    assert acc.sums is None and acc.count == 0
    acc.load({"sums": torch.ones(len(keys)), "count": 3}, torch.device("cpu"))
    assert acc.count == 3 and acc.means()[names.LOSS_D] == torch.tensor(1 / 3).item()
