"""The step's plan: its rules are the only ones config validation, training and the report read,
each key a rule calls ineffective really changes nothing in a step (and does change it where the
rule does not hold), and training says so in one line."""
import dataclasses

import pytest
import torch

from pipeline import models, plan
from pipeline.config import ConfigError, load_config
from pipeline.optim import make_optimisers
from pipeline.report import wording
from pipeline.step import Batch, Nets, train_step

STEPS_PER_EPOCH = 10


def one_step(overrides: list[str], at: int) -> dict[str, float]:
    """The scalars of step ``at`` of a config (batch 8, two epochs of ten steps) from fresh
    networks and fixed data."""
    cfg = load_config([], ["train.batch_size=8", "train.epochs=2", *overrides])
    torch.manual_seed(0)
    g, d = models.build(cfg.model)
    rng = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 28, 28, generator=rng)
    z, c = torch.randn(8, cfg.model.noise_dim, generator=rng), torch.randint(10, (8,), generator=rng)
    u = torch.rand(8, cfg.model.continuous_codes, generator=rng) * 2 - 1 if cfg.model.continuous_codes else None
    settings = plan.Plan.of(cfg, STEPS_PER_EPOCH).settings(at, rng)
    stats = train_step(Nets(g, d), make_optimisers(g, d, cfg.train), Batch(x, z, c, u), settings)
    return {key: float(value) for key, value in stats.items()}


# key, another value, a config where the key has no effect, one where it has
NO_EFFECT_CASES = [
    ("train.info_augment", "false", [], ["train.d_augment=false"]),
    ("train.joint_weight", "0.7", ["model.arch=tconv", "train.d_augment=false"],
     ["model.arch=tconv", "train.d_augment=false", "train.real_fake_batch=both"]),
    ("train.real_fake_batch", "joint", ["model.arch=upsample_sn", "train.d_augment=false"],
     ["model.arch=tconv", "train.d_augment=false"]),
    ("train.d_augment_floor", "0.9", ["train.d_augment=false"], []),
    ("train.continuous_weight", "3.0", [], ["model.continuous_codes=2"]),
    ("train.mode_seeking_after_epochs", "0.0", [], ["train.mode_seeking=1"]),
    ("train.mode_seeking_cap", "0.01", [], ["train.mode_seeking=1"]),
]


def test_every_no_effect_rule_has_a_case():
    assert sorted({rule.key for rule in plan.NO_EFFECT}) == sorted(key for key, *_ in NO_EFFECT_CASES)


@pytest.mark.parametrize("key, value, idle, active", NO_EFFECT_CASES, ids=[case[0] for case in NO_EFFECT_CASES])
def test_a_key_the_rules_call_ineffective_changes_no_step_and_does_where_they_do_not(key, value, idle, active):
    steps = (0, 2 * STEPS_PER_EPOCH - 1)  # the first and the last: the schedules' two ends
    values = plan.values_of(load_config([], idle))
    assert plan.no_effect(values, key), (key, idle)
    for at in steps:
        assert one_step(idle, at) == one_step([*idle, f"{key}={value}"], at), (key, at)
    assert plan.no_effect(plan.values_of(load_config([], active)), key) is None
    assert any(one_step(active, at) != one_step([*active, f"{key}={value}"], at) for at in steps), key


def test_training_names_each_key_set_to_no_effect_in_one_line():
    cfg = load_config([], ["train.joint_weight=0.3", "train.info_augment=false", "train.mode_seeking_cap=0.1"])
    lines = plan.unused_keys(cfg)
    assert lines == [
        "train.info_augment=false has no effect: under train.d_augment Q reads its codes from the changed copies "
        "D judges",
        "train.joint_weight=0.3 has no effect: only train.real_fake_batch=both weighs two views of D's batch norm",
        "train.mode_seeking_cap=0.1 has no effect: mode seeking is off (train.mode_seeking is 0)",
    ]
    assert plan.unused_keys(load_config([], [])) == []  # the defaults say nothing


@pytest.mark.parametrize("name", ["configs/experiments/tconv_ns.yaml", "configs/experiments/tconv_sat.yaml",
                                  "configs/experiments/upsample_sn_ns.yaml", "configs/paper_latent.yaml",
                                  "configs/lab.yaml", "configs/as_written.yaml"])
def test_no_shipped_config_sets_a_key_that_does_nothing(name):
    from conftest import REPO

    assert plan.unused_keys(load_config([str(REPO / name)], [])) == []


def test_validation_and_the_report_read_the_rules_from_the_plan(monkeypatch):
    with pytest.raises(ConfigError, match="train.d_augment"):
        load_config([], ["model.arch=tconv", "train.real_fake_batch=joint"])
    params = {"model.arch": "paper", "train.d_augment": "True", "train.info_augment": "True",
              "train.real_fake_batch": "separate", "train.joint_weight": "0.2"}
    assert wording.setting(params, "train.info_augment") == "unused"
    assert wording.setting(params, "train.joint_weight") == "unused"
    assert wording.setting(params, "train.d_augment") == "True"
    spectral = {"model.arch": "upsample_sn", "train.real_fake_batch": "joint", "train.d_augment": "False"}
    assert wording.setting(spectral, "train.real_fake_batch") == "unused"
    assert wording.setting({"train.real_fake_batch": "joint"}, "train.real_fake_batch") == "joint"  # no arch logged
    monkeypatch.setattr(plan, "EXCLUSIONS", ())
    monkeypatch.setattr(plan, "NO_EFFECT", ())
    assert load_config([], ["model.arch=tconv", "train.real_fake_batch=joint"]).train.d_augment
    assert wording.setting(params, "train.info_augment") == "True"


def test_the_plan_reads_the_config_once():
    cfg = load_config([], ["train.epochs=4", "train.mode_seeking=2", "train.mode_seeking_after_epochs=0.5"])
    steps = plan.Plan.of(cfg, STEPS_PER_EPOCH)
    assert (steps.q_reads, steps.joint, steps.total_steps, steps.decay_steps) == ("d_view", 0.0, 40, 20)
    assert [steps.settings(at, torch.Generator()).seeking for at in (0, 4, 5, 39)] == [0.0, 0.0, 2.0, 2.0]
    assert [steps.settings(at, torch.Generator()).lr_scale for at in (0, 20, 30)] == [1.0, 1.0, 0.5]
    both = plan.Plan.of(load_config([], ["model.arch=tconv", "train.d_augment=false",
                                         "train.real_fake_batch=both"]), STEPS_PER_EPOCH)
    assert (both.q_reads, both.joint, both.d_augment_floor) == ("moved", 0.2, None)
    assert dataclasses.replace(both, joint=1.0).joint == 1.0  # frozen: a changed plan is a new one
