"""Tests of train.py, the command line: flags, --help, exit codes."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import train
import training


def test_no_flags_means_the_papers_mnistfc_entropy_sgd_run():
  args = vars(train.build_parser().parse_args([]))
  assert args.pop("workdir") is None and args.pop("diagnose") is False
  assert args.pop("seeds") is None and args.pop("sweep") is None  # one run
  processes = {k: args.pop(k) for k in train.PROCESS_FLAGS}
  assert processes == {"coordinator": None, "num_processes": None, "process_id": None,
                       "heartbeat_timeout": 100}  # one process
  assert training.build_config(**args) == training.build_config()


def test_help_documents_every_flag_with_its_default(capsys):
  with pytest.raises(SystemExit):
    train.main(["--help"])
  assert "--effective-epochs" in capsys.readouterr().out  # --help printed and exited
  contract = ["--model", "--optimizer", "--effective-epochs", "--batch-size", "--lr",
              "--lr-schedule", "--gamma", "--scoping", "--inner-steps", "--inner-lr", "--noise",
              "--alpha", "--sigma", "--samples", "--momentum", "--weight-decay", "--seed",
              "--data-dir", "--workdir", "--resume", "--devices", "--param-init"]
  for action in train.build_parser()._actions:
    if action.option_strings[-1] == "--help":
      continue
    assert "default" in action.help, action.option_strings
    contract = [c for c in contract if c not in action.option_strings]
  assert contract == []


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
    (["--param-init", "torch"], "--param-init: invalid choice: 'torch'"),
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


def test_a_run_prints_its_summary_last_and_exits_1_on_nan(mnist_dir, tmp_path, capsys):
  flags = ["--optimizer", "sgd", "--batch-size", "16", "--data-dir", mnist_dir, "--devices", "1",
           "--effective-epochs", "0.25", "--no-progress", "--input-scaling", "centered"]
  assert train.main([*flags, "--workdir", str(tmp_path / "ok")]) == 0
  out = capsys.readouterr()
  summary = json.loads(out.out.splitlines()[-1])
  assert summary["updates"] == 4 and summary["workdir"] == str(tmp_path / "ok")
  # --no-progress hides the bar, not the evaluations.
  assert "update 4 (effective epoch 0.25): val_error" in out.err
  assert train.main([*flags, "--lr", "1e30", "--workdir", str(tmp_path / "nan")]) == 1
  assert "loss is nan" in capsys.readouterr().err


def test_the_default_workdir_names_the_run(mnist_dir, tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert train.main(["--optimizer", "sgd", "--batch-size", "16", "--data-dir", mnist_dir,
                     "--devices", "1", "--effective-epochs", "0.1", "--seed", "4",
                     "--no-progress"]) == 0
  workdir = json.loads(capsys.readouterr().out.splitlines()[-1])["workdir"]
  assert re.fullmatch(rf"runs/mnistfc-sgd-seed4-\d{{8}}-\d{{6}}-{os.getpid()}", workdir)
  assert sorted(os.listdir(tmp_path / workdir)) == ["checkpoints", "config.json", "metrics.jsonl"]


def test_the_quickstart_example_runs_and_every_optimizer_fits():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, os.path.join(root, "examples", "quickstart.py")],
                       capture_output=True, text=True, timeout=300, check=True).stdout
  rows = {line.split()[0]: line.split() for line in out.splitlines()[-4:]}
  assert sorted(rows) == ["Entropy-SGD", "HEAT", "HJ", "SGD"]
  for name, (_, updates, backprops, loss, accuracy, _) in rows.items():
    assert int(backprops) == 3000 and float(loss) < 0.05 and float(accuracy) > 0.95, name


def test_a_dataset_by_name_trains(tmp_path, idx_writer, monkeypatch, capsys):
  # --dataset fashion_mnist, from the folder $ENTROPIX_FASHION_MNIST names
  # (digests of the small stand-in the test writes).
  import hashlib

  import input_pipeline as ip

  rng = np.random.default_rng(0)
  digests = {}
  for key, n in (("train_images", 64), ("train_labels", 64), ("test_images", 16),
                 ("test_labels", 16)):
    array = rng.integers(0, 255, (n, 28, 28)) if key.endswith("images") else np.arange(n) % 10
    written = idx_writer(tmp_path / ip.IDX_NAMES[key], array)
    digests[key] = hashlib.sha256(written.read_bytes()).hexdigest()
  monkeypatch.setattr(ip, "FASHION_MNIST_SHA256", digests)
  monkeypatch.setattr(ip, "load_tfds", lambda *a, **k: (_ for _ in ()).throw(ip.DataError("no")))
  monkeypatch.setenv(ip.FASHION_MNIST_ENV, str(tmp_path))
  assert train.main(["--dataset", "fashion_mnist", "--optimizer", "sgd", "--batch-size", "16",
                     "--devices", "1", "--effective-epochs", "0.25", "--no-progress",
                     "--workdir", str(tmp_path / "run")]) == 0
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  assert saved["data_dir"] == "fashion_mnist"
  assert json.loads(capsys.readouterr().out.splitlines()[-1])["updates"] == 1  # 64 images / 16 x 0.25
