"""experiments/which_optimizer/compare.py: fair trials, the choice, the programs it runs."""

import json

import pytest

from training import config as cfg
from training import optimizers, sweeps


@pytest.fixture
def compare(load_script):
  return load_script("experiments/which_optimizer/compare.py")


def test_every_optimizer_gets_the_same_trials_over_its_own_hyper_parameters(compare):
  assert set(compare.GRID) == set(compare.OPTIMIZERS) <= set(optimizers.REGISTRY)
  for optimizer in compare.OPTIMIZERS:
    assert len(compare.points(optimizer)) == compare.TRIALS, optimizer
    own = set(optimizers.hypers_of(optimizer)) | {"lr"}
    assert set(compare.GRID[optimizer]) <= own & set(cfg.SWEEPABLE), optimizer


def _trial(error, diverged=False, setting=None):
  return {"val_error": error, "diverged": diverged, "setting": setting or {"lr": error}}


def test_the_choice_is_the_earliest_trial_within_the_binomial_error(compare):
  # 1.15% on 10,000 images: a standard error of 0.107%.
  trials = [_trial(1.40), _trial(1.32), _trial(1.20), _trial(1.15)]
  chosen = compare.choose(trials)
  assert chosen["setting"] == {"lr": 1.20} and chosen["lowest_val_error"] == 1.15
  assert chosen["standard_error"] == pytest.approx(0.1066, abs=1e-4)
  trials[2] = _trial(0.5, diverged=True)  # a diverged trial is out, whatever it scored
  assert compare.choose(trials)["setting"] == {"lr": 1.15}
  assert compare.choose([_trial(None, True)])["setting"] is None


def test_a_cells_trials_are_one_sweep_whose_points_are_train_pys_workdirs(compare, tmp_path):
  job = compare.tune_job("fashion_mnist", "lenet", "sam", tmp_path, ["--param-init", "flax"])
  flags = job.flags
  assert flags[flags.index("--dataset") + 1] == "fashion_mnist"
  assert flags[flags.index("--effective-epochs") + 1] == str(compare.BUDGET)
  assert flags[flags.index("--validation-split") + 1] == "10000"
  assert flags[-2:] == ["--param-init", "flax"]
  axes = [sweeps.sweep_axis(flags[i + 1]) for i, f in enumerate(flags) if f == "--sweep"]
  assert axes == [("lr", [0.03, 0.1]), ("sam_rho", [0.05, 0.2])]
  # The workdirs train.py gives the points are those the driver reads.
  _, workdirs, _ = sweeps.grid({"model": "lenet", "optimizer": "sam", "devices": 1}, axes,
                               None, job.workdir)
  assert [w for _, w in job.members] == workdirs
  assert [n for n, _ in job.members][0] == "fashion_mnist-lenet-sam/lr=0.03,sam-rho=0.05"


def test_the_final_program_trains_the_chosen_setting_with_every_seed(compare, tmp_path):
  job = compare.final_job("mnist", "mnistfc", "swa", {"lr": 0.1, "swa_fraction": 0.5},
                          tmp_path)
  flags = job.flags
  assert flags[flags.index("--lr") + 1] == "0.1"
  assert flags[flags.index("--swa-fraction") + 1] == "0.5"
  assert flags[flags.index("--seeds") + 1] == "0,1,2" and "--validation-split" not in flags
  assert flags[flags.index("--sharpness-every") + 1] == "2.0"
  assert [w for _, w in job.members] == [job.workdir / f"seed_{s}" for s in (0, 1, 2)]


def test_tune_then_final_records_every_run_and_the_choice(compare, mnist_dir, tmp_path,
                                                          monkeypatch):
  monkeypatch.setattr(compare, "BUDGET", 0.25)
  monkeypatch.setattr(compare, "VALIDATION", 56)
  monkeypatch.setattr(compare, "SEEDS", (0, 1))
  monkeypatch.setattr(compare, "SHARPNESS_EVERY", None)  # measured apart (test_diagnose)
  monkeypatch.setitem(compare.GRID, "sgd", {"lr": [0.1, 0.03]})
  base = compare.base_flags  # the bundled MNIST by name, here the test's small copy
  monkeypatch.setattr(compare, "base_flags", lambda *a: [
      f for f in base(*a) if f not in ("--dataset", "mnist")] + ["--data-dir", mnist_dir])
  common = ["--cells", "mnist-mnistfc", "--optimizers", "sgd", "--out", str(tmp_path),
            "--runs", str(tmp_path / "runs"), "--", "--batch-size", "16",
            "--input-scaling", "centered"]
  compare.main(["--stage", "tune", *common])
  tuning = json.loads((tmp_path / "tuning.json").read_text())
  assert sorted(tuning["trials"]) == ["mnist-mnistfc-sgd/lr=0.03", "mnist-mnistfc-sgd/lr=0.1"]
  for name, trial in tuning["trials"].items():
    curve = tmp_path / "runs" / "tune" / "mnist-mnistfc-sgd" / name.split("/")[1]
    last = json.loads((curve / "metrics.jsonl").read_text().splitlines()[-1])
    assert trial["val_error"] == last["val_error"] and trial["setting"]["lr"] == last["lr"]
  choice = tuning["chosen"]["mnist-mnistfc-sgd"]
  assert choice == compare.choose([tuning["trials"][f"mnist-mnistfc-sgd/lr={lr}"]
                                   for lr in ("0.1", "0.03")])
  compare.main(["--stage", "final", *common])
  finals = json.loads((tmp_path / "finals.json").read_text())["runs"]
  assert sorted(finals) == ["mnist-mnistfc-sgd/seed_0", "mnist-mnistfc-sgd/seed_1"]
  for seed in (0, 1):
    run = finals[f"mnist-mnistfc-sgd/seed_{seed}"]
    assert run["setting"] == choice["setting"] and run["seed"] == seed
    config = json.loads((tmp_path / "runs" / "final" / "mnist-mnistfc-sgd" / f"seed_{seed}"
                         / "config.json").read_text())
    assert (config["lr"], config["validation_split"]) == (choice["setting"]["lr"], 0)
  monkeypatch.setattr(compare, "SETTINGS", compare.diagnose.Settings(
      images=32, batch=16, top_k=1, lanczos_steps=4, probes=2, sigmas=(1e-2,),
      relative_sigmas=(1e-1,), perturbations=2, layer_lanczos_steps=3))
  compare.main(["--stage", "measure", "--out", str(tmp_path)])
  minima = json.loads((tmp_path / "minima.json").read_text())["minima"]
  assert sorted(minima) == sorted(finals)
  for name, minimum in minima.items():
    assert minimum["seed"] == finals[name]["seed"] and minimum["images"] == 32
    assert set(compare.PARTS) - {"trace_and_diagonal"} <= set(minimum)
    assert minimum["settings"]["layer_lanczos_steps"] == 3  # the child measured with these
    assert sorted(minimum["layers"]) == sorted({k.split("'")[1]
                                                for k in minimum["parameter_norms"]})


def test_the_tuning_table_marks_each_cells_choice(compare, load_script):
  report = load_script("experiments/which_optimizer/report.py")
  cell = "mnist-mnistfc-sgd"
  errors = dict(zip(["0.01", "0.03", "0.1", "0.3"], [1.64, 1.70, 1.67, None]))
  trials = {f"{cell}/lr={lr}": {"val_error": e, "diverged": e is None,
                                "setting": {"lr": float(lr)}} for lr, e in errors.items()}
  tuning = {"trials": trials, "chosen": {cell: compare.choose(list(trials.values()))}}
  table = report.tuning_table(tuning)
  assert ("| mnist mnistfc | sgd | **lr=0.01: 1.64**; lr=0.03: 1.70; lr=0.1: 1.67; "
          "lr=0.3: diverged | lr 0.01 | 0.127 |") in table
  assert table.count("\n") == 3  # the header, its rule and the one tuned cell
