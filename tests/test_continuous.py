"""The InfoGAN paper's continuous codes: the info term, its gradients, the latent's shapes, the
moment-based slant and width, the correlations, and a smoke run that logs and reports them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from conftest import SMOKE, recording_optimisers, same, step_settings
from pipeline import cli, evaluate, latents, losses, measure, metrics, models, runs, train
from pipeline.config import load_config
from pipeline.step import Batch, Nets, train_step

ARCHES = ("paper", "tconv", "upsample_sn")


def test_continuous_info_term_against_hand_computed_values():
    means = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.2, 0.4]])
    u = torch.tensor([[0.5, -0.5], [1.0, 0.0], [-0.8, 0.4]])
    # per sample, 1/2 sum_k (u_k - mean_k)^2: 0.25, 0.5, 0.5; averaged over the batch
    assert losses.info_loss_continuous(means, u).item() == pytest.approx((0.25 + 0.5 + 0.5) / 3)
    assert losses.info_loss_continuous(u, u).item() == 0.0
    # the gradient with respect to Q's means is (mean - u) / B
    means.requires_grad_(True)
    losses.info_loss_continuous(means, u).backward()
    torch.testing.assert_close(means.grad, (means.detach() - u) / 3)


def test_without_continuous_codes_the_latent_and_networks_are_as_before():
    cfg = load_config([], [])
    assert cfg.model.continuous_codes == 0
    g, d = models.build(cfg.model)
    assert g.net[0].in_features == 54 + 10 and d.q[-1].out_features == 10
    rng = torch.Generator().manual_seed(3)
    before = rng.get_state()
    assert latents.continuous(8, 0, rng, torch.device("cpu")) is None
    assert torch.equal(rng.get_state(), before)  # nothing drawn: default runs repeat bit for bit


@pytest.mark.parametrize("arch", ARCHES)
def test_shapes_with_two_continuous_codes(arch):
    cfg = load_config([], [f"model.arch={arch}", "model.continuous_codes=2"])
    g, d = models.build(cfg.model)
    g.eval()
    d.eval()
    rng = torch.Generator().manual_seed(0)
    u = latents.continuous(6, 2, rng, torch.device("cpu"))
    assert u.shape == (6, 2) and -1 <= u.min() and u.max() <= 1
    z, c = torch.randn(6, 54), latents.one_hot(torch.arange(6), 10)
    images = g(z, c, u)
    assert images.shape == (6, 1, 28, 28)
    torch.testing.assert_close(g(z, c), g(z, c, torch.zeros(6, 2)))  # no codes given = codes at 0
    assert not torch.allclose(g(z, c, u), g(z, c))
    logits, means = d.read_codes(d.trunk(images))
    assert logits.shape == (6, 10) and means.shape == (6, 2)
    assert d(images)[1].shape == (6, 10)  # Q's code logits only, as every reader of D expects
    plain = models.exportable(d)  # spectral norm's plain form keeps the continuous head
    torch.testing.assert_close(plain.read_codes(plain.trunk(images))[1], means)


def test_traversal_inputs_sweep_one_code_with_everything_else_fixed():
    noise = torch.randn(54)
    z, c, u = latents.traversal_inputs(noise, torch.tensor([4, 7]), 3, index=1)
    cols = latents.TRAVERSAL_VALUES.shape[0]
    assert z.shape == (2 * cols, 54) and c.tolist() == [4] * cols + [7] * cols and u.shape == (2 * cols, 3)
    assert torch.equal(z, noise.expand(2 * cols, 54))
    assert torch.equal(u[:cols, 1], latents.TRAVERSAL_VALUES) and torch.equal(u[cols:, 1], latents.TRAVERSAL_VALUES)
    assert u[:, [0, 2]].abs().sum() == 0
    assert latents.TRAVERSAL_VALUES[0] == -2 and latents.TRAVERSAL_VALUES[-1] == 2


def step_grads(arch: str, continuous_weight: float, trains_trunk: bool = True, info_view=None,
               d_view=None) -> dict:
    cfg = load_config([], ["train.batch_size=8", f"model.arch={arch}", "model.continuous_codes=2",
                           "train.real_consistency=0"])
    torch.manual_seed(0)
    g, d = models.build(cfg.model)
    opt = recording_optimisers(g, d)
    torch.manual_seed(1)
    x, z, c = torch.rand(8, 1, 28, 28), torch.randn(8, 54), torch.randint(10, (8,))
    u = torch.rand(8, 2) * 2 - 1
    joint = float(arch == "tconv" and d_view is None)
    settings = step_settings(cfg, continuous_weight=continuous_weight, info_trains_d_trunk=trains_trunk,
                             joint=joint, lr_scale=None, info_view=info_view, d_view=d_view)
    stats = train_step(Nets(g, d), opt, Batch(x, z, c, u), settings)
    n_trunk = len(list(d.trunk.parameters()))
    q_last = opt.q.seen[-2]  # the weight of Q's last layer: rows 0-9 the code logits, 10-11 the means
    return {"trunk": opt.d.seen[:n_trunk], "head": opt.d.seen[n_trunk:], "g": opt.g.seen,
            "q_means": q_last[10:], "q_logits": q_last[:10], "stats": stats}


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("trains_trunk", [True, False])
def test_continuous_term_routes_gradients_as_the_categorical_one(arch, trains_trunk):
    on, off = step_grads(arch, 1.0, trains_trunk), step_grads(arch, 0.0, trains_trunk)
    assert same(on["trunk"], off["trunk"]) is (not trains_trunk)  # shapes D's trunk only with the flag
    assert same(on["head"], off["head"])  # never trains D's real/fake head
    assert not same(on["g"], off["g"])  # always trains G
    assert off["q_means"].abs().sum() == 0 < on["q_means"].abs().sum()  # Q's means learn from it alone
    assert torch.equal(on["q_logits"], off["q_logits"])  # and it leaves the code logits' gradient alone
    assert "loss/info_cont" in on["stats"] and on["stats"]["loss/info_cont"] > 0


def test_q_reads_the_continuous_codes_from_the_fake_itself_not_from_its_transformed_copy():
    """Rotating and scaling a digit is what the continuous codes are meant to encode: Q's
    augmented view (train.info_augment) must not be where Q learns them."""
    plain = step_grads("paper", 1.0, info_view=None)
    scrambled = step_grads("paper", 1.0, info_view=lambda images: images.flip(-1).roll(5, -2))
    torch.testing.assert_close(scrambled["q_means"], plain["q_means"])
    assert not torch.allclose(scrambled["q_logits"], plain["q_logits"])  # the code logits do see the view


@pytest.mark.parametrize("arch", ARCHES)
def test_under_d_augment_q_reads_the_continuous_codes_from_the_plain_fake(arch):
    """D judges changed copies (train.d_augment) and Q reads the digit code from them, but the
    continuous codes from the fakes as drawn: D's copies rotate and scale what they encode."""
    identity = step_grads(arch, 1.0, d_view=lambda images: images)
    scrambled = step_grads(arch, 1.0, d_view=lambda images: images.flip(-1).roll(5, -2))
    torch.testing.assert_close(scrambled["q_means"], identity["q_means"])
    assert not torch.allclose(scrambled["q_logits"], identity["q_logits"])
    assert scrambled["q_means"].abs().sum() > 0 and scrambled["stats"]["loss/info_cont"] > 0


def bar(angle_degrees: float, width: float, length: float = 18.0, size: int = 28) -> np.ndarray:
    """A filled rectangle through the centre, ``angle_degrees`` from the vertical (positive: the
    top leans right), as a [size, size] image in {0, 1}."""
    from skimage.draw import polygon

    t = math.radians(angle_degrees)
    along = np.array([math.sin(t), -math.cos(t)])  # (x, row) direction towards the top
    across = np.array([math.cos(t), math.sin(t)])
    centre = np.array([size / 2 - 0.5, size / 2 - 0.5])
    corners = [centre + a * length / 2 * along + b * width / 2 * across for a, b in ((1, 1), (1, -1), (-1, -1), (-1, 1))]
    image = np.zeros((size, size))
    rows, cols = polygon([p[1] for p in corners], [p[0] for p in corners], (size, size))
    image[rows, cols] = 1.0
    return image


def ring(shear_degrees: float, size: int = 28) -> np.ndarray:
    """An upright ring 4 px thick (an "0"), sheared so that its top moves right by
    tan(shear_degrees) per pixel of height: an italic "0"."""
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    up = (size / 2 - 0.5) - rows
    x = cols - (size / 2 - 0.5) - math.tan(math.radians(shear_degrees)) * up
    r = np.sqrt((x / 6.0) ** 2 + (up / 9.0) ** 2)
    return ((r > 0.6) & (r <= 1.0)).astype(float)


def test_slant_of_bars_and_of_italic_rings_at_known_angles():
    angles = [-35, -20, -8, 0, 8, 20, 35]
    measured = metrics.slant_degrees(np.stack([bar(a, 3) for a in angles]))
    np.testing.assert_allclose(measured, angles, atol=1.5)
    # a round digit has no clear principal axis, but its slant is still the shear that uprights it
    measured = metrics.slant_degrees(np.stack([ring(a) for a in angles]))
    np.testing.assert_allclose(measured, angles, atol=1.5)


def test_stroke_width_of_bars_of_known_width_and_any_length():
    def upright(width: int, length: int) -> np.ndarray:
        image = np.zeros((28, 28))
        image[4:4 + length, 10:10 + width] = 1.0
        return image

    widths = [1, 2, 3, 4, 5, 6]
    measured = metrics.stroke_width(np.stack([upright(w, 20) for w in widths]))
    np.testing.assert_allclose(measured, widths, atol=0.75)
    assert np.all(np.diff(measured) > 0)
    shorter = metrics.stroke_width(np.stack([upright(w, 12) for w in widths]))
    np.testing.assert_allclose(shorter, measured, atol=0.6)  # the same pen, a shorter stroke
    slanted = metrics.stroke_width(np.stack([bar(25, w) for w in (2, 4)]))
    assert slanted[0] < slanted[1]
    assert metrics.stroke_width(np.zeros((1, 28, 28)))[0] == 0.0


class BarGenerator(torch.nn.Module):
    """Draws a bar whose slant follows continuous code 1 and whose width follows code 2."""

    noise_dim, code_dim, continuous_codes = 4, 10, 2

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, z, c, u=None):
        images = [bar(30.0 * float(a), 2.0 + 2.0 * (float(b) + 1.0)) for a, b in u.tolist()]
        return torch.tensor(np.stack(images), dtype=torch.float32).unsqueeze(1)


def test_correlations_find_which_code_controls_slant_and_which_width():
    effects = measure.continuous_effects(BarGenerator(), seed=0, n=300)
    assert set(effects) == {"eval/cont_c1_slant", "eval/cont_c1_width", "eval/cont_c2_slant", "eval/cont_c2_width"}
    assert effects["eval/cont_c1_slant"] > 0.95 and effects["eval/cont_c2_width"] > 0.9
    assert abs(effects["eval/cont_c1_width"]) < 0.3 and abs(effects["eval/cont_c2_slant"]) < 0.2
    g, _ = models.build(load_config([], []).model)
    assert measure.continuous_effects(g, seed=0) == {}  # no continuous codes, nothing measured


def test_smoke_run_with_two_continuous_codes_logs_traverses_serves_and_reports(home, smoke_overrides, tmp_path):
    from pipeline import report
    from pipeline.tracking import serving

    cfg = load_config([SMOKE], smoke_overrides + ["model.continuous_codes=2", "tracking.log_model=true"])
    assert cfg.train.d_augment  # the default step: D judges changed copies, Q reads c1, c2 from the plain fakes
    run_id = train.stage(cfg, log=lambda m: None)
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["model.continuous_codes"] == "2"
    steps = [m.step for m in client.get_metric_history(run_id, "loss/info_cont")]
    assert steps == list(range(2, 17, 2)) and all(math.isfinite(v) for v in run.data.metrics.values())
    for key in ("eval/cont_c1_slant", "eval/cont_c1_width", "eval/cont_c2_slant", "eval/cont_c2_width"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [8, 16], key
        assert -1 <= run.data.metrics[key] <= 1
    names = [a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, "images")]
    for code in ("c1", "c2"):
        logged = sorted(int(n.split("+step+")[1].split("+")[0]) for n in names
                        if n.startswith(f"traversal~{code}+") and n.endswith(".png") and "compressed" not in n)
        assert logged == [8, 16], (code, names)
    q_weights = [v for k, v in runs.load_checkpoint(cfg, run_id)["d"].items() if k.startswith("q.") and k.endswith("weight")]
    assert q_weights[-1].shape[0] == 12  # Q's last layer: 10 code logits + 2 means

    evaluate.stage(run_id, log=lambda m: None)
    out = tmp_path / "sevens_c1.png"
    assert cli.main(["generate", "--run-id", run_id, "--digit", "7", "--vary", "c1", "--styles", "3",
                     "--out", str(out)]) == 0
    assert Image.open(out).size == (9 * 30 + 2, 3 * 30 + 2)  # 9 code values x 3 noise vectors
    assert cli.main(["generate", "--run-id", run_id, "--digit", "7", "--vary", "c3", "--out", str(out)]) == 2
    model = serving.load(f"runs:/{run_id}/{serving.MODEL_NAME}")
    import pandas as pd

    drawn = model.predict(pd.DataFrame([{"code": 3, "n": 5, "seed": 1}]))
    assert drawn.shape == (5, 28, 28)

    folder = report.build("smoke", [run_id], out=home / "reports" / "continuous", log=lambda m: None)
    md = (folder / "report.md").read_text()
    assert "## Continuous codes" in md and "(figures/traversals.png)" in md and "c1 ~ slant" in md
    assert (folder / "figures" / "traversals.png").is_file()
