"""Tests of training/config.py: flags -> one complete, checked Config."""

import dataclasses
import json
import pathlib

import pytest

from training import config as cfg
import models
from training import optimizers, settings
from training.optimizers import paper, replicas


def test_no_flags_means_the_papers_mnistfc_entropy_sgd_run():
  config = cfg.build_config()
  assert (config.model, config.effective_epochs, config.batch_size) == ("mnistfc", 120, 128)
  assert config.optimizer == paper.EntropySGD(
      gamma=optimizers.defaults("mnistfc", "entropy-sgd")["gamma"], scoping=1e-3, inner_steps=20,
      inner_lr=0.1, noise=1e-4, alpha=0.75, inner_momentum=0.9)
  assert config.lr == optimizers.defaults("mnistfc", "entropy-sgd")["lr"]
  assert (config.momentum, config.weight_decay, config.validation_split) == (0.9, 0.0, 0)
  assert [e for e, _ in config.lr_schedule[:2]] == [60, 120] and len(config.lr_schedule) == 40
  assert [lr for _, lr in config.lr_schedule[:2]] == pytest.approx(
      [config.lr / 5, config.lr / 25])
  assert config.run.data_dir == "mnist"  # the bundled MNIST
  assert config.run.devices == 8  # conftest simulates 8 CPU devices


@pytest.mark.parametrize("model", list(models.NETWORKS))
@pytest.mark.parametrize("optimizer", list(cfg.OPTIMIZERS))
def test_every_value_is_filled_from_the_settings(model, optimizer):
  data = {"data_dir": "somewhere"} if model == "allcnn" else {}
  config = cfg.build_config(model=model, optimizer=optimizer, devices=1, **data)
  want = optimizers.defaults(model, optimizer)
  assert config.effective_epochs == want["effective_epochs"]
  assert config.weight_decay == want["weight_decay"]
  assert config.lr == want["lr"]
  fields = dataclasses.asdict(config.optimizer)
  assert fields.pop("replicas", 1) == config.replicas == 1  # one per device
  if optimizer in ("elastic-sgd", "parle"):  # Parle's gdot = 0.5 / minibatches per epoch
    want["scoping"] = 0.5 * 128 / models.NETWORKS[model].train_examples
  assert fields == {k: want[k] for k in fields}
  flags = config.flags()
  assert flags.pop("sharpness_every") is None  # off unless asked for
  assert None not in flags.values()
  # Unrolled on CPU only for All-CNN-C (LeNet's patch convolutions are as fast in a scan).
  inner_loop = optimizer not in ("sgd", "elastic-sgd", "adamw", "sam", "swa")
  assert config.run.unroll == (inner_loop and model == "allcnn")


def test_flags_round_trip_and_exclude_what_an_optimizer_lacks():
  config = cfg.build_config(model="lenet", optimizer="heat", sigma=0.02, lr_schedule="3:0.05",
                            devices=2, unroll=3)
  flags = config.flags()
  assert cfg.build_config(**flags) == config
  assert "gamma" not in flags and flags["sigma"] == 0.02 and flags["unroll"] == 3
  sgd = cfg.build_config(optimizer="sgd")
  assert cfg.build_config(**sgd.flags()) == sgd
  flax = cfg.build_config(param_init="flax")
  assert cfg.build_config(**flax.flags()) == flax and flax.flags()["param_init"] == "flax"
  # The default is what the authors' Table-1 code ran.
  assert cfg.build_config().param_init == "pytorch-legacy"
  with pytest.raises(cfg.ConfigError, match=r"--param-init 'torch': unknown"):
    cfg.build_config(param_init="torch")
  assert set(flags) <= set(cfg.FLAGS)


def test_a_flag_applies_exactly_to_the_optimizers_that_have_it():
  with pytest.raises(cfg.ConfigError, match=r"--noise does not apply to --optimizer hj "
                                            r"\(it applies to entropy-sgd, heat-uniform, parle\)"):
    cfg.build_config(optimizer="hj", noise=0.1)
  with pytest.raises(cfg.ConfigError, match=r"--damping does not apply to --optimizer hj "
                                            r"\(it applies to hj-fixed-point\)"):
    cfg.build_config(optimizer="hj", damping=0.5)
  with pytest.raises(cfg.ConfigError, match=r"--scoping does not apply to --optimizer sgd "
                                            r"\(it applies to entropy-sgd, hj, hj-fixed-point, "
                                            r"heat, heat-uniform, elastic-sgd, parle\)"):
    cfg.build_config(optimizer="sgd", scoping=0.0)
  with pytest.raises(cfg.ConfigError, match="unknown setting"):
    cfg.build_config(gama=0.1)


def test_resume_may_change_the_budget_and_run_options_only():
  assert set(cfg.RESUMABLE) == {"effective_epochs", "data_dir", "devices", "spmd", "unroll",
                                "progress", "resume", "keep_checkpoints", "sharpness_every"}


def test_lr_schedule_parses_and_refuses_bad_pairs():
  assert cfg.parse_lr_schedule("60:0.02,120:0.004") == ((60.0, 0.02), (120.0, 0.004))
  assert cfg.parse_lr_schedule("none") == ()
  assert cfg.build_config(lr_schedule=[(5, 0.1), (9, 0.01)]).lr_schedule == ((5, 0.1), (9, 0.01))
  with pytest.raises(cfg.ConfigError, match="epochs must increase"):
    cfg.build_config(lr_schedule=[(5, 0.1), (5, 0.01)])


def test_budget_counts_updates_and_marks_evaluations():
  config = cfg.build_config(optimizer="entropy-sgd", inner_steps=4, effective_epochs=1.5,
                            eval_every=0.5, batch_size=16)
  budget = cfg.Budget.of(config, num_train=256)  # 4 updates per effective epoch
  assert (budget.updates_per_epoch, budget.total) == (4.0, 6)
  assert [s for s in range(1, 7) if budget.is_eval(s)] == [2, 4, 6]
  with pytest.raises(cfg.ConfigError, match="less than one update"):
    cfg.Budget.of(dataclasses.replace(config, effective_epochs=0.1), num_train=256)


def test_the_documented_per_model_defaults():
  # README "Defaults": scoping, weight decay and budgets per model; the budgets
  # in the order of ORDER (Table 1's four columns, then the text's two forms).
  order = ("entropy-sgd", "heat-uniform", "hj-fixed-point", "sgd", "hj", "heat")
  for model, decay, budgets in (
      ("mnistfc", 0.0, (120, 200, 240, 194, 160, 200)),
      ("lenet", 0.0, (80, 75, 84, 67, 60, 75)),
      ("allcnn", 1e-3, (160, 150, 174, 195, 200, 150)),
  ):
    data = {"data_dir": "cifar"} if model == "allcnn" else {}
    configs = [cfg.build_config(model=model, optimizer=o, devices=1, **data) for o in order]
    assert tuple(c.effective_epochs for c in configs) == pytest.approx(budgets)
    assert [c.weight_decay for c in configs] == [0.0 if c.optimizer.name == "sgd" else decay
                                                 for c in configs]
    assert {getattr(c.optimizer, "scoping", 1e-3) for c in configs} == {1e-3}


def test_the_tuned_defaults_are_the_choices_recorded_in_results():
  # settings.TUNED must be what experiments/tuning/tune.py chose, cell for cell: the
  # short search (tuning.json), then the full-budget ones where they ran.
  results = pathlib.Path(__file__).parent.parent / "experiments" / "tuning"
  chosen = json.loads((results / "tuning.json").read_text())["chosen"]
  for full in sorted(results.glob("tuning_*_full.json")):
    chosen.update(json.loads(full.read_text())["chosen"])
  recorded = {tuple(cell.split("/")): {k: v for k, v in c.items()
                                       if k not in ("trial", "val_error", "standard_error")}
              for cell, c in chosen.items() if c["trial"] is not None}
  assert settings.TUNED == recorded
  for (model, optimizer), values in settings.TUNED.items():
    config = cfg.build_config(model=model, optimizer=optimizer, devices=1)
    got = {**dataclasses.asdict(config.optimizer), "lr": config.lr}
    assert {k: got[k] for k in values} == values


@pytest.mark.parametrize("optimizer", ["entropy-sgd", "heat-uniform", "hj", "parle"])
def test_a_coupling_at_which_the_inner_loop_diverges_is_refused_by_its_flags(optimizer):
  # The default inner momentum 0.9 puts the limit at inner_lr * gamma = 1.357.
  top = (lambda g: {"gamma_max": g}) if optimizer == "parle" else (lambda g: {})
  cfg.build_config(optimizer=optimizer, gamma=13.0, inner_lr=0.1, **top(13.0))
  with pytest.raises(cfg.ConfigError, match=r"--gamma 14\.0 with --inner-lr 0\.1: .* 1\.357"):
    cfg.build_config(optimizer=optimizer, gamma=14.0, inner_lr=0.1, **top(14.0))


def test_a_cells_recipe_is_one_entry_of_the_settings():
  # Two cells pinned whole: each default is its recipe's or what every cell shares.
  shared = dict(batch_size=128, momentum=0.9, seed=0, eval_every=5.0, input_scaling="raw",
                param_init="pytorch-legacy", validation_split=0)
  lenet = cfg.build_config(model="lenet", optimizer="hj-fixed-point", devices=1)
  assert lenet == cfg.Config(
      model="lenet", optimizer=paper.HJFixedPoint(gamma=10.0, scoping=1e-3, inner_steps=5,
                                                damping=0.75),
      effective_epochs=84.0, lr=0.1, lr_schedule=cfg.default_lr_schedule(0.1),
      weight_decay=0.0, **shared, run=cfg.RunOptions(
          data_dir="mnist", devices=1, spmd="pmap", unroll=False, progress=True, resume=False,
          keep_checkpoints=2))
  assert settings.RECIPES["lenet", "hj-fixed-point"]["tuned"] == ("lr", "gamma")
  parle = cfg.build_config(model="allcnn", optimizer="parle", devices=1, data_dir="cifar")
  assert parle.optimizer == replicas.Parle(
      replicas=1, gamma=0.01, gamma_max=1.0, rho=1.0, rho_max=10.0, scoping=0.5 * 128 / 50_000,
      inner_steps=25, inner_lr=0.1, noise=0.0, alpha=0.0, inner_momentum=0.9)
  assert (parle.effective_epochs, parle.lr, parle.weight_decay) == (160.0, 0.1, 1e-3)
  assert {k: getattr(parle, k) for k in shared} == shared
  assert parle.lr_schedule == cfg.default_lr_schedule(0.1)


def test_the_recipes_page_is_the_settings_table():
  page = pathlib.Path(__file__).parent.parent / "docs" / "guides" / "recipes.md"
  table = "\n".join(line for line in page.read_text().splitlines() if line.startswith("|"))
  assert table == optimizers.recipes_table(), (
      "docs/guides/recipes.md's table is not the declarations' recipes: paste in the output "
      "of python -c 'from training.optimizers import recipes_table; print(recipes_table())'")


def test_defaults_that_follow_other_flags_are_implied():
  # What a --resume leaves unnamed when it names the flag that changed them.
  parle = cfg.build_config(optimizer="parle", devices=1, batch_size=32, lr=0.3)
  assert cfg.implied_flags(parle.flags()) == {"lr_schedule", "scoping"}
  assert cfg.implied_flags(cfg.build_config(optimizer="sgd").flags()) == {"lr_schedule"}
  given = cfg.build_config(optimizer="parle", devices=1, scoping=0.01, lr_schedule="none")
  assert cfg.implied_flags(given.flags()) == set()


def test_a_shared_setting_an_optimizer_does_not_read_is_refused():
  # AdamW's momentum is its b1: --momentum would be silently ignored.
  with pytest.raises(cfg.ConfigError, match=r"--momentum does not apply to --optimizer adamw "
                                            r"\(it applies to sgd, entropy-sgd"):
    cfg.build_config(optimizer="adamw", momentum=0.5)
  adamw = cfg.build_config(optimizer="adamw", devices=1)
  assert adamw.momentum is None and "momentum" not in adamw.flags()
  assert cfg.build_config(**adamw.flags()) == adamw
  assert cfg.build_config(optimizer="sam", devices=1).momentum == settings.MOMENTUM


def test_each_hyper_parameter_is_declared_once_and_derives_the_flag_sets():
  # The sweep and vmap sets and the flags come from the declarations.
  assert "sam_rho" in cfg.SWEEPABLE and "inner_steps" not in cfg.SWEEPABLE
  assert {"gamma", "inner_lr", "noise", "alpha"} <= set(cfg.VMAPPABLE)
  assert "scoping" not in cfg.VMAPPABLE
  for name, spec in optimizers.HYPERS.items():
    assert name in cfg.FLAGS and optimizers.users(name), name
    users = [optimizers.REGISTRY[o] for o in optimizers.users(name)]
    assert all(optimizers.hypers(u)[name] is spec for u in users), name


def test_a_cells_default_is_its_recipe_over_its_optimizer_over_its_network(monkeypatch):
  # A network's defaults fill only what the optimizer and its recipe leave.
  net = models.NETWORKS["lenet"]
  monkeypatch.setitem(models.NETWORKS, "lenet", dataclasses.replace(
      net, defaults={"lr": 0.5, "b1": 0.5, "effective_epochs": 3.0, "input_scaling": "centered"}))
  adamw, sgd = optimizers.defaults("lenet", "adamw"), optimizers.defaults("lenet", "sgd")
  assert (adamw["lr"], adamw["b1"]) == (optimizers.REGISTRY["adamw"].defaults["lr"], 0.9)
  assert adamw["input_scaling"] == sgd["input_scaling"] == "centered"
  assert sgd["effective_epochs"] == optimizers.REGISTRY["sgd"].recipes["lenet"]["effective_epochs"]


def test_a_network_without_recipes_takes_its_own_defaults():
  # Flax's MNIST CNN: its budget, initialisation and input scaling, and each
  # optimizer's defaults for a network the paper did not train.
  config = cfg.build_config(model="cnn", optimizer="entropy-sgd", devices=1)
  assert (config.effective_epochs, config.param_init, config.input_scaling) == (
      10.0, "flax", "centered")
  assert (config.optimizer.gamma, config.optimizer.inner_steps) == (1e-3, 20)
  assert cfg.build_config(model="cnn", param_init="pytorch-legacy").param_init == "pytorch-legacy"
  assert cfg.build_config(model="lenet").input_scaling == "raw"
