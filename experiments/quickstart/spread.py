"""How far the quick start's validation error moves with the machine's settings and the seed.

The quick start is ``python train.py --effective-epochs 5`` (mnistfc,
Entropy-SGD, seed 0). Its result is deterministic for given settings, but
XLA splits its reductions by the threads and devices it has, so the last
digits follow them; the seed moves it more. This runs the quick start under
each setting of VARIANTS (cores, Eigen threads, devices, pmap or shard_map,
the layouts of a group of runs, code for a CPU without AVX-512) and for
seeds 0-5, one run at a time, and writes each finished run's summary
to ``records.json`` at once (a variant already there is skipped: the script
resumes). ``--report`` prints the table of REPORT.md and the bands. A record
marked ``"reported"`` was measured elsewhere: kept, never rerun.

Run: python experiments/quickstart/spread.py (about 25 minutes on 2 cores), then
python experiments/quickstart/spread.py --report
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RECORDS = HERE / "records.json"
QUICK_START = ["--effective-epochs", "5"]
ALL_CORES = sorted(os.sched_getaffinity(0))

# The stacked layout of a group of runs (train.py --seeds uses it on accelerators,
# the tuple one on a CPU), for the quick start's one run: no flag chooses it.
STACKED = ("import json, sys, training; (r,) = training.train_group([training.build_config("
           "effective_epochs=5, progress=False)], [sys.argv[1]], vmap=True); "
           "print(json.dumps(r.summary))")

# name -> (cores it may use, extra XLA flags, extra train.py flags or ["-c", program])
VARIANTS = {
    "2 cores, pmap (the quick start)": (ALL_CORES, "", []),
    "2 cores, --seeds 0 (a group of runs, one step copy each: the tuple layout)": (
        ALL_CORES, "", ["--seeds", "0"]),
    "2 cores, a group of runs, stacked and vmapped (the stacked layout)": (
        ALL_CORES, "", ["-c", STACKED]),
    "2 cores, shard_map": (ALL_CORES, "", ["--spmd", "shard_map"]),
    "1 core, pmap": (ALL_CORES[-1:], "", []),
    "1 core, shard_map": (ALL_CORES[-1:], "", ["--spmd", "shard_map"]),
    "2 cores, Eigen single-threaded": (ALL_CORES, "--xla_cpu_multi_thread_eigen=false", []),
    "2 cores, 2 devices": (ALL_CORES, "--xla_force_host_platform_device_count=2",
                           ["--devices", "2"]),
    # Code for a CPU without AVX-512 (this one has it; machines of its kind may not).
    "2 cores, AVX2 code": (ALL_CORES, "--xla_cpu_max_isa=AVX2", []),
    "1 core, AVX2 code": (ALL_CORES[-1:], "--xla_cpu_max_isa=AVX2", []),
    # What a shell with 8 simulated CPU devices (as the test suite's) gives by default.
    "2 cores, 8 devices": (ALL_CORES, "--xla_force_host_platform_device_count=8", []),
    "2 cores, 4 devices": (ALL_CORES, "--xla_force_host_platform_device_count=4", []),
    "1 core, 2 devices": (ALL_CORES[-1:], "--xla_force_host_platform_device_count=2", []),
    "1 core, 8 devices": (ALL_CORES[-1:], "--xla_force_host_platform_device_count=8", []),
    **{f"2 cores, seed {s}": (ALL_CORES, "", ["--seed", str(s)]) for s in range(1, 6)},
}


def run(name, cores, xla_flags, flags):
  env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
  with tempfile.TemporaryDirectory() as workdir:
    program = (flags + [workdir] if flags[:1] == ["-c"] else
               ["train.py", *QUICK_START, *flags, "--workdir", workdir, "--no-progress"])
    command = ["taskset", "-c", ",".join(map(str, cores)), sys.executable, *program]
    start = time.time()
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True)
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  return {"variant": name, "command": " ".join(program).replace(workdir, "WORKDIR"),
          "cores": len(cores), "xla_flags": xla_flags, "val_error": summary["val_error"],
          "val_loss": summary["val_loss"], "wall_s": round(time.time() - start, 1)}


def load():
  return json.loads(RECORDS.read_text()) if RECORDS.exists() else []


def band(records):
  errors = [r["val_error"] for r in records]
  return min(errors), max(errors)


def report():
  records = load()
  lines = ["| variant | validation error (%) | validation loss | wall s |", "|---|---|---|---|"]
  lines += [f"| {r['variant']} | {r['val_error']:.2f} | "
            + ("- | - |" if r.get("reported") else f"{r['val_loss']:.4f} | {r['wall_s']:.0f} |")
            for r in records]
  seed_zero = [r for r in records if "seed " not in r["variant"]]
  low, high = band(seed_zero)
  seeds = [r for r in records if "seed " in r["variant"]] + records[:1]
  lines.append(f"\nSeed 0, {len(seed_zero)} settings: {low:.2f}% to {high:.2f}%; seeds 0-5 "
               f"with the quick start's settings: {band(seeds)[0]:.2f}% to {band(seeds)[1]:.2f}%")
  return "\n".join(lines)


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--report", action="store_true")
  args = parser.parse_args()
  if args.report:
    print(report())
    sys.exit()
  records = load()
  for name, (cores, xla_flags, flags) in VARIANTS.items():
    if any(r["variant"] == name for r in records):
      continue
    records.append(run(name, cores, xla_flags, flags))
    print(json.dumps(records[-1]), flush=True)
    RECORDS.write_text(json.dumps(records, indent=1) + "\n")
