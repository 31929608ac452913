#!/usr/bin/env bash
# Table 1's All-CNN-C row on CIFAR-10, one command, for a GPU machine.
#
#   bash experiments/allcnn/reproduce_allcnn.sh [CIFAR] [reproduce_table1.py flags]
#
# CIFAR: a cifar-10-batches-bin directory; "tfds" (tensorflow-datasets
# prepares it: pip install -e ".[tfds]"); or nothing, and the binary files are
# downloaded once into data/cifar-10-batches-bin (162 MiB, checked against
# their published MD5; git-ignored). Then the four Table-1 columns (entropy-sgd,
# heat-uniform, hj-fixed-point, sgd), 3 seeds each, run one at a time on the
# accelerator with every core for the host, into
# runs/table1_pytorch_legacy_init/ and experiments/allcnn/table1_runs.json,
# table1.json and table1.md (Table 1's All-CNN-C row); stopped, the same
# command picks up where it stopped. Extra flags go to
# experiments/table1/reproduce_table1.py (--seeds 6, --optimizers ...,
# --results DIR).
# Python: $PYTHON (default python3) with jax, flax, optax and orbax; the
# repository goes on PYTHONPATH, so an image with its own JAX needs no install.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
CIFAR="${1:-data/cifar-10-batches-bin}"
[[ $# -gt 0 ]] && shift

if [[ "$CIFAR" != tfds && ! -f "$CIFAR/data_batch_1.bin" ]]; then
  if [[ "$CIFAR" != data/cifar-10-batches-bin ]]; then
    echo "$CIFAR: no data_batch_1.bin there (want a cifar-10-batches-bin directory or 'tfds')" >&2
    exit 2
  fi
  "$PYTHON" - <<'EOF'
import hashlib, pathlib, tarfile, urllib.request
url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
md5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published on the CIFAR-10 page
archive = pathlib.Path("data/cifar-10-binary.tar.gz")
archive.parent.mkdir(exist_ok=True)
if not archive.is_file():
  print(f"downloading {url}", flush=True)
  urllib.request.urlretrieve(url, archive.with_suffix(".part"))
  archive.with_suffix(".part").replace(archive)
digest = hashlib.md5(archive.read_bytes()).hexdigest()
if digest != md5:
  raise SystemExit(f"{archive}: MD5 {digest}, expected {md5}; delete it and run again")
with tarfile.open(archive) as tar:
  safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # 3.11.4+
  tar.extractall("data", **safe)
EOF
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c 'import jax; print("devices:", jax.devices())'
exec "$PYTHON" experiments/table1/reproduce_table1.py --models allcnn --data-dir "$CIFAR" \
  --no-pin --results experiments/allcnn --optimizers entropy-sgd heat-uniform hj-fixed-point sgd \
  "$@"
