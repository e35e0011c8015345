from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import free_port
from pipeline import cli
from pipeline.config import Config, ConfigError, flatten, from_yaml, load_config, to_yaml
from pipeline.models import ARCHITECTURES

REPO = Path(__file__).resolve().parents[1]


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  epochs: 3\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config([str(path)])
    assert "'train.learning_rate'" in str(err.value)
    assert str(path) in str(err.value)
    assert "lr_g" in str(err.value)  # lists what the user probably meant


def test_wrong_type_override_names_key_and_override():
    with pytest.raises(ConfigError) as err:
        load_config([], ["train.epochs=many"])
    message = str(err.value)
    assert "'train.epochs'" in message and "train.epochs=many" in message


@pytest.mark.parametrize("override, key", [
    ("model.arch=resnet", "model.arch"),
    ("train.g_loss=wasserstein", "train.g_loss"),
    ("train.lr_d=0", "train.lr_d"),
    ("model.code_dim=1", "model.code_dim"),
    ("train.beta1=1.5", "train.beta1"),
    ("train.lr_decay_fraction=1.5", "train.lr_decay_fraction"),
    ("train.ema_decay=1.0", "train.ema_decay"),
    ("train.lr_g=inf", "train.lr_g"),
    ("train.code_weight=nan", "train.code_weight"),
    ("eval.classifier_lr=inf", "eval.classifier_lr"),
    ("train.real_fake_batch=mixed", "train.real_fake_batch"),
    ("train.joint_weight=1.0", "train.joint_weight"),
    ("train.joint_weight=0", "train.joint_weight"),
])
def test_invalid_values_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config([], [override])


def test_impossible_combination_names_both_keys(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("data: {train_subset: 100}\n")
    with pytest.raises(ConfigError) as err:
        load_config([str(path)], ["train.batch_size=256"])
    assert "data.train_subset" in str(err.value) and "train.batch_size=256" in str(err.value)
    assert str(path) in str(err.value)


def test_layering_later_sources_win(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("train: {epochs: 3, lr_g: 0.01}\n")
    b.write_text("train: {epochs: 4}\n")
    cfg = load_config([str(a), str(b)], ["train.lr_d=0.003 seed=7"])  # one string, as MLproject passes
    assert (cfg.train.epochs, cfg.train.lr_g, cfg.train.lr_d, cfg.seed) == (4, 0.01, 0.003, 7)


def test_flatten_uses_dotted_keys():
    flat = flatten(load_config())
    for key in ("seed", "model.arch", "model.noise_dim", "model.code_dim", "train.epochs", "train.batch_size",
                "train.lr_d", "train.lr_g", "train.lr_q", "train.code_weight", "train.g_loss", "tracking.experiment"):
        assert key in flat
    assert flat["model.noise_dim"] == 54 and flat["model.code_dim"] == 10


def test_base_yaml_is_the_schema_defaults():
    written = yaml.safe_load((REPO / "configs" / "base.yaml").read_text())
    assert written == OmegaConf.to_container(OmegaConf.structured(Config))


@pytest.mark.parametrize("path", sorted(str(p) for p in (REPO / "configs").rglob("*.yaml")), ids=lambda p: Path(p).name)
def test_every_shipped_config_loads(path):
    cfg = load_config([path])
    assert cfg.model.arch in ARCHITECTURES


def test_shipped_configs_say_what_they_promise():
    lab = load_config([str(REPO / "configs" / "lab.yaml")])
    assert (lab.model.arch, lab.train.epochs) == ("tconv", 50)
    for name in ("lab.yaml", "as_written.yaml"):
        handout = load_config([str(REPO / "configs" / name)])  # the handout's InfoGAN, none of the project's additions
        assert handout.model.arch == "tconv", name
        t = handout.train
        assert (t.info_augment, t.real_consistency, t.lr_decay_fraction, t.ema_decay) == (False, 0.0, 0.0, 0.0), name
        assert t.lr_d == t.lr_g == t.lr_q == 2e-4 and t.batch_size == 128, name
    experiments = {p.stem: load_config([str(p)]) for p in (REPO / "configs" / "experiments").glob("*.yaml")}
    assert {c.tracking.experiment for c in experiments.values()} == {"lab-report"}
    # The lengths they were accepted at: tconv's codes need 6 epochs on some seeds, upsample_sn's slip after 4.
    assert {k: (c.train.epochs, c.train.lr_decay_fraction) for k, c in experiments.items()} == {
        "tconv_ns": (6, 0.0), "tconv_sat": (6, 0.0), "upsample_sn_ns": (4, 0.25)}
    # The batch and rates the lab's recipes were accepted at, whatever the default's.
    assert {(c.train.batch_size, c.train.lr_q) for c in experiments.values()} == {(128, 2e-4)}
    assert {(c.train.lr_d, c.train.lr_g) for k, c in experiments.items() if k != "upsample_sn_ns"} == {(2e-4, 1e-3)}
    ns, sat = (OmegaConf.to_container(experiments[k]) for k in ("tconv_ns", "tconv_sat"))
    differ = {(section, key) for section in ns for key in (ns[section] if isinstance(ns[section], dict) else [])
              if ns[section][key] != sat[section][key]}
    assert differ == {("train", "g_loss"), ("tracking", "run_name")}  # the G-loss comparison changes one key
    assert load_config([str(REPO / "configs" / "upsample_sn.yaml")]).model.arch == "upsample_sn"


def test_cli_reports_config_errors_before_any_work(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("INFOGAN_HOME", str(tmp_path))
    assert cli.main(["train", "train.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train.nope'" in err and "command-line override 'train.nope=1'" in err
    assert not (tmp_path / "mlflow.db").exists()  # stopped before touching the store


def test_cli_config_prints_resolved_yaml(capsys):
    assert cli.main(["config", "train.epochs=9"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["epochs"] == 9


@pytest.mark.parametrize("out, says", [("grid.gif", "must end in .png"), ("a_file/x.png", "cannot write --out")])
def test_generate_refuses_an_output_it_cannot_write_before_any_work(capsys, tmp_path, monkeypatch, out, says):
    monkeypatch.setenv("INFOGAN_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    assert cli.main(["generate", "--run-id", "r", "--demo", "--out", out]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()  # stopped before touching the store


def test_an_unreachable_tracking_server_is_named_in_one_line(capsys, tmp_path, monkeypatch):
    port = free_port()
    monkeypatch.setenv("INFOGAN_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    assert cli.main(["train", "-c", str(REPO / "configs" / "smoke.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"http://127.0.0.1:{port} does not answer" in err and len(err.strip().splitlines()) == 1, err


def test_experiments_open_in_the_training_view_and_runs_mlflow_run_opened_are_renamed(home, monkeypatch):
    from mlflow import MlflowClient

    from pipeline import tracking

    client = MlflowClient()
    older = client.create_experiment("made-elsewhere")  # no kind tag, as MLflow itself makes them
    assert tracking.ensure_experiment("made-elsewhere") == older
    assert client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"
    fresh = client.get_experiment(tracking.ensure_experiment("new-one"))
    assert fresh.tags["mlflow.experimentKind"] == "custom_model_development"

    opened = client.create_run(older, run_name="burly-ant-764")  # what `mlflow run .` hands over
    monkeypatch.setenv("MLFLOW_RUN_ID", opened.info.run_id)
    with tracking.start_run("made-elsewhere", "train paper s0") as run:
        assert run.info.run_id == opened.info.run_id
    assert client.get_run(opened.info.run_id).info.run_name == "train paper s0"


def test_a_process_that_loses_the_race_to_create_an_experiment_uses_the_winners(home, monkeypatch):
    from mlflow import MlflowClient

    from pipeline import tracking

    create, winner = MlflowClient.create_experiment, []

    def raced(self, name, **kwargs):  # another process inserts the name between lookup and insert
        winner.append(create(self, name, **kwargs))
        return create(self, name, **kwargs)

    monkeypatch.setattr(MlflowClient, "create_experiment", raced)
    assert tracking.ensure_experiment("smoke") == winner[0]


def test_a_run_that_loses_the_race_to_create_a_registered_model_adds_its_version_to_it(home, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from pipeline import tracking
    from pipeline.tracking import registry

    with tracking.start_run("smoke", "any") as run:
        mlflow.log_text("weights", "model/weights.txt")
    create = MlflowClient.create_registered_model

    def raced(self, name, **kwargs):  # another run registers the name between lookup and insert
        create(self, name, **kwargs)
        return create(self, name, **kwargs)

    monkeypatch.setattr(MlflowClient, "create_registered_model", raced)
    uri = f"runs:/{run.info.run_id}/model"
    assert registry.register(uri, "infogan-generator", run.info.run_id, {}) == 1


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_a_batch_of_one_is_refused_for_every_architecture(arch):
    # Every G normalises its batch: one sample would fail inside torch, mid-training.
    with pytest.raises(ConfigError, match=r"config key 'train.batch_size' .* must be >= 2"):
        load_config([], [f"model.arch={arch}", "train.batch_size=1", "data.train_subset=1"])
    assert load_config([], [f"model.arch={arch}", "train.batch_size=2"]).train.batch_size == 2


def test_config_files_build_on_others_and_hold_only_what_differs(tmp_path):
    """A file's ``defaults:`` list names the files it builds on (merged first, in order); every
    shipped file but the handout's recipe written out in full sets only keys it changes."""
    from omegaconf import OmegaConf

    from pipeline.config import _leaf_keys, read_file
    from pipeline.schema import Config

    sat, ns = (load_config([str(REPO / f"configs/experiments/{name}.yaml")]) for name in ("tconv_sat", "tconv_ns"))
    differ = {k for k, v in flatten(sat).items() if flatten(ns)[k] != v}
    assert differ == {"train.g_loss", "tracking.run_name"}
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        if path.name in ("base.yaml", "as_written.yaml"):  # the schema written out; the handout's recipe, literally
            continue
        *bases, (_, own) = read_file(str(path))
        before = OmegaConf.merge(OmegaConf.structured(Config), *(OmegaConf.create(raw) for _, raw in bases))
        repeated = [key for key in _leaf_keys(own) if OmegaConf.select(before, key) == OmegaConf.select(
            OmegaConf.create(own), key)]
        assert repeated == [], path.name
    (tmp_path / "a.yaml").write_text("defaults: [b.yaml]\ntrain:\n  epochs: 3\n")
    (tmp_path / "b.yaml").write_text("defaults: [a.yaml]\n")
    with pytest.raises(ConfigError, match="builds on itself: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_config([str(tmp_path / "a.yaml")])
    (tmp_path / "b.yaml").write_text("defaults: missing.yaml\ntrain:\n  epochs: 2\n  batch_size: 64\n")
    with pytest.raises(ConfigError, match="missing.yaml .*in the defaults of .*b.yaml"):
        load_config([str(tmp_path / "a.yaml")])
    (tmp_path / "b.yaml").write_text("train:\n  epochs: 2\n  batch_size: 64\n")
    built = load_config([str(tmp_path / "a.yaml")])
    assert (built.train.epochs, built.train.batch_size) == (3, 64)
