"""train.py --diagnose: entropix.diagnostics on a finished run's checkpoint."""

import dataclasses
import json

import numpy as np
import pytest

import train
from training import diagnose
from training.config import ConfigError

SMALL = diagnose.Settings(images=32, batch=16, top_k=2, lanczos_steps=8, probes=4,
                          density_probes=1, density_steps=6, gammas=(0.1, 1.0), chain_steps=20,
                          sigmas=(1e-3, 1e-2), perturbations=2)


@pytest.fixture(scope="module")
def finished_run(mnist_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run") / "lenet"
  flags = ["--model", "lenet", "--optimizer", "sgd", "--batch-size", "16", "--data-dir",
           mnist_dir, "--devices", "1", "--effective-epochs", "0.25", "--no-progress",
           "--workdir", str(workdir)]
  assert train.main(flags) == 0
  return workdir


def test_it_measures_the_newest_checkpoint_and_writes_beside_the_metrics(finished_run):
  record = diagnose.diagnose(finished_run, SMALL)
  assert json.loads((finished_run / "diagnostics.json").read_text()) == record
  last = json.loads((finished_run / "metrics.jsonl").read_text().splitlines()[-1])
  assert record["step"] == last["step"] and record["optimizer"] == "sgd"
  assert record["images"] == 32 and np.isfinite(record["loss"])
  top = record["top_eigenvalues"]
  assert len(top) == 2 and top[0] >= top[1]
  assert record["diagonal"]["entries"] == 131_220  # every LeNet parameter
  density = record["spectral_density"]
  assert abs(np.trapezoid(density["density"], density["grid"]) - 1) < 1e-6
  assert record["local_entropy"]["gammas"] == [0.1, 1.0]
  assert len(record["perturbation_sharpness"]["increase"]) == 2
  assert record["relative_sharpness"]["sigmas"] == list(SMALL.relative_sigmas)
  assert record["parameter_norms"]["['Conv_0']['kernel']"] > 0
  assert set(record["wall_s"]) == set(diagnose.PARTS) - {"parameter_norms"}
  assert diagnose.missing(record) == ()


def test_a_part_measured_later_joins_the_record_and_equals_its_measure_among_all(finished_run):
  whole = diagnose.diagnose(finished_run, SMALL)
  lean = {k: v for k, v in whole.items() if k not in ("relative_sharpness", "parameter_norms")}
  (finished_run / "diagnostics.json").write_text(json.dumps(lean))
  more = dataclasses.replace(SMALL, gammas=(0.2, 1.0))
  with pytest.raises(ConfigError, match="other settings \\(gammas\\)"):
    diagnose.diagnose(finished_run, more, parts=("relative_sharpness",))
  assert diagnose.missing(lean) == ("relative_sharpness", "parameter_norms")
  extended = diagnose.diagnose(finished_run, SMALL, parts=diagnose.missing(lean))
  assert json.loads((finished_run / "diagnostics.json").read_text()) == extended
  for key in whole:
    if key != "wall_s":
      assert extended[key] == whole[key], key


def test_the_measure_of_the_same_run_is_the_same(finished_run):
  first = diagnose.diagnose(finished_run, SMALL)
  again = diagnose.diagnose(finished_run, SMALL)
  for key in ("loss", "top_eigenvalues", "trace", "diagonal", "local_entropy"):
    assert first[key] == again[key], key


@pytest.mark.parametrize("argv,message", [
    (["--diagnose"], "--diagnose needs --workdir"),
    (["--diagnose", "--workdir", "{tmp}"], "holds no config.json"),
])
def test_bad_diagnose_calls_are_refused(argv, message, tmp_path, capsys):
  with pytest.raises(SystemExit):
    train.main([a.format(tmp=tmp_path) for a in argv])
  assert message in capsys.readouterr().err
