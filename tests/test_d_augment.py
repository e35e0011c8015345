"""train.d_augment: D judges changed copies of real and fake digits, and Q reads its codes from
those same passes. The step's wiring against the plain step, what each term trains, the share's
schedule, and the configs that cannot use it."""
import pytest
import torch
from torch.testing import assert_close

from conftest import REPO, run_step, same
from pipeline import augment, step
from pipeline.config import ConfigError, from_yaml, load_config, to_yaml
from pipeline.optim import changed_share
from pipeline.plan import Plan

# Layouts D can judge changed copies in: real and fake normalised apart, or no batch norm.
ARCHS = ["paper", "tconv", "upsample_sn"]


def run(arch="paper", share=None, code_weight=1.0, trains_trunk=True, real_weight=0.0):
    """``run_step``; ``share`` None is the plain step, else D judges ``d_view`` at that share."""
    view = None if share is None else augment.d_view(torch.Generator().manual_seed(3), share)
    return run_step(code_weight, trains_trunk, arch, real_weight=real_weight, d_view=view)


@pytest.mark.parametrize("arch", ["paper", "tconv"])
def test_with_no_image_changed_the_step_is_the_plain_step_without_q_s_views(arch):
    """At share 0 D judges the plain images, so every gradient and logged value equals the plain
    step's, whose Q reads the code from D's pass on the plain fakes (info_augment off)."""
    shared, plain = run(arch, share=0.0), run(arch)
    for part in ("trunk", "head", "q", "g"):
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(shared[part], plain[part])), part
    for key, value in plain["stats"].items():
        assert_close(shared["stats"][key], value, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_optimiser_gets_gradients_and_the_g_step_none_for_d(arch):
    grads = run(arch, share=1.0)
    for part in ("trunk", "head", "q", "g"):
        assert all(gr is not None and gr.abs().sum() > 0 for gr in grads[part]), part
    assert same(grads["d_after_g_step"], grads["trunk"])
    # D judged changed images: its loss is not the plain step's.
    assert abs(grads["stats"]["loss/d"] - run(arch, share=0.0)["stats"]["loss/d"]) > 1e-4


@pytest.mark.parametrize("trains_trunk", [True, False])
def test_the_info_term_reaches_d_s_trunk_only_when_the_flag_is_set(trains_trunk):
    with_info, without = run(share=1.0, trains_trunk=trains_trunk), run(share=1.0, code_weight=0.0,
                                                                                    trains_trunk=trains_trunk)
    assert same(with_info["trunk"], without["trunk"]) is (not trains_trunk)
    assert same(with_info["head"], without["head"])
    assert not same(with_info["g"], without["g"])


def test_the_term_on_real_digits_reads_d_s_pass_on_the_changed_reals(monkeypatch):
    """It is 0 while Q is unsure; counted, it trains Q and the trunk and leaves D's head alone."""
    off = run(share=1.0)
    unsure = run(share=1.0, real_weight=1.0)
    assert unsure["stats"]["loss/info_real"] == 0 and same(unsure["q"], off["q"])
    monkeypatch.setattr(step, "REAL_CONFIDENCE", 0.0)
    counted = run(share=1.0, real_weight=1.0)
    assert counted["stats"]["loss/info_real"] > 0
    assert not same(counted["q"], off["q"]) and not same(counted["trunk"], off["trunk"])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(counted["head"], off["head"]))


def test_d_view_changes_each_image_with_the_given_probability():
    x = torch.rand(400, 1, 28, 28)
    assert torch.equal(augment.d_view(torch.Generator().manual_seed(0), 0.0)(x), x)
    changed = (augment.d_view(torch.Generator().manual_seed(0), 0.3)(x) != x).flatten(1).any(1)
    assert 0.2 < changed.float().mean() < 0.4
    assert (augment.d_view(torch.Generator().manual_seed(0), 1.0)(x) != x).flatten(1).any(1).all()


def test_the_share_falls_from_one_to_the_floor_and_stays():
    assert changed_share(0, 1000, 0.2) == 1.0
    assert changed_share(500, 1000, 0.2) == pytest.approx(0.5)
    assert changed_share(800, 1000, 0.2) == pytest.approx(0.2)
    assert changed_share(999, 1000, 0.2) == 0.2
    assert changed_share(999, 1000, 0.0) == pytest.approx(0.001)


@pytest.mark.parametrize("override, named", [
    (["model.arch=tconv", "train.real_fake_batch=both"], "train.real_fake_batch=both"),
    (["train.d_augment_floor=1.5"], "train.d_augment_floor"),
])
def test_configs_it_cannot_train_are_refused_naming_the_key(override, named):
    with pytest.raises(ConfigError, match=named):
        load_config([], override)


def test_continuous_codes_train_with_the_default_step():
    cfg = load_config([], ["model.continuous_codes=2"])
    assert cfg.train.d_augment and Plan.of(cfg, 10).q_reads == "d_view"


@pytest.mark.parametrize("config", ["configs/lab.yaml", "configs/as_written.yaml", "configs/paper_latent.yaml",
                                    "configs/experiments/tconv_ns.yaml", "configs/experiments/tconv_sat.yaml",
                                    "configs/experiments/upsample_sn_ns.yaml"])
def test_the_tuned_configs_keep_d_on_plain_digits(config):
    assert load_config([str(REPO / config)], []).train.d_augment is False
