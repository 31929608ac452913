"""train.py across 2 processes x 2 CPU devices (jax.distributed, gloo) equals 1 process x 4."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import training

ROOT = pathlib.Path(__file__).resolve().parent.parent
FLAGS = dict(inner_steps=2, effective_epochs=0.5, eval_every=0.25)


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start_two(mnist_dir, workdir, epochs, *extra):
  """Starts train.py as processes 0 and 1 of 2, each with 2 CPU devices."""
  port = free_port()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "JAX_PLATFORMS": "cpu"}
  argv = [sys.executable, str(ROOT / "train.py"), "--model", "mnistfc", "--optimizer",
          "entropy-sgd", "--inner-steps", "2", "--batch-size", "16", "--input-scaling",
          "centered", "--effective-epochs", str(epochs), "--eval-every", "0.25",
          "--data-dir", mnist_dir, "--workdir", str(workdir), "--no-progress",
          "--coordinator", f"localhost:{port}", "--num-processes", "2", *extra]
  return [subprocess.Popen([*argv, "--process-id", str(i)], env=env, cwd=ROOT, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in (0, 1)]


def two_processes(mnist_dir, workdir, epochs, *extra):
  """Runs processes 0 and 1 of 2 to the end; their outputs."""
  procs = start_two(mnist_dir, workdir, epochs, *extra)
  try:
    outs = [p.communicate(timeout=240) for p in procs]
  finally:
    for p in procs:  # never leave a process behind
      p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  return [out for out, _ in outs]


def summaries(stdout):
  return [line for line in stdout.splitlines() if line.startswith("{")]


# Data parallel: the batch axis crosses the processes. Parle with 2 replicas
# of 2 devices: each process holds one replica, the elastic mean crosses;
# stopped half-way and resumed, it must still end where one process does.
@pytest.mark.parametrize("optimizer, flags", [
    ("entropy-sgd", {}), ("parle", {"replicas": 2}),
])
def test_two_processes_train_like_one_process_with_four_devices(
    tiny, mnist_dir, tmp_path, optimizer, flags):
  workdir = tmp_path / "two"
  extra = [f"--{k}={v}" for k, v in flags.items()]
  if flags:  # Parle stops half-way and both processes resume (orbax, every replica)
    two_processes(mnist_dir, workdir, 0.25, "--optimizer", optimizer, *extra)
    extra.append("--resume")
  out = two_processes(mnist_dir, workdir, 0.5, "--optimizer", optimizer, *extra)
  summary = json.loads(out[0].splitlines()[-1])
  assert summary["devices"] == 4 and summary["effective_epochs"] == 0.5
  assert not summaries(out[1])  # only process 0 prints the summary (gloo prints its own lines)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir())  # written through orbax
  one = training.train_and_evaluate(tiny(devices=4, **{**FLAGS, "optimizer": optimizer},
                                         **flags), tmp_path / "one")
  two = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in two] == [r["step"] for r in one.history]
  assert len(two) == 3
  keys = ("train_loss", "val_loss", "val_error", *(["val_error_replicas"] if flags else []))
  for a, b in zip(two, one.history):
    for key in keys:
      if b[key] is not None:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-7, err_msg=key)
  assert json.loads((workdir / "config.json").read_text())["devices"] == 4


@pytest.mark.parametrize("death", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
def test_a_dead_process_stops_the_other_with_an_error(mnist_dir, tmp_path, death):
  # SIGKILL closes process 1's sockets: process 0's next collective fails.
  # SIGSTOP keeps them open, as a host that lost power: only the heartbeat
  # watch notices, without it process 0 waits in its next collective for ever.
  workdir = tmp_path / "run"
  procs = start_two(mnist_dir, workdir, 50, "--heartbeat-timeout", "3")
  try:
    deadline = time.monotonic() + 180
    while not (workdir / "metrics.jsonl").is_file() or not (workdir / "metrics.jsonl").read_text():
      assert procs[0].poll() is None and time.monotonic() < deadline, procs[0].communicate()[1]
      time.sleep(0.2)
    procs[1].send_signal(death)  # training has started: process 1 dies without a word
    killed = time.monotonic()
    _, err = procs[0].communicate(timeout=60)
    waited = time.monotonic() - killed
  finally:
    for p in procs:
      p.kill()
  assert procs[0].returncode == 1, err[-6000:]
  assert "process 1 of 2 stopped (no heartbeat for 3 s); stopping process 0 too" in err, err[-6000:]
  assert waited < 30, (waited, err[-6000:])  # the heartbeat timeout, plus the watch's period and slack
  assert (workdir / "checkpoints").is_dir()  # the update-0 checkpoint is left for --resume


@pytest.mark.parametrize("flags, message", [
    (["--coordinator", "localhost:1"], "--coordinator needs --num-processes and --process-id"),
    (["--num-processes", "2"], "--num-processes and --process-id need --coordinator"),
    (["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "0"],
     "several processes need --workdir"),
    (["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "2",
      "--workdir", "w"], "--process-id 2: must be in 0 .. 1"),
    (["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "0",
      "--workdir", "w", "--heartbeat-timeout", "0"], "--heartbeat-timeout 0: must be >= 1"),
    (["--coordinator", "auto", "--num-processes", "2"], "--coordinator auto finds"),
])
def test_process_flags_are_checked_before_anything_starts(flags, message, capsys):
  import train

  with pytest.raises(SystemExit) as stop:
    train.main(flags)
  assert stop.value.code == 2 and message in capsys.readouterr().err


def test_coordinator_auto_outside_a_cluster_says_so():
  # A process of its own: jax.distributed.initialize runs (and fails) in it.
  done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--coordinator", "auto",
                         "--workdir", "w"], cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert done.returncode == 2, done.stderr
  assert "--coordinator auto: jax found no cluster" in done.stderr
