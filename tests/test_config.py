"""Tests of training/config.py: flags -> one complete, checked Config."""

import dataclasses

import pytest

from training import config as cfg
from training import settings


def test_no_flags_means_the_papers_mnistfc_entropy_sgd_run():
  config = cfg.build_config()
  assert (config.model, config.effective_epochs, config.batch_size) == ("mnistfc", 120, 128)
  assert config.optimizer == cfg.EntropySGD(gamma=1e-4, scoping=1e-3, inner_steps=20,
                                            inner_lr=0.1, noise=1e-4, alpha=0.75)
  assert (config.lr, config.momentum, config.weight_decay) == (0.1, 0.9, 0.0)
  assert [e for e, _ in config.lr_schedule[:2]] == [60, 120] and len(config.lr_schedule) == 40
  assert [lr for _, lr in config.lr_schedule[:2]] == pytest.approx([0.02, 0.004])
  assert config.run.data_dir == "mnist"  # the bundled MNIST
  assert config.run.devices == 8  # conftest simulates 8 CPU devices


@pytest.mark.parametrize("model", ["mnistfc", "lenet", "allcnn"])
@pytest.mark.parametrize("optimizer", list(cfg.OPTIMIZERS))
def test_every_value_is_filled_from_the_settings(model, optimizer):
  data = {"data_dir": "somewhere"} if model == "allcnn" else {}
  config = cfg.build_config(model=model, optimizer=optimizer, devices=1, **data)
  assert config.effective_epochs == settings.PAPER_BUDGET[model, optimizer]
  assert config.weight_decay == settings.WEIGHT_DECAY[model]
  fields = dataclasses.asdict(config.optimizer)
  want = {"gamma": settings.GAMMA0[model], "scoping": settings.SCOPING[model],
          **settings.OPTIMIZER_DEFAULTS[optimizer]}
  assert fields == {k: want[k] for k in fields}
  assert None not in config.flags().values()
  # Unrolled on CPU only for All-CNN-C (LeNet's patch convolutions are as fast in a scan).
  assert config.run.unroll == (optimizer != "sgd" and model == "allcnn")


def test_flags_round_trip_and_exclude_what_an_optimizer_lacks():
  config = cfg.build_config(model="lenet", optimizer="heat", sigma=0.02, lr_schedule="3:0.05",
                            devices=2, unroll=3)
  flags = config.flags()
  assert cfg.build_config(**flags) == config
  assert "gamma" not in flags and flags["sigma"] == 0.02 and flags["unroll"] == 3
  sgd = cfg.build_config(optimizer="sgd")
  assert cfg.build_config(**sgd.flags()) == sgd
  assert set(flags) <= set(cfg.FLAGS)


def test_a_flag_applies_exactly_to_the_optimizers_that_have_it():
  with pytest.raises(cfg.ConfigError, match=r"--noise does not apply to --optimizer hj "
                                            r"\(it applies to entropy-sgd\)"):
    cfg.build_config(optimizer="hj", noise=0.1)
  with pytest.raises(cfg.ConfigError, match=r"--scoping does not apply to --optimizer sgd "
                                            r"\(it applies to entropy-sgd, hj, heat\)"):
    cfg.build_config(optimizer="sgd", scoping=0.0)
  with pytest.raises(cfg.ConfigError, match="unknown setting"):
    cfg.build_config(gama=0.1)


def test_resume_may_change_the_budget_and_run_options_only():
  assert set(cfg.RESUMABLE) == {"effective_epochs", "data_dir", "devices", "spmd", "unroll",
                                "progress", "resume"}


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
  # README "Defaults": gamma0 / scoping, weight decay and budgets per model.
  for model, gamma, scoping, decay, budgets in (
      ("mnistfc", 1e-4, 1e-3, 0.0, (120, 200, 200, 194)),
      ("lenet", 1e-3, 1e-4, 0.0, (80, 75, 70, 67)),
      ("allcnn", 3e-2, 1e-4, 1e-3, (160, 150, 145, 195)),
  ):
    data = {"data_dir": "cifar"} if model == "allcnn" else {}
    config = cfg.build_config(model=model, devices=1, **data)
    assert (config.optimizer.gamma, config.optimizer.scoping, config.weight_decay) == (
        gamma, scoping, decay)
    assert tuple(cfg.build_config(model=model, optimizer=o, devices=1, **data).effective_epochs
                 for o in ("entropy-sgd", "heat", "hj", "sgd")) == budgets
