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
  monkeypatch.setattr(compare, "SEEDS", (1,))  # one seed, not 0: the seed reaches the runs
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
  assert sorted(finals) == ["mnist-mnistfc-sgd/seed_1"]
  run = finals["mnist-mnistfc-sgd/seed_1"]
  assert run["setting"] == choice["setting"] and run["seed"] == 1
  config = json.loads((tmp_path / "runs" / "final" / "mnist-mnistfc-sgd" / "seed_1"
                       / "config.json").read_text())
  assert (config["lr"], config["validation_split"], config["seed"]) == (
      choice["setting"]["lr"], 0, 1)
  monkeypatch.setattr(compare, "SETTINGS", compare.diagnose.Settings(
      images=32, batch=16, top_k=1, lanczos_steps=4, probes=2, sigmas=(1e-2,),
      relative_sigmas=(1e-1,), perturbations=2, layer_lanczos_steps=3))
  # --cells and --optimizers pick what is measured too: no adamw run, nothing.
  compare.main(["--stage", "measure", "--out", str(tmp_path), "--optimizers", "adamw"])
  assert json.loads((tmp_path / "minima.json").read_text())["minima"] == {}
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


def _final(optimizer, seed, error, top):
  curve = [{"effective_epochs": e, "val_error": error + 10 - e,
            "sharpness": {"top_eigenvalue": top * (1 + e)}} for e in (0.0, 5.0, 10.0)]
  return {"dataset": "mnist", "model": "lenet", "optimizer": optimizer, "seed": seed,
          "diverged": False, "val_error": error, "curve": curve}


def _minimum(top, loss):
  return {"loss": loss, "top_eigenvalues": [top], "trace": {"value": 10 * top},
          "perturbation_sharpness": {"sigmas": [1e-3, 1e-2], "increase": [0.0, top / 100]},
          "relative_sharpness": {"sigmas": [1e-2, 1e-1], "increase": [0.0, top / 50]},
          "layers": {"Conv_0": {"parameters": 520, "top_eigenvalue": top, "trace": 3 * top},
                     "Dense_0": {"parameters": 1200, "top_eigenvalue": loss,
                                 "trace": 2 * loss}}}


def test_the_results_rank_by_mean_and_say_which_gaps_the_seeds_resolve(load_script, tmp_path):
  report = load_script("experiments/which_optimizer/report.py")
  errors = {"sgd": (1.00, 1.02), "adamw": (1.01, 1.03), "sam": (1.50, 1.52),
            "entropy-sgd": (0.90, 1.20)}
  finals, minima = {}, {}
  for rank, (optimizer, pair) in enumerate(errors.items()):
    for seed, error in enumerate(pair):
      name = f"mnist-lenet-{optimizer}/seed_{seed}"
      finals[name] = _final(optimizer, seed, error, top=10.0 * (rank + 1))
      minima[name] = _minimum(10.0 * (rank + 1), loss=0.01 * error)
  finals["mnist-lenet-swa/seed_0"] = {**_final("swa", 0, 0.5, 1.0), "diverged": True}
  rows = report.ranking(finals)[("mnist", "lenet")]
  assert [r["optimizer"] for r in rows] == ["sgd", "adamw", "entropy-sgd", "sam"]  # swa: out
  assert rows[0]["mean"] == pytest.approx(1.01) and rows[0]["std"] == pytest.approx(0.01414, 1e-3)
  # sgd -> adamw: 0.01 apart, under 2 standard errors (0.028); adamw ->
  # entropy-sgd: 0.03, under 0.30 (entropy-sgd's seeds spread); entropy-sgd ->
  # sam: 0.46, over it.
  assert [r.get("gap_resolved") for r in rows] == [False, False, True, None]
  text = report.results_text(finals, minima)
  assert "| 1 | sgd | 1.010 +- 0.014 | 2 | 0.010 (no) |  |" in text
  # Below SGD: sam by -0.50 with a standard error of 0.014 (two seeds each).
  assert "| 4 | sam | 1.510 +- 0.014 | 2 |  | -0.500 +- 0.014 (-35.4) |" in text
  # The training loss orders the optimizers as their error does; the top
  # eigenvalue swaps the last two.
  assert "training loss +1.00" in text and "top eigenvalue +0.80" in text
  # Per layer, each optimizer's seeds averaged: sam's minima have top 30 and
  # losses 0.0150 and 0.0152.
  assert "| optimizer | Conv_0 (520) | Dense_0 (1,200) |" in text
  assert "| sam | 30 / 90 | 0.0151 / 0.0302 |" in text
  report.figures(finals, minima, tmp_path)
  assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "flatness.png").is_file()


def test_across_cells_each_optimizers_rank_and_where_it_beats_sgd(load_script):
  report = load_script("experiments/which_optimizer/report.py")
  cells = {"mnist": {"sgd": (1.00, 1.02), "entropy-sgd": (0.90, 1.20), "sam": (1.5, 1.52)},
           "fashion_mnist": {"sgd": (9.0, 9.02), "entropy-sgd": (8.5, 8.52), "sam": (9.5, 9.9)}}
  finals = {f"{dataset}-lenet-{optimizer}/seed_{seed}": {**_final(optimizer, seed, error, 1.0),
                                                         "dataset": dataset}
            for dataset, errors in cells.items() for optimizer, pair in errors.items()
            for seed, error in enumerate(pair)}
  text = report.results_text(finals, {})
  assert ("| optimizer | rank, mnist lenet | rank, fashion_mnist lenet | mean rank | "
          "cells below sgd by > 2 standard errors |") in text
  # entropy-sgd: 2nd on MNIST (0.04 above SGD, within its spread), 1st on
  # Fashion-MNIST, 0.50 below SGD with a standard error of 0.014.
  assert "| entropy-sgd | 2 | 1 | 1.50 | 1 of 2 |" in text
  assert "| sgd | 1 | 2 | 1.50 | 0 of 2 |" in text and "| sam | 3 | 3 | 3.00 | 0 of 2 |" in text
