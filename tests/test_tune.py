"""experiments/tuning/tune.py: the trials it plans and the setting it chooses."""

import json
import math
import re

import pytest


@pytest.fixture
def tune(load_script):
  module = load_script("experiments/tuning/tune.py")
  module.GRID["entropy-sgd"] = {"lr": [0.1, 0.3], "gamma": [None, 1e-2]}
  return module


def _record(error, diverged=False):
  return {"val_error": error, "diverged": diverged}


def test_trials_name_seed_zero_as_before_and_the_others_by_seed(tune):
  planned = tune.trials(["mnistfc"], ["entropy-sgd"], seeds=2)
  assert [t[0] for t in planned[:3]] == [
      "mnistfc-entropy-sgd-lr0.1", "mnistfc-entropy-sgd-lr0.1-seed1",
      "mnistfc-entropy-sgd-lr0.1-gamma0.01"]
  assert planned[1][3:] == ({"lr": 0.1}, 1)
  assert len(planned) == 8 and len({t[0] for t in planned}) == 8


def test_pending_runs_every_settings_first_seed_before_any_second(tune):
  planned = tune.trials(["mnistfc"], ["entropy-sgd"], seeds=2)
  todo = tune.pending({planned[0][0]: _record(1.0)}, planned)
  assert [t[4] for t in todo] == [0, 0, 0, 1, 1, 1, 1]
  assert [t[0] for t in todo[:3]] == [t[0] for t in planned if t[4] == 0][1:]


def test_one_seed_chooses_the_earliest_within_the_binomial_error(tune):
  planned = tune.trials(["mnistfc"], ["entropy-sgd"])
  errors = [1.30, 1.27, 1.20, 1.15]  # standard error of 1.15% on 10,000 images: 0.107%
  records = {t[0]: _record(e) for t, e in zip(planned, errors)}
  assert tune.choose(records, planned)["mnistfc/entropy-sgd"] == {
      "trial": "mnistfc-entropy-sgd-lr0.3", "lr": 0.3, "val_error": 1.20}


def test_seeds_are_averaged_and_their_spread_is_the_standard_error(tune):
  planned = tune.trials(["mnistfc"], ["entropy-sgd"], seeds=3)
  errors = {"lr0.1": [1.20, 1.30, 1.25], "lr0.1-gamma0.01": [1.18, 1.22, 1.20],
            "lr0.3": [1.15, 1.25, 1.20], "lr0.3-gamma0.01": [1.10, 1.14, 1.12]}
  records = {t[0]: _record(errors[t[0].removeprefix("mnistfc-entropy-sgd-").split("-seed")[0]]
                           [t[4]]) for t in planned}
  chosen = tune.choose(records, planned)["mnistfc/entropy-sgd"]
  spread = math.sqrt((0.05**2 + 0.02**2 + 0.05**2 + 0.02**2) / 4 / 3)  # 0.022
  assert chosen == {"trial": "mnistfc-entropy-sgd-lr0.3-gamma0.01", "lr": 0.3, "gamma": 0.01,
                    "val_error": 1.12, "standard_error": pytest.approx(spread, abs=1e-4)}
  # One diverged seed puts its setting out.
  records["mnistfc-entropy-sgd-lr0.3-gamma0.01-seed2"] = _record(None, diverged=True)
  assert tune.choose(records, planned)["mnistfc/entropy-sgd"]["trial"] == (
      "mnistfc-entropy-sgd-lr0.1-gamma0.01")


def test_a_cell_with_a_missing_trial_is_not_chosen(tune):
  planned = tune.trials(["mnistfc"], ["entropy-sgd"], seeds=2)
  records = {t[0]: _record(1.0) for t in planned[:-1]}
  assert tune.choose(records, planned) == {}


@pytest.mark.parametrize("item, message", [
    ("sigma=0.1", "entropy-sgd tunes ['gamma', 'lr'], not 'sigma'"),
    ("lr=0.1,fast", "want KEY=V1,V2,... with numbers"),
])
def test_a_bad_grid_is_refused_by_name(tune, item, message):
  with pytest.raises(SystemExit, match=re.escape(f"--grid '{item}': {message}")):
    tune.parse_grid([item], ["entropy-sgd"])
  assert tune.parse_grid(["lr=0.03,0.3"], ["entropy-sgd"]) == {"lr": [0.03, 0.3]}


def test_main_refuses_zero_seeds(tune, capsys):
  with pytest.raises(SystemExit):
    tune.main(["--seeds", "0", "--out", "unused.json"])
  assert "--seeds 0: want >= 1" in capsys.readouterr().err


def test_a_cell_is_one_sweep_and_flags_after_the_separator_go_to_it(tune, tmp_path,
                                                                    monkeypatch):
  ran = []
  monkeypatch.setattr(tune._jobs, "run", lambda jobs, cores, on_done: ran.extend(jobs))
  tune.main(["--models", "lenet", "--optimizers", "sgd", "entropy-sgd", "--seeds", "2",
             "--out", str(tmp_path / "t.json"), "--runs", str(tmp_path / "runs"), "--",
             "--param-init", "flax"])
  assert [j.name for j in ran] == ["lenet-entropy-sgd", "lenet-sgd"]
  esgd = ran[0]
  assert esgd.flags[:4] == ["--model", "lenet", "--optimizer", "entropy-sgd"]
  assert esgd.flags[-2:] == ["--param-init", "flax"]
  gamma = tune.optimizers.defaults("lenet", "entropy-sgd")["gamma"]  # GRID's None
  sweeps = [esgd.flags[i + 1] for i, f in enumerate(esgd.flags) if f == "--sweep"]
  assert sweeps == ["lr=0.1,0.3", f"gamma={gamma!r},0.01"]
  assert esgd.flags[esgd.flags.index("--seeds") + 1] == "0,1"
  cell = tmp_path / "runs" / "lenet-entropy-sgd"
  assert esgd.workdir == cell and esgd.members[:3] == (
      ("lenet-entropy-sgd-lr0.1", cell / f"lr=0.1,gamma={gamma:g}" / "seed_0"),
      ("lenet-entropy-sgd-lr0.1-seed1", cell / f"lr=0.1,gamma={gamma:g}" / "seed_1"),
      ("lenet-entropy-sgd-lr0.1-gamma0.01", cell / "lr=0.1,gamma=0.01" / "seed_0"))
  assert len(esgd.members) == 8


def test_a_cell_trains_as_one_program_and_records_every_trial(tune, mnist_dir, tmp_path,
                                                             monkeypatch):
  monkeypatch.setattr(tune, "VALIDATION", 56)
  monkeypatch.setitem(tune.GRID, "sgd", {"lr": [0.1, 0.03]})
  out = tmp_path / "t.json"
  tune.main(["--models", "mnistfc", "--optimizers", "sgd", "--budget", "0.25", "--out",
             str(out), "--runs", str(tmp_path / "runs"), "--", "--data-dir", mnist_dir,
             "--batch-size", "16", "--input-scaling", "centered"])
  result = json.loads(out.read_text())
  trials = result["trials"]
  assert sorted(trials) == ["mnistfc-sgd-lr0.03", "mnistfc-sgd-lr0.1"]
  for name, lr in (("mnistfc-sgd-lr0.1", 0.1), ("mnistfc-sgd-lr0.03", 0.03)):
    workdir = tmp_path / "runs" / "mnistfc-sgd" / f"lr={lr:g}" / "seed_0"
    curve = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert trials[name]["val_error"] == curve[-1]["val_error"] and not trials[name]["diverged"]
    assert trials[name]["flags"] == {"lr": lr} and curve[-1]["lr"] == lr
  assert result["chosen"]["mnistfc/sgd"]["trial"] in trials


def test_a_stopped_member_is_a_result_and_a_missing_one_a_failure(tune, tmp_path):
  # _jobs reads a program of several runs: one Finished per member, a NaN stop
  # (train.py's "stopped") a result without summary.
  members = (("a", tmp_path / "p=1" / "seed_0"), ("b", tmp_path / "p=2" / "seed_0"))
  for _, workdir in members:
    workdir.mkdir(parents=True)
    (workdir / "metrics.jsonl").write_text(json.dumps({"step": 0, "val_error": 90.0}) + "\n")
  job = tune._jobs.Job("cell", [], tmp_path, members)
  lines = [json.dumps({"workdir": str(members[0][1]), "val_error": 1.5}),
           json.dumps({"workdir": str(members[1][1]), "stopped": "loss is nan at update 3"})]
  a, b = tune._jobs._finished(job, 1, "\n".join(["progress", *lines]), "", 0.0)
  assert (a.job.name, a.summary["val_error"], a.error) == ("a", 1.5, "")
  assert (b.job.name, b.summary, b.error) == ("b", None, "loss is nan at update 3")
  assert b.job.workdir == members[1][1] and b.curve == [{"step": 0, "val_error": 90.0}]
  with pytest.raises(tune._jobs._Failed, match="cell: train.py failed:\nboom"):
    tune._jobs._finished(job, 1, lines[0], "boom", 0.0)


def test_a_default_also_in_the_grid_is_one_point_recorded_under_both_names(load_script,
                                                                          tmp_path):
  tune = load_script("experiments/tuning/tune.py")  # its own GRID
  gamma = tune.optimizers.defaults("lenet", "entropy-sgd")["gamma"]
  assert gamma in tune.GRID["entropy-sgd"]["gamma"]  # the case this guards
  job = tune.cell_job("lenet", "entropy-sgd", 1, tmp_path)
  sweeps = [job.flags[i + 1] for i, f in enumerate(job.flags) if f == "--sweep"]
  assert sweeps[1].count(repr(gamma)) == 1
  names = dict(job.members)
  assert len(names) == 9 and len(set(names.values())) == 6
  assert names["lenet-entropy-sgd-lr0.1"] == names[f"lenet-entropy-sgd-lr0.1-gamma{gamma:g}"]


def test_commands_run_side_by_side_and_a_chatty_one_does_not_block(tune):
  # 200 KB on stderr is more than a pipe holds: read only at the end, it would hang.
  chatty = "import sys; sys.stderr.write('x' * 200_000); print('done')"
  commands = [(i, [tune._jobs.sys.executable, "-c", code])
              for i, code in enumerate([chatty, "import sys; sys.exit(3)", "print(2)"])]
  ended = {}
  tune._jobs.run_commands(commands, [0, 1], lambda key, e: ended.update({key: e}), pin=False)
  assert sorted(ended) == [0, 1, 2]
  assert (ended[0].stdout, len(ended[0].stderr)) == ("done\n", 200_000)
  assert (ended[1].returncode, ended[2].stdout) == (3, "2\n")


def test_a_failure_in_on_end_stops_the_commands_still_running(tune, tmp_path):
  pid_file = tmp_path / "pid"
  sleeper = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
  commands = [("sleeper", [tune._jobs.sys.executable, "-c", sleeper]),
              ("quick", [tune._jobs.sys.executable, "-c", "import time; time.sleep(1)"])]

  def on_end(key, ended):
    raise SystemExit(f"{key} failed")

  with pytest.raises(SystemExit, match="quick failed"):
    tune._jobs.run_commands(commands, [0, 1], on_end, pin=False)
  with pytest.raises(ProcessLookupError):  # terminated and reaped
    tune._jobs.os.kill(int(pid_file.read_text()), 0)
