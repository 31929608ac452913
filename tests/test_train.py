"""Tests of train.py on tiny synthetic datasets (conftest.py simulates 8 CPU devices)."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import input_pipeline
import models
import train

ROOT = pathlib.Path(__file__).resolve().parent.parent
OPTIMIZERS = ("sgd", "entropy-sgd", "hj", "heat")
# Short loops so every pair trains in seconds; everything else is the default.
FAST = {"sgd": {}, "entropy-sgd": {"inner_steps": 2}, "hj": {"inner_steps": 2},
        "heat": {"samples": 2}}


def _classes(rng, n, shape, prototypes):
  labels = rng.integers(0, 10, n)
  images = prototypes[labels] + rng.normal(0, 30, (n, *shape))
  return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def _write_idx(path, array):
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  path.write_bytes(header + array.tobytes())


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
  """256 training and 64 test 28x28 images of 10 noisy prototypes, as IDX files."""
  directory = tmp_path_factory.mktemp("idx")
  rng = np.random.default_rng(0)
  prototypes = rng.uniform(0, 255, (10, 28, 28))
  for split, n in (("train", 256), ("t10k", 64)):
    images, labels = _classes(rng, n, (28, 28), prototypes)
    _write_idx(directory / f"{split}-images-idx3-ubyte", images)
    _write_idx(directory / f"{split}-labels-idx1-ubyte", labels)
  return str(directory)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
  """CIFAR-10 binary files: 5 x 16 training images of 10 prototypes; the test
  file repeats the first 32 of them.

  ZCA fitted on 80 images in 3,072 dimensions scales every direction it never
  saw by 1 / sqrt(1e-5); new test images (if only through uint8 rounding)
  would have components there and blow up.
  """
  directory = tmp_path_factory.mktemp("cifar")
  rng = np.random.default_rng(1)
  prototypes = rng.uniform(0, 255, (10, 3 * 32 * 32))
  labels = rng.integers(0, 10, 80)
  images = np.clip(prototypes[labels] + rng.normal(0, 30, (80, 3 * 32 * 32)), 0, 255)
  records = np.concatenate([labels[:, None], images], axis=1).astype(np.uint8)
  for i, name in enumerate(input_pipeline.CIFAR_TRAIN_FILES):
    (directory / name).write_bytes(records[16 * i:16 * (i + 1)].tobytes())
  (directory / input_pipeline.CIFAR_TEST_FILES[0]).write_bytes(records[:32].tobytes())
  return str(directory)


@pytest.fixture(autouse=True)
def zca_cache(tmp_path_factory, monkeypatch):
  # One ZCA fit per session, outside the user's ~/.cache.
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


def config(data_dir, **overrides):
  # Centred pixels: with raw 0..255 and batches of 16 the tiny problem is
  # chaotic, and two float orders of the same run drift apart in a few steps.
  base = dict(model="mnistfc", optimizer="entropy-sgd", batch_size=16, effective_epochs=1.0,
              eval_every=1.0, data_dir=data_dir, progress=False, devices=1,
              input_scaling="centered")
  return train.Config(**{**base, **overrides})


def run(cfg, workdir):
  return train.train_and_evaluate(cfg, workdir)


@pytest.mark.parametrize("devices", [1, 4])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("model", ["mnistfc", "lenet", "allcnn"])
def test_every_model_and_optimizer_learns(model, optimizer, devices, mnist_dir, cifar_dir,
                                          tmp_path):
  data = cifar_dir if model == "allcnn" else mnist_dir
  # CIFAR is GCN + ZCA whitened; All-CNN-C is slow on a CPU, so small batches.
  small = {"input_scaling": "raw", "batch_size": 8} if model == "allcnn" else {}
  result = run(config(data, model=model, optimizer=optimizer, devices=devices,
                      **FAST[optimizer], **small), tmp_path)
  first, last = result.history[0], result.history[-1]
  assert first["step"] == 0 and last["effective_epochs"] >= 1.0
  assert last["val_loss"] < first["val_loss"], result.history
  assert np.isfinite(last["train_loss"])
  summary = result.summary
  assert summary["backprops"] == last["backprops"] == last["step"] * (
      1 if optimizer == "sgd" else 2)
  assert summary["devices"] == devices and summary["val_error"] == last["val_error"]


def _params_close(a, b, rtol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("model", ["mnistfc", "lenet"])
def test_one_and_eight_devices_follow_one_trajectory(model, mnist_dir, tmp_path):
  # Noise, dropout and cross-device BatchNorm all on: only float
  # reassociation may differ.
  cfg = config(mnist_dir, model=model, noise=1e-3, inner_steps=3, effective_epochs=2.0)
  one = run(cfg, tmp_path / "one")
  eight = run(cfg.__class__(**{**cfg.__dict__, "devices": 8}), tmp_path / "eight")
  _params_close(one.state.params, eight.state.params, rtol=2e-3)
  for a, b in zip(one.history, eight.history):
    assert a["step"] == b["step"]
    np.testing.assert_allclose(a["val_loss"], b["val_loss"], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(a["train_loss"] or 0, b["train_loss"] or 0, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["entropy-sgd", "heat"])
def test_pmap_and_shard_map_run_the_same_step(optimizer, mnist_dir, tmp_path):
  cfg = config(mnist_dir, model="lenet", optimizer=optimizer, devices=4, **FAST[optimizer])
  a = run(cfg, tmp_path / "pmap")
  b = run(cfg.__class__(**{**cfg.__dict__, "spmd": "shard_map"}), tmp_path / "shard_map")
  _params_close(a.state.params, b.state.params, rtol=1e-5)
  assert [r["val_loss"] for r in a.history] == pytest.approx([r["val_loss"] for r in b.history],
                                                             rel=1e-5)


def test_same_seed_same_numbers_other_seed_other_numbers(mnist_dir, tmp_path):
  cfg = config(mnist_dir, optimizer="entropy-sgd", noise=1e-3, **FAST["entropy-sgd"])
  a, b = run(cfg, tmp_path / "a"), run(cfg, tmp_path / "b")
  assert a.history == b.history
  c = run(cfg.__class__(**{**cfg.__dict__, "seed": 1}), tmp_path / "c")
  assert c.history[-1]["val_loss"] != a.history[-1]["val_loss"]


def test_batches_are_a_fresh_permutation_every_epoch():
  cfg = train.resolve(train.Config(optimizer="sgd", batch_size=8, effective_epochs=1.0))
  draw = jax.jit(train.make_batch_sampler(cfg, 36, jax.random.PRNGKey(0)))
  perm, epoch, rows = np.zeros(36, np.int32), np.int32(-1), []
  for j in range(8):  # two epochs of 36 // 8 = 4 minibatches
    (perm, epoch), r = draw(perm, epoch, j)
    rows.append(np.asarray(r[0]))
  for first in (0, 4):
    seen = np.concatenate(rows[first:first + 4])
    assert len(set(seen)) == 32 and seen.min() >= 0 and seen.max() < 36  # no repeats
  assert not np.array_equal(rows[0], rows[4])  # reshuffled


def test_evaluation_uses_the_training_sets_mean_batch_statistics(mnist_dir, tmp_path):
  cfg = config(mnist_dir, optimizer="sgd", effective_epochs=0.25)
  result = run(cfg, tmp_path)
  dataset, prep = train.load_data(cfg)
  model = models.create("mnistfc")
  stats = []
  for k in range(256 // 16):  # the minibatches in order, train mode, no dropout
    x = (dataset.train_images[16 * k:16 * (k + 1)].astype(np.float32) - 126) / 126
    _, state = model.apply({"params": result.state.params,
                            "batch_stats": jax.tree.map(np.zeros_like, result.state.batch_stats)},
                           x, train=True, dropout=False, mutable=["batch_stats"])
    stats.append(jax.tree.map(lambda s: s / 0.1, state["batch_stats"]))
  want = jax.tree.map(lambda *s: np.mean(s, axis=0), *stats)
  _params_close(result.state.batch_stats, want, rtol=1e-4)
  logits = model.apply({"params": result.state.params, "batch_stats": want},
                       (dataset.test_images.astype(np.float32) - 126) / 126, train=False)
  error = 100 * float(np.mean(np.argmax(logits, -1) != dataset.test_labels))
  assert result.summary["val_error"] == pytest.approx(error, abs=1e-4)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(mnist_dir, tmp_path):
  cfg = config(mnist_dir, optimizer="sgd", lr=1e30, effective_epochs=2.0)
  with pytest.raises(train.TrainingDiverged, match=r"at update \d+ .*checkpoint.*update 0"):
    run(cfg, tmp_path)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["0"]
  records = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(r)["step"] for r in records] == [0]


def _cli(*args, **kwargs):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_a_killed_run_resumes_to_the_same_metrics(mnist_dir, tmp_path):
  flags = ["--model", "mnistfc", "--optimizer", "entropy-sgd", "--inner-steps", "2",
           "--batch-size", "16", "--effective-epochs", "8", "--eval-every", "0.5",
           "--data-dir", mnist_dir, "--no-progress"]
  whole = _cli(*flags, "--workdir", str(tmp_path / "whole"))
  out, err = whole.communicate(timeout=600)
  assert whole.returncode == 0, err
  want = json.loads(out.splitlines()[-1])

  victim = _cli(*flags, "--workdir", str(tmp_path / "killed"))
  checkpoints = tmp_path / "killed" / "checkpoints"
  deadline = time.monotonic() + 300
  while not (checkpoints.is_dir() and any(d.name not in ("0",) and d.name.isdigit()
                                          for d in checkpoints.iterdir())):
    assert victim.poll() is None, victim.communicate()
    assert time.monotonic() < deadline
    time.sleep(0.05)
  victim.send_signal(signal.SIGKILL)  # mid-run, maybe mid-write
  victim.communicate()
  assert victim.returncode == -signal.SIGKILL
  resumed = _cli(*flags, "--workdir", str(tmp_path / "killed"), "--resume")
  out, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err
  got = json.loads(out.splitlines()[-1])
  for key in ("wall_s", "workdir"):
    got.pop(key), want.pop(key)
  assert got == want
  assert ((tmp_path / "killed" / "metrics.jsonl").read_text()
          == (tmp_path / "whole" / "metrics.jsonl").read_text())


def test_resume_extends_the_budget_and_refuses_changed_flags(mnist_dir, tmp_path):
  short = run(config(mnist_dir, optimizer="sgd", effective_epochs=1.0), tmp_path / "r")
  longer = run(config(mnist_dir, optimizer="sgd", effective_epochs=2.0, resume=True),
               tmp_path / "r")
  whole = run(config(mnist_dir, optimizer="sgd", effective_epochs=2.0), tmp_path / "w")
  assert longer.history[:len(short.history)] == short.history
  assert longer.history == whole.history
  with pytest.raises(train.ConfigError, match=r"--lr \(0.1, now 0.2\)"):
    run(config(mnist_dir, optimizer="sgd", lr=0.2, effective_epochs=3.0, resume=True),
        tmp_path / "r")


def test_a_workdir_with_checkpoints_is_never_overwritten(mnist_dir, tmp_path):
  run(config(mnist_dir, optimizer="sgd", effective_epochs=0.5), tmp_path)
  before = (tmp_path / "metrics.jsonl").read_text()
  with pytest.raises(train.ConfigError, match="--resume"):
    run(config(mnist_dir, optimizer="sgd", effective_epochs=0.5), tmp_path)
  assert (tmp_path / "metrics.jsonl").read_text() == before


def test_no_flags_means_the_papers_mnistfc_entropy_sgd_run():
  parsed = train.build_parser().parse_args([])
  args = vars(parsed)
  assert args.pop("workdir") is None
  cfg = train.resolve(train.Config(**args))
  assert cfg == train.resolve(train.Config())
  assert (cfg.model, cfg.optimizer, cfg.effective_epochs) == ("mnistfc", "entropy-sgd", 120)
  assert (cfg.batch_size, cfg.inner_steps, cfg.inner_lr, cfg.alpha) == (128, 20, 0.1, 0.75)
  assert (cfg.gamma, cfg.scoping, cfg.noise, cfg.lr, cfg.momentum) == (1e-4, 1e-3, 1e-4, 0.1, 0.9)
  assert cfg.data_dir is None  # the bundled MNIST


def test_help_documents_every_flag_with_its_default(capsys):
  with pytest.raises(SystemExit):
    train.main(["--help"])
  assert "--effective-epochs" in capsys.readouterr().out  # --help printed and exited
  contract = ["--model", "--optimizer", "--effective-epochs", "--batch-size", "--lr",
              "--lr-schedule", "--gamma", "--scoping", "--inner-steps", "--inner-lr", "--noise",
              "--alpha", "--sigma", "--samples", "--momentum", "--weight-decay", "--seed",
              "--data-dir", "--workdir", "--resume", "--devices"]
  for action in train.build_parser()._actions:
    if action.option_strings[-1] == "--help":
      continue
    assert "default" in action.help, action.option_strings
    contract = [c for c in contract if c not in action.option_strings]
  assert contract == []


def test_lr_schedule_is_piecewise_constant_in_effective_epochs():
  cfg = train.resolve(train.Config(optimizer="sgd", lr=1.0, lr_schedule="2:0.5,3:0.25"))
  schedule = train.lr_schedule(cfg, updates_per_epoch=10.0)
  assert [float(schedule(s)) for s in (0, 19, 20, 29, 30, 10_000)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
  default = train.lr_schedule(train.resolve(train.Config()), updates_per_epoch=10.0)
  assert [float(default(s)) for s in (599, 600, 1199)] == pytest.approx([0.1, 0.02, 0.02])


BAD = [
    (["--model", "resnet"], "--model"),
    (["--optimizer", "adam"], "--optimizer"),
    (["--effective-epochs", "0"], "--effective-epochs 0"),
    (["--effective-epochs", "-3"], "--effective-epochs -3"),
    (["--effective-epochs", "nan"], "--effective-epochs nan"),
    (["--lr", "0"], "--lr 0"),
    (["--lr", "-0.1"], "--lr -0.1"),
    (["--lr-schedule", "5:0"], "learning rate 0"),
    (["--lr-schedule", "5:0.1,2:0.01"], "epochs must increase"),
    (["--lr-schedule", "five"], "is not EPOCH:LR"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--seed", "-1"], "--seed -1"),
    (["--seed", str(2**32)], "< 2**32"),
    (["--eval-every", "0"], "--eval-every 0"),
    (["--unroll", "0"], "--unroll 0"),
    (["--optimizer", "sgd", "--unroll", "2"], "--unroll does not apply"),
    (["--devices", "0"], "--devices 0"),
    (["--devices", "999"], "XLA_FLAGS"),
    (["--devices", "3"], "not divisible by --devices 3"),
    (["--optimizer", "sgd", "--gamma", "0.1"], "--gamma does not apply to --optimizer sgd"),
    (["--optimizer", "sgd", "--inner-steps", "5"], "--inner-steps does not apply"),
    (["--optimizer", "hj", "--noise", "0.1"], "--noise does not apply to --optimizer hj"),
    (["--optimizer", "entropy-sgd", "--sigma", "0.1"], "--sigma does not apply"),
    (["--optimizer", "heat", "--alpha", "0.5"], "--alpha does not apply"),
    (["--gamma", "0"], "--gamma 0"),
    (["--alpha", "1"], "--alpha 1"),
    (["--inner-steps", "0"], "--inner-steps 0"),
    (["--momentum", "1"], "--momentum 1"),
    (["--weight-decay", "-1"], "--weight-decay -1"),
    (["--resume"], "--resume needs --workdir"),
    (["--data-dir", "/no/such/dir"], "/no/such/dir"),
    (["--model", "allcnn"], "needs CIFAR-10"),
    (["--no-such-flag"], "--no-such-flag"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_flags_are_refused_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  workdir = [] if "--resume" in argv else ["--workdir", str(tmp_path / "run")]
  with pytest.raises(SystemExit) as exit_info:
    train.main([*argv, *workdir])
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_scoping_stops_where_the_inner_loop_would_diverge():
  cfg = train.resolve(train.Config(optimizer="hj"))  # mnistfc: gamma0 1e-4, scoping 1e-3
  gamma = train.gamma_schedule(cfg)
  assert float(gamma(0)) == pytest.approx(1e-4)
  assert float(gamma(1000)) == pytest.approx(1e-4 * 1.001**1000, rel=1e-4)
  assert float(gamma(18_750)) == pytest.approx(1 / cfg.inner_lr)  # not 1.4e4
  assert train.gamma_schedule(train.resolve(train.Config(scoping=0.0))) == 1e-4


def test_budgets_below_one_update_and_other_data_are_refused(mnist_dir, tmp_path):
  with pytest.raises(train.ConfigError, match="less than one update"):
    run(config(mnist_dir, effective_epochs=0.01), tmp_path / "tiny")
  assert not (tmp_path / "tiny").exists()
  run(config(mnist_dir, optimizer="sgd", effective_epochs=0.25), tmp_path / "r")
  other = tmp_path / "other"
  other.mkdir()
  for f in pathlib.Path(mnist_dir).iterdir():
    data = f.read_bytes()
    # Same shapes, other labels.
    other.joinpath(f.name).write_bytes(data if "images" in f.name else data[:8] + data[8:][::-1])
  with pytest.raises(train.ConfigError, match="other data"):
    run(config(str(other), optimizer="sgd", effective_epochs=0.5, resume=True), tmp_path / "r")
