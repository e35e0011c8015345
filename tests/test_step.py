"""One training step: which parameters each loss trains, Q's augmented view, Q's term on real
digits, D's instance noise, the mode-seeking term, the learning-rate schedule and the moving
average of G."""
import copy
import dataclasses
import math

import pytest
import torch
from torch.testing import assert_close

from conftest import REPO, recording_optimisers, run_step, same, step_settings
from pipeline import augment, latents, losses, models, step
from pipeline.config import load_config
from pipeline.plan import Plan
from pipeline.augment import INFO_AUGMENT, q_view, real_q_view
from pipeline.optim import averaged, changed_share, lr_scale, make_optimisers, set_lr_scale
from pipeline.step import Batch, Nets, mode_seeking_reward, pair_codes, train_step


# arch, share of the losses on a joint real+fake batch (0.2: real_fake_batch=both)
LAYOUTS = [("paper", 0.0), ("tconv", 1.0), ("tconv", 0.2), ("upsample_sn", 0.0)]


@pytest.mark.parametrize("arch, joint", LAYOUTS)
def test_every_optimiser_gets_gradients_for_all_its_parameters(arch, joint):
    grads = run_step(1.0, True, arch, joint)
    for part in ("trunk", "head", "q", "g"):
        assert all(gr is not None and gr.abs().sum() > 0 for gr in grads[part]), part


@pytest.mark.parametrize("arch, joint", LAYOUTS)
@pytest.mark.parametrize("trains_trunk", [True, False])
def test_info_term_reaches_d_trunk_only_when_flag_is_set(trains_trunk, arch, joint):
    with_info, without_info = run_step(1.0, trains_trunk, arch, joint), run_step(0.0, trains_trunk, arch, joint)
    assert same(with_info["trunk"], without_info["trunk"]) is (not trains_trunk)
    assert same(with_info["head"], without_info["head"])  # the info term never trains D's head
    assert not same(with_info["g"], without_info["g"])  # ... and always trains G
    assert all(gr.abs().sum() == 0 for gr in without_info["q"])  # Q learns from the info term alone


def test_both_views_weigh_the_joint_and_the_separate_d_loss():
    """real_fake_batch=both: D's loss is w x (real and fake normalised as one batch) + (1 - w) x
    (each normalised alone), and D's logged probabilities are the joint view's."""
    cfg = load_config([], ["train.batch_size=8", "model.arch=tconv"])
    torch.manual_seed(0)
    g, d = models.build(cfg.model)
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    torch.manual_seed(1)
    x, z, c = torch.rand(8, 1, 28, 28), torch.randn(8, 54), torch.randint(10, (8,))
    settings = step_settings(cfg, joint=0.25, real_weight=0.0, d_view=None, info_view=None)
    stats = train_step(Nets(g, d), make_optimisers(g, d, cfg.train), Batch(x, z, c), settings)
    with torch.no_grad():
        fake = g0(z, latents.one_hot(c, 10))
        joint = d0.head(d0.trunk(torch.cat([x, fake]))).squeeze(1)
        alone = d0.head(d0.trunk(x)).squeeze(1), d0.head(d0.trunk(fake)).squeeze(1)
    joint_loss, separate_loss = losses.d_loss(joint[:8], joint[8:]), losses.d_loss(*alone)
    assert abs(joint_loss - separate_loss) > 0.05  # the views differ, so the weights matter
    assert_close(stats["loss/d"], 0.25 * joint_loss + 0.75 * separate_loss)
    assert_close(stats["prob/d_real"], torch.sigmoid(joint[:8]).mean())


def test_the_layers_before_d_s_batch_norm_run_once_per_batch_and_half_step(monkeypatch):
    """The lab's tconv step (both views, Q on moved fakes and on changed reals, mode seeking): the
    same losses, gradients and batch-norm statistics as with the whole trunk run on every view's
    batch, while D's first convolution sees 6 batches of images, not 11 (D step: reals, fakes,
    moved fakes, changed reals; G step: reals, fakes)."""
    cfg = load_config([str(REPO / "configs" / "experiments" / "tconv_ns.yaml")], ["train.batch_size=8"])

    def one_step():
        torch.manual_seed(0)
        g, d = models.build(cfg.model)
        calls = []
        d.trunk[0].register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
        settings = dataclasses.replace(step_settings(cfg, seeking=1.0), lr_scale=None)
        torch.manual_seed(1)
        x, z, c = torch.rand(8, 1, 28, 28), torch.randn(8, 54), torch.randint(10, (8,))
        opt = recording_optimisers(g, d)
        stats = train_step(Nets(g, d), opt, Batch(x, z, c), settings)
        return stats, [*opt.d.seen, *opt.q.seen, *opt.g.seen, *d.buffers()], calls

    shared = one_step()
    monkeypatch.setattr(step.Trunk, "__call__", lambda self, *batches: self.d.trunk(torch.cat(batches)))
    whole = one_step()
    assert sum(shared[2]) == 6 * 8 and sum(whole[2]) == 11 * 8, (shared[2], whole[2])
    for key in shared[0]:
        assert_close(shared[0][key], whole[0][key], rtol=1e-4, atol=1e-5)
    assert len(shared[1]) == len(whole[1])
    for got, expected in zip(shared[1], whole[1]):
        assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_q_learns_to_read_the_code_within_a_few_steps():
    """The info loss must fall below ln 10 (Q guessing): with spectral norm's small features an
    unnormalised Q head stayed at ln 10 for epochs (upsample_sn, before its Q got batch norm)."""
    cfg = load_config([], ["train.batch_size=32", "model.arch=upsample_sn"])
    torch.manual_seed(0)
    g, d = models.build(cfg.model)
    opt = make_optimisers(g, d, cfg.train)
    x = torch.rand(32, 1, 28, 28)
    settings = step_settings(cfg, real_weight=0.0, lr_scale=None, d_view=None, info_view=None)
    info = [train_step(Nets(g, d), opt, Batch(x, torch.randn(32, 54), torch.randint(10, (32,))),
                       settings)["loss/info"].item() for _ in range(40)]
    assert sum(info[-5:]) / 5 < math.log(10) - 0.3, info  # 1.56 with the normalised Q, 2.30 without


def test_logged_g_gradient_norm_is_the_norm_of_what_gs_optimiser_applies():
    grads = run_step(1.0, True)
    expected = torch.cat([gr.flatten() for gr in grads["g"]]).double().norm().float()  # 6.6M squares: sum in float64
    torch.testing.assert_close(grads["stats"]["grad/g_norm"], expected, rtol=1e-4, atol=0)


@pytest.mark.parametrize("arch, joint", LAYOUTS)
def test_g_step_computes_no_weight_gradients_for_d(arch, joint):
    grads = run_step(1.0, True, arch, joint)
    # D's .grad after the whole step is still what the D step produced: the G step added nothing.
    assert same(grads["d_after_g_step"], grads["trunk"])


def test_random_stroke_width_keeps_images_at_zero_and_thickens_or_thins_strokes():
    x = torch.zeros(2, 1, 28, 28)
    x[:, :, 8:20, 13:15] = 1.0  # a vertical bar two pixels wide
    rng = torch.Generator().manual_seed(0)
    assert torch.equal(augment.random_stroke_width(x, rng, 0.0), x)
    changed = augment.random_stroke_width(x.repeat(32, 1, 1, 1), rng, 1.0)
    ink = changed.sum(dim=(1, 2, 3))
    assert ink.max() > x[0].sum() * 1.5 and ink.min() < x[0].sum() * 0.5  # some thicker, some thinner
    assert changed.min() >= 0 and changed.max() <= 1


@pytest.mark.parametrize("arch, joint", LAYOUTS)
def test_real_consistency_trains_q_and_the_trunk_not_d_head(arch, joint, monkeypatch):
    """Q's term on changed real digits (train.real_consistency) adds gradients to Q and D's trunk
    through the real view and leaves D's head alone; it is logged, and 0 while Q is unsure."""
    rng = torch.Generator().manual_seed(2)
    plain = run_step(1.0, True, arch, joint)
    unsure = run_step(1.0, True, arch, joint, real_view=real_q_view(rng), real_weight=1.0)
    assert unsure["stats"]["loss/info_real"] == 0  # an untrained Q is confident about no real digit
    if arch != "upsample_sn":  # spectral norm's power iteration advances on every pass of the trunk
        assert same(unsure["q"], plain["q"]) and same(unsure["trunk"], plain["trunk"])
    monkeypatch.setattr(step, "REAL_CONFIDENCE", 0.0)  # every real digit counts
    counted = run_step(1.0, True, arch, joint, real_view=real_q_view(rng), real_weight=1.0)
    assert counted["stats"]["loss/info_real"] > 0
    assert not same(counted["q"], plain["q"]) and not same(counted["trunk"], plain["trunk"])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(counted["head"], plain["head"]))


def test_random_affine_is_the_identity_at_zero_strength_and_moves_pixels_otherwise():
    x = torch.rand(4, 1, 28, 28)
    rng = torch.Generator().manual_seed(0)
    assert torch.allclose(augment.random_affine(x, rng, 0.0, 0.0, 0.0), x, atol=1e-4)
    moved = augment.random_affine(x, rng, **INFO_AUGMENT)
    assert moved.shape == x.shape and (moved - x).abs().mean() > 0.05


@pytest.mark.parametrize("arch, joint", LAYOUTS)
def test_info_augment_changes_what_q_learns_from_and_nothing_else(arch, joint):
    plain = run_step(1.0, True, arch, joint)
    identity = run_step(1.0, True, arch, joint, info_view=lambda images: images)
    rng = torch.Generator().manual_seed(2)
    viewed = run_step(1.0, True, arch, joint, info_view=q_view(rng))
    # Q learns from the view: an identity view changes nothing, a transformed one does...
    # (except under spectral norm, whose power iteration advances on every pass of the trunk)
    if arch != "upsample_sn":
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(identity["q"], plain["q"]))
        # G's step reads Q on the plain fake
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(viewed["g"], plain["g"]))
    assert not same(viewed["q"], plain["q"])
    # ... and the real/fake head never sees the view
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(viewed["head"], plain["head"]))


def test_lr_decay_is_constant_then_linear_to_almost_zero_and_a_function_of_the_step():
    # 60 steps, decay over the last 30: constant for steps 0-29, then linear
    scales = [lr_scale(step, 60, 30) for step in range(60)]
    assert scales[:31] == [1.0] * 31
    assert scales[45] == pytest.approx(0.5) and scales[59] == pytest.approx(1 / 30)
    assert all(a > b for a, b in zip(scales[30:], scales[31:]))
    assert [lr_scale(step, 60, 0) for step in (0, 59)] == [1.0, 1.0]
    cfg = load_config([], ["train.lr_d=1e-3", "train.lr_g=2e-3", "train.lr_q=4e-3"])
    g, d = models.build(cfg.model)
    opt = make_optimisers(g, d, cfg.train)
    set_lr_scale(opt, (cfg.train.lr_d, cfg.train.lr_q, cfg.train.lr_g), 0.5)
    assert [o.param_groups[0]["lr"] for o in (opt.d, opt.q, opt.g)] == pytest.approx([5e-4, 2e-3, 1e-3])


def test_adam_is_fused_on_cpu_and_a_checkpoint_resumes_under_either_kernel():
    """The fused kernel makes the same update as PyTorch's default one; a checkpoint written under
    one loads under the other and keeps the loading machine's kernel."""
    cfg = load_config([], ["train.batch_size=8"])
    x, z, c = torch.rand(8, 1, 28, 28), torch.randn(8, 54), torch.randint(10, (8,))
    torch.manual_seed(0)
    g, d = models.build(cfg.model)
    opt = make_optimisers(g, d, cfg.train)
    groups = [group for o in (opt.d, opt.q, opt.g) for group in o.param_groups]
    assert all(group["fused"] for group in groups)
    settings = step_settings(cfg)
    train_step(Nets(g, d), opt, Batch(x, z, c), settings)

    # the same update: one more G step from the same state and gradients, fused and not
    state, params = copy.deepcopy(opt.g.state_dict()), [p.detach().clone() for p in g.parameters()]
    grads = [torch.randn_like(p) for p in params]
    after = {}
    for fused in (True, None):
        with torch.no_grad():
            for p, saved, grad in zip(g.parameters(), params, grads):
                p.copy_(saved)
                p.grad = grad.clone()
        opt.g.load_state_dict(copy.deepcopy(state))
        opt.g.param_groups[0]["fused"] = fused
        opt.g.step()
        after[fused] = [p.detach().clone() for p in g.parameters()]
    for fused_p, plain_p in zip(after[True], after[None]):
        assert_close(fused_p, plain_p, rtol=1e-5, atol=1e-7)

    # a fused checkpoint loads into optimisers that may not fuse, and the reverse
    saved = opt.state_dict()
    for o in (opt.d, opt.q, opt.g):
        o.param_groups[0]["fused"] = None
    opt.load_state_dict(saved)
    assert all(o.param_groups[0]["fused"] is None for o in (opt.d, opt.q, opt.g))
    train_step(Nets(g, d), opt, Batch(x, z, c), settings)
    fresh = make_optimisers(g, d, cfg.train)
    fresh.load_state_dict(opt.state_dict())
    assert all(group["fused"] for o in (fresh.d, fresh.q, fresh.g) for group in o.param_groups)


def test_g_average_follows_the_warm_up_then_the_decay_and_averages_batch_norm_statistics():
    g = models.build(load_config([], []).model)[0]
    ema = averaged(g, decay=0.9)
    for n in range(40):  # weights and running statistics set to n before update n
        with torch.no_grad():
            for tensor in [*g.parameters(), *[b for b in g.buffers() if b.is_floating_point()]]:
                tensor.fill_(float(n))
        for b in g.buffers():
            if not b.is_floating_point():
                b.fill_(n)
        ema.update_parameters(g)
    expected = 0.0  # the first update copies; update n >= 1 keeps min(0.9, (1 + n) / (10 + n))
    for n in range(1, 40):
        keep = min(0.9, (1 + n) / (10 + n))
        expected = keep * expected + (1 - keep) * n
    for name, tensor in [*ema.module.named_parameters(), *ema.module.named_buffers()]:
        if tensor.is_floating_point():
            assert_close(tensor, torch.full_like(tensor, expected), msg=name)
        else:
            assert int(tensor) == 39, name  # batch norm's step counter is copied, not averaged
    assert 30 < expected < 39  # neither the last weights nor a plain mean of all of them
    assert all(p.requires_grad for p in g.parameters())


@pytest.mark.parametrize("arch, joint", LAYOUTS)
def test_instance_noise_reaches_every_image_d_sees_and_falls_to_zero(arch, joint):
    from pipeline.optim import instance_noise_std, noisy

    plain = run_step(1.0, True, arch, joint)
    identity = run_step(1.0, True, arch, joint, d_input=lambda images: images)
    noised = run_step(1.0, True, arch, joint, d_input=noisy(0.3, torch.Generator().manual_seed(3)))
    if arch != "upsample_sn":  # (spectral norm's power iteration moves on every trunk pass)
        for part in ("trunk", "head", "q", "g"):
            assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(identity[part], plain[part])), part
    for part in ("head", "q", "g"):  # D's verdicts, Q's reading and G's step all see the noise
        assert not same(noised[part], plain[part]), part
    assert noisy(0.0, torch.Generator()) is None
    assert [instance_noise_std(s, 100, 0.3) for s in (0, 50, 100, 150)] == pytest.approx([0.3, 0.15, 0.0, 0.0])


def test_mode_seeking_reward_is_the_capped_image_distance_per_unit_of_z_distance_over_pairs():
    assert pair_codes(torch.tensor([1, 2, 3, 4, 5])).tolist() == [1, 2, 1, 2, 5]  # i and i + n/2 share a code
    z = torch.zeros(4, 2)
    z[2:] = 2.0  # each pair's z differ by 2 (mean absolute difference)
    fake = torch.zeros(4, 1, 2, 2)
    fake[2], fake[3] = 0.2, 1.0  # image distances 0.2 and 1.0: ratios 0.1 and 0.5
    assert mode_seeking_reward(fake, z, cap=1.0).item() == pytest.approx(0.3)
    assert mode_seeking_reward(fake, z, cap=0.2).item() == pytest.approx(0.15)  # the second pair capped


@pytest.mark.parametrize("arch, joint", LAYOUTS)
def test_mode_seeking_trains_g_alone(arch, joint):
    plain = run_step(1.0, True, arch, joint, paired=True)  # the codes the step pairs while it seeks modes
    seeking = run_step(1.0, True, arch, joint, seeking=5.0)
    if arch != "upsample_sn":  # (spectral norm's power iteration moves on every trunk pass)
        for part in ("trunk", "head", "q"):
            assert same(plain[part], seeking[part]), part
    assert not same(plain["g"], seeking["g"])


def test_mode_seeking_makes_gs_images_differ_more_with_z():
    def reward_after(seeking: float) -> float:
        cfg = load_config([], ["train.batch_size=16", "model.arch=tconv"])
        torch.manual_seed(0)
        g, d = models.build(cfg.model)
        opt = make_optimisers(g, d, cfg.train)
        gen = torch.Generator().manual_seed(1)
        settings = step_settings(cfg, info_trains_d_trunk=False, joint=1.0, seeking=seeking, mode_seeking_cap=100.0,
                                 real_weight=0.0, d_view=None, info_view=None, lr_scale=None)
        for _ in range(3):
            x, z = torch.rand(16, 1, 28, 28, generator=gen), torch.randn(16, 54, generator=gen)
            c = torch.randint(10, (16,), generator=gen)  # the step pairs the codes while it seeks modes
            train_step(Nets(g, d), opt, Batch(x, z, c), settings)
        z, c = torch.randn(64, 54, generator=gen), pair_codes(torch.randint(10, (64,), generator=gen))
        with torch.no_grad():
            return mode_seeking_reward(g(z, latents.one_hot(c, g.code_dim)), z, cap=100.0).item()

    assert reward_after(100.0) > 1.5 * reward_after(0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dilate3_is_a_3x3_max_pool_with_and_without_gradients(dtype):
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(3)).to(dtype)
    x[:, :, :4] = 0.0  # ties, as on a real digit's ground
    pooled = torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1)
    assert torch.equal(augment.dilate3(x), pooled)
    assert torch.equal(-augment.dilate3(-x), -torch.nn.functional.max_pool2d(-x, 3, stride=1, padding=1))
    leaf = x.clone().requires_grad_(True)
    augment.dilate3(leaf).sum().backward()
    expected = x.clone().requires_grad_(True)
    torch.nn.functional.max_pool2d(expected, 3, stride=1, padding=1).sum().backward()
    assert torch.equal(leaf.grad, expected.grad)


# --- the step's direction, as each shipped config trains -----------------------------------------

# The defaults ("base") and every config file shipped, as named under configs/.
SHIPPED = ["base", *sorted(str(p.relative_to(REPO / "configs").with_suffix("")) for p in (REPO / "configs").rglob("*.yaml")
                           if p.name != "base.yaml")]


# Rates small enough that one Adam step (each weight moved by its rate against its gradient's sign)
# stays where the losses are near linear, so its direction is the gradients': at the configs'
# own rates of up to 1e-3, G's first step raised D's score of its images with G's loss negated too.
SMALL_STEP = ("train.lr_d=1e-5", "train.lr_g=1e-5", "train.lr_q=1e-5")


def shipped_step(name: str, seed: int, *overrides: str) -> dict:
    """One ``train_step`` of fresh networks as ``configs/<name>.yaml`` trains (its views, weights, G
    loss, batch-norm layout; the mode-seeking term on), in fp32 on digit-like images, and what D
    and Q make of the same images and codes before and after it. Adam's first step moves each
    weight by its learning rate against its gradient, so each loss falls on the batch it saw
    (``SMALL_STEP``)."""
    files = [] if name == "base" else [str(REPO / "configs" / f"{name}.yaml")]
    cfg = load_config(files, ["train.batch_size=16", *SMALL_STEP, *overrides])
    tcfg, n = cfg.train, 16
    torch.manual_seed(seed)
    g, d = models.build(cfg.model)
    opt = make_optimisers(g, d, tcfg)
    rng = torch.Generator().manual_seed(seed)
    x = augment.random_stroke_width(torch.rand(n, 1, 28, 28, generator=rng).gt(0.8).float(), rng, 1.0)
    z, c = latents.sample(n, cfg.model.noise_dim, cfg.model.code_dim, rng, torch.device("cpu"))
    u = latents.continuous(n, cfg.model.continuous_codes, rng, torch.device("cpu"))
    plan = Plan.of(cfg, 100)
    settings = plan.settings(10 ** 6 if plan.mode_seeking else 0, rng)  # mode seeking on where the config has it

    def seen(images):
        """D's changed copies (``train.d_augment``) as at a run's start, image i changed the same
        way at every call, so that D can be scored again on exactly what it judged."""
        return augment.d_view(torch.Generator().manual_seed(seed), 1.0)(images)

    d_view = seen if plan.d_augment_floor is not None else None
    settings = dataclasses.replace(settings, d_view=d_view, lr_scale=None, d_input=None)
    c = pair_codes(c) if settings.seeking else c  # as the step pairs them, so that D and Q are scored on them
    view = d_view or (lambda images: images)
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    joint = plan.joint if d.batch_norm else 0.0
    code = latents.one_hot(c, cfg.model.code_dim)
    with torch.no_grad():
        fake0 = g0(z, code, u)
    train_step(Nets(g, d), opt, Batch(x, z, c, u), settings)

    def judged(net, images) -> tuple[float, float]:
        """D's mean logits on the reals and on ``images``, weighed over the views its loss uses
        (joint and/or separate batch norm), on the copies it judged."""
        net = copy.deepcopy(net)
        shown = step.Shown(view(x), view(images), c, u, joint, z, images)
        with torch.no_grad():
            views = shown.views(step.Trunk(net), shown.fake, real=True)
        return (sum(w * float(on_real.mean()) for w, on_real, *_ in views),
                sum(w * float(on_fake.mean()) for w, _, on_fake, *_ in views))

    def q_loss(net, images) -> float:
        """Q's info loss (with the continuous codes' term, where the config has them) on ``images``."""
        net = copy.deepcopy(net)
        shown = step.Shown(x, images, c, u, joint, z, images)
        with torch.no_grad():
            logits, means = net.read_codes(shown.features(step.Trunk(net), images))
            loss = losses.info_loss(logits, c)
            return float(loss if u is None else loss + tcfg.continuous_weight * losses.info_loss_continuous(means, u))

    with torch.no_grad():
        fake1 = copy.deepcopy(g)(z, code, u)
    after = judged(d, fake0)
    return {"d": (judged(d0, fake0), after), "g": (after[1], judged(d, fake1)[1]),
            "q": (q_loss(d0, fake0), q_loss(d, fake0)), "cfg": cfg}


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_step_moves_d_g_and_q_the_way_their_losses_say(name):
    """After one step as the config trains: D tells the same reals from the same fakes by a wider
    margin of its score, and Q reads the codes of the same fakes with a lower loss. After one step
    with the info and mode-seeking terms off (so that G's step is its adversarial loss alone), G's
    new images score higher under the new D. A sign flipped in D's loss, in the info term or in
    G's loss fails here (checked on mutated copies of step.py and losses.py, docs/results.md)."""
    moved = shipped_step(name, 0)
    (real0, fake0), (real1, fake1) = moved["d"]
    assert real1 - fake1 > real0 - fake0, (name, "D tells the same reals from fakes less well", moved["d"])
    before, after = moved["q"]
    assert after < before, (name, "Q reads the same codes with a higher loss", moved["q"])
    before, after = shipped_step(name, 0, "train.code_weight=0", "train.mode_seeking=0")["g"]
    assert after > before, (name, f"G ({moved['cfg'].train.g_loss}) made images D scores lower", (before, after))
