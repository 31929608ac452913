"""The quick start gives what README.md says it gives (experiments/quickstart).

The quick start's validation error depends on the machine's threads and
devices (XLA splits its reductions by them); README.md gives the band
measured over those settings for seed 0. The command is run here as the
README writes it, on this machine, and must land inside the band the
records give, which README.md and the getting-started page must state.
"""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECORDS = ROOT / "experiments" / "quickstart" / "records.json"


def seed_zero_band():
  records = [r for r in json.loads(RECORDS.read_text()) if "seed " not in r["variant"]]
  errors = [r["val_error"] for r in records]
  return min(errors), max(errors)


def test_the_pages_state_the_measured_band():
  low, high = seed_zero_band()
  for page in ("README.md", "docs/getting_started.md"):
    text = (ROOT / page).read_text()
    assert f"{low:.2f}% and {high:.2f}%" in text, f"{page} does not state the band"


def test_the_quick_start_lands_in_its_band(tmp_path):
  low, high = seed_zero_band()
  result = subprocess.run(
      [sys.executable, "train.py", "--effective-epochs", "5", "--workdir", str(tmp_path),
       "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=900,
      env={**__import__("os").environ, "XLA_FLAGS": ""})  # one device, as a user has
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert low <= summary["val_error"] <= high, summary
