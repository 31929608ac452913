"""A machine's check, for a GPU (or TPU) with its own jax, flax, optax and orbax.

Run from the repository root, with the machine's packages and nothing
installed::

  PYTHONPATH=. python experiments/gpu_check/gpu_check.py [--out FILE]

(``--out`` defaults to ``gpu_check.json`` beside this script; the H200's record
is ``gpu_check_h200.json``, its REPORT.md the command that wrote it).

It records the versions and devices it sees, runs the library's tests
(``.ci/library_tests``; the root conftest puts them on 8 simulated CPU
devices, so they check the versions, not the accelerator), then times three
``train.py`` runs on the first accelerator: mnistfc and LeNet with
Entropy-SGD for 1 effective epoch on the bundled MNIST, and All-CNN-C with
Entropy-SGD for 1 effective epoch on synthetic CIFAR-shaped data (random
images in CIFAR-10's binary format, 50,000 by default). Each run's wall time
counts process start, compilation and evaluation; ``wall_s`` is train.py's own.
Everything goes to one JSON file, written again after each step, so a run cut
short keeps what it measured.

Train.py flags after ``--`` go to every run (``-- --inner-steps 2`` to try
the script on a CPU).
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]


def versions() -> dict[str, str]:
  from importlib import metadata

  out = {"python": platform.python_version()}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  return out


def write_synthetic_cifar(directory: pathlib.Path, n_train: int, n_test: int, seed: int = 0):
  """Random CIFAR-10 binary files: ``n_train`` images over the 5 training files."""
  rng = np.random.default_rng(seed)
  directory.mkdir(parents=True, exist_ok=True)

  def records(n):
    return np.concatenate([rng.integers(0, 10, (n, 1)), rng.integers(0, 256, (n, 3072))],
                          axis=1).astype(np.uint8)

  for i, part in enumerate(np.array_split(records(n_train), 5)):
    (directory / f"data_batch_{i + 1}.bin").write_bytes(part.tobytes())
  (directory / "test_batch.bin").write_bytes(records(n_test).tobytes())


def library_tests() -> dict:
  paths = (ROOT / ".ci" / "library_tests").read_text().split()
  try:
    import xdist  # noqa: F401
    workers = ["-n", str(min(8, os.cpu_count() or 1))]
  except ImportError:
    workers = []
  began = time.perf_counter()
  done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         *workers, *paths], cwd=ROOT, capture_output=True, text=True)
  tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
  counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", tail)}
  return {"returncode": done.returncode, "summary": tail, **counts,
          "wall_s": round(time.perf_counter() - began, 1)}


def train(model: str, data_dir: str | None, epochs: float, extra: list[str]) -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    argv = [sys.executable, str(ROOT / "train.py"), "--model", model, "--optimizer",
            "entropy-sgd", "--effective-epochs", str(epochs), "--eval-every", str(epochs),
            "--devices", "1", "--no-progress", "--workdir", str(pathlib.Path(workdir) / "run"),
            *(["--data-dir", data_dir] if data_dir else []), *extra]
    began = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = round(time.perf_counter() - began, 1)
  if done.returncode:
    return {"returncode": done.returncode, "stderr": done.stderr[-1500:], "process_s": wall}
  summary = json.loads(done.stdout.strip().splitlines()[-1])
  keep = ("val_error", "effective_epochs", "backprops", "updates", "wall_s")
  return {"returncode": 0, "process_s": wall, **{k: summary[k] for k in keep}}


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  ours, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (
      argv, [])
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent
                                           / "gpu_check.json"))
  parser.add_argument("--cifar-images", type=int, default=50000,
                      help="synthetic CIFAR-shaped training images (default: %(default)s)")
  parser.add_argument("--effective-epochs", type=float, default=1.0)
  parser.add_argument("--skip-tests", action="store_true", help="skip the library's tests")
  args = parser.parse_args(ours)
  if args.cifar_images < 640:
    parser.error(f"--cifar-images {args.cifar_images}: want >= 640 (5 files of >= one batch)")
  import jax

  out = pathlib.Path(args.out)
  record = {"date": datetime.date.today().isoformat(), "versions": versions(),
            "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind, "train_flags": extra}

  def save():
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1), flush=True)

  save()
  if not args.skip_tests:
    record["library_tests"] = library_tests()
    save()
  record["runs"] = {}
  for model in ("mnistfc", "lenet"):
    record["runs"][f"{model}-entropy-sgd"] = train(model, None, args.effective_epochs, extra)
    save()
  with tempfile.TemporaryDirectory() as cifar:
    write_synthetic_cifar(pathlib.Path(cifar), args.cifar_images, 1000)
    record["runs"]["allcnn-entropy-sgd-synthetic"] = {
        "train_images": args.cifar_images, **train("allcnn", cifar, args.effective_epochs, extra)}
  save()


if __name__ == "__main__":
  main()
