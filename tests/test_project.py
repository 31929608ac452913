"""The repository keeps its promises: CI runs the README's test command."""

import json
import pathlib
import os
import re

import pytest

from training import settings

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
  readme = (ROOT / "README.md").read_text()
  commands = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
  assert len(commands) == 2, "the Quick start has exactly two commands"
  ci_lines = [
      line for line in (ROOT / ".ci" / "run").read_text().splitlines()
      if line and not line.startswith(("#", "set ", "cd "))
  ]
  assert ci_lines == commands[1].splitlines()


# What the library's tests may import: CI runs them where only jax, optax,
# numpy (and scipy, which jax brings) are installed, at their oldest versions.
LIBRARY_IMPORTS = {"entropix", "jax", "numpy", "optax", "pytest", "scipy", "test_optax_common"}
# Library tests the oldest-versions run leaves out, and why. The composition
# matrix compiles some 130 programs: 44 s of CI's 2 cores a run, which the
# 10-minute budget cannot take twice. It passed at the oldest versions when it
# was written (jax 0.5.0, optax 0.2.5: 127 passed, 8 skipped, 2026-12-04).
# The documentation build runs Sphinx and documents entropix.linen (Flax),
# neither of which the oldest-versions run installs.
MAIN_SUITE_ONLY = {"tests/test_composition.py", "tests/test_docs.py"}


def _imports(path):
  import ast

  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names |= {a.name.split(".")[0] for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      names.add(node.module.split(".")[0])
  return names


def test_the_oldest_versions_run_covers_every_library_test_and_nothing_else():
  import importlib.util
  import sys

  spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
  root_conftest = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(root_conftest)
  listed = (ROOT / ".ci" / "library_tests").read_text().split()
  allowed = LIBRARY_IMPORTS | set(sys.stdlib_module_names)
  for name in listed:
    files = [ROOT / name] if name.endswith(".py") else (ROOT / name).glob("*.py")
    for path in files:
      # An integration module that needs more is skipped where that is missing.
      optional = root_conftest.OPTIONAL_IMPORTS.get(str(path.relative_to(ROOT)))
      extra = _imports(path) - allowed - {optional}
      assert not extra, f"{path.relative_to(ROOT)} is in .ci/library_tests but imports {extra}"
  for path in (ROOT / "tests").glob("test_*.py"):
    names = _imports(path)
    if "entropix" in names and names <= allowed:
      relative = str(path.relative_to(ROOT))
      assert (relative in listed) != (relative in MAIN_SUITE_ONLY), (
          f"add {path.name} to .ci/library_tests, or say in MAIN_SUITE_ONLY why not")


def test_the_distribution_installs_the_library_alone():
  # What setuptools reads from pyproject.toml when it builds the wheel:
  # models/, training/, input_pipeline.py and train.py stay in the clone.
  import warnings

  from setuptools.config.pyprojecttoml import apply_configuration
  from setuptools.dist import Distribution

  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
  assert dist.packages == ["entropix"] and not dist.py_modules


def _pages():
  """README, the docs' pages and the experiments' reports: what a reader reads."""
  return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
          *sorted((ROOT / "experiments").rglob("*.md"))]


# Files of the authors' repositories that docs/guides/conventions.md describes.
AUTHORS_FILES = {"code/optim.py", "code/parle.py", "parle.py"}


def test_every_file_the_pages_and_the_code_cite_is_in_the_repository():
  cited = set()
  for page in _pages():
    cited |= set(re.findall(r"`((?:[\w.-]+/)*[\w.-]+\.(?:py|md|json|toml|ipynb|sh|png))`",
                            page.read_text()))
  sources = [p for d in ("entropix", "models", "training", "tests", "benchmarks", "examples")
             for p in (ROOT / d).glob("*.py")] + [ROOT / "train.py", ROOT / "input_pipeline.py"]
  sources += sorted((ROOT / "experiments").rglob("*.py"))
  for path in sources:
    cited |= set(re.findall(r"\b((?:docs|benchmarks|experiments|data)/[\w./-]+\.\w+)",
                            path.read_text()))
  cited = {c for c in cited if not c.startswith("WORKDIR/")}  # a run's files
  cited -= AUTHORS_FILES
  # Pages name the library's modules by their bare names (_alias.py), and a
  # report names its own folder's files bare (table1_runs.json).
  folders = ("", "entropix", "models", "training", "benchmarks", "benchmarks/records", "tests",
             "examples", "docs", "docs/guides", "docs/notebooks",
             *(str(p.relative_to(ROOT)) for p in (ROOT / "experiments").rglob("*") if p.is_dir()))
  missing = [c for c in cited if not any((ROOT / d / c).exists() for d in folders)]
  assert cited and not missing, missing
  assert "docs/guides/conventions.md" in cited


BUILT = {"_build", "_autosummary", "runs", "__pycache__", "entropix.egg-info"}


def test_nothing_points_outside_the_repository():
  # Everything the project needs from outside sources is written into its
  # own pages: no path out of the checkout, no private notes.
  markers = ("../" + "shared", "REFERENCE" + ".md")  # split, or this file would match
  outside = []
  for folder, subfolders, files in os.walk(ROOT):
    # Hidden folders (.git, the venvs) and what builds or runs write.
    subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in BUILT]
    for name in files:
      path = pathlib.Path(folder, name)
      if path.suffix in (".py", ".md", ".sh", ".ipynb", ".toml", ".txt", ".rst"):
        text = path.read_text(errors="replace")
        outside += [str(path.relative_to(ROOT)) for m in markers if m in text]
  assert not outside, outside


EXPERIMENTS = ROOT / "experiments"
# Every table reproduce_table1.py wrote: each is pasted whole into its
# experiment's REPORT.md, and the authors'-initialisation one into README.
TABLES = sorted(str(p.parent.relative_to(ROOT)) for p in EXPERIMENTS.rglob("table1.md"))
README_TABLE = "experiments/table1"


@pytest.mark.parametrize("folder", TABLES)
def test_reports_and_readme_hold_the_tables_the_runs_wrote(folder):
  # A stale copy would publish numbers the records no longer give.
  table = (ROOT / folder / "table1.md").read_text().strip()
  experiment = "/".join(folder.split("/")[:2])
  fix = ("paste the file's table in (python experiments/table1/reproduce_table1.py --tables "
         f"--results {folder} writes it)")
  report = (ROOT / experiment / "REPORT.md").read_text()
  assert f"\n{table}\n" in f"\n{report}\n", (
      f"{experiment}/REPORT.md lacks {folder}/table1.md: {fix}")
  if folder == README_TABLE:
    readme = (ROOT / "README.md").read_text()
    assert f"\n{table}\n" in f"\n{readme}\n", f"README lacks {folder}/table1.md: {fix}"


@pytest.mark.parametrize("folder", [str(p.parent.relative_to(ROOT))
                                    for p in sorted(EXPERIMENTS.rglob("table1_runs.json"))])
def test_each_table_holds_runs_of_one_initialisation(folder):
  # A runner given stale flags would mix initialisations in one table.
  param_init = "flax" if folder.startswith("experiments/table1_flax_init") else settings.PARAM_INIT
  records = json.loads((ROOT / folder / "table1_runs.json").read_text())
  assert records
  mixed = {name: r["config"]["param_init"] for name, r in records.items()
           if r["config"]["param_init"] != param_init}
  assert not mixed, f"{folder}/table1_runs.json: runs not from {param_init}: {mixed}"


def _command_lines(text):
  """The shell commands of ``text``, continuation lines joined, each as its words."""
  import shlex

  commands = []
  for line in text.replace("\\\n", " ").splitlines():
    try:
      words = shlex.split(line, comments=True)
    except ValueError:  # a heredoc's Python, say
      words = line.split()
    if words:
      commands.append([w.rstrip("/") for w in words])
  return commands


def _commands(words, seen=()):
  """``words`` and, for every script of experiments/ it runs with bash, that
  script's commands in turn."""
  found = [words]
  for word in words:
    path = ROOT / word
    if word.startswith("experiments/") and word.endswith(".sh") and path not in seen:
      for line in _command_lines(path.read_text()):
        found += _commands(line, (*seen, path))
  return found


def _writes(words, record):
  """Whether the command ``words`` runs a script that writes ``record``: the
  command names the record, or a script it runs names the record's file
  and the command names its folder (or the script lives there)."""
  relative = str(record.relative_to(ROOT))
  folder = str(record.parent.relative_to(ROOT))
  scripts = [ROOT / w for w in words if w.endswith((".py", ".sh")) and (ROOT / w).is_file()]
  return relative in words or any(
      record.name in script.read_text() and (script.parent == record.parent or folder in words)
      for script in scripts)


def test_every_experiment_reports_its_command_and_every_record_has_a_writer():
  # experiments/NAME/: a driver, its records, a REPORT.md (question, the one
  # command that writes every record from nothing, results, what they mean);
  # benchmarks/records/: what the speed benchmarks write. A record no
  # committed command writes is an orphan.
  assert not (ROOT / "results").exists(), "results/ is gone: records live in experiments/"
  folders = sorted(p for p in EXPERIMENTS.iterdir() if p.is_dir() and p.name != "__pycache__")
  assert folders
  orphans = []
  for folder in folders:
    report = (folder / "REPORT.md").read_text() if (folder / "REPORT.md").is_file() else ""
    for part in ("**Question.**", "## Command", "## Result", "## What it means"):
      assert part in report, f"{folder.relative_to(ROOT)}/REPORT.md: no {part!r}"
    block = re.search(r"^## Command\n.*?^```sh\n(.*?)^```", report, re.M | re.S)
    assert block, f"{folder.relative_to(ROOT)}/REPORT.md: no ```sh block under '## Command'"
    lines = _command_lines(block.group(1))
    assert len(lines) == 1, f"{folder.relative_to(ROOT)}/REPORT.md: one command, not {lines}"
    command = lines[0]
    assert any((ROOT / w).is_file() and folder in (ROOT / w).parents for w in command), (
        f"{folder.relative_to(ROOT)}/REPORT.md: its command runs none of the folder's scripts")
    commands = _commands(command)
    for record in sorted(folder.rglob("*")):
      if record.suffix in (".json", ".md", ".png") and record.name != "REPORT.md":
        if not any(_writes(words, record) for words in commands):
          orphans.append(str(record.relative_to(ROOT)))
  benchmarks = "".join(p.read_text() for p in (ROOT / "benchmarks").glob("*.py"))
  for record in sorted((ROOT / "benchmarks").rglob("*")):
    relative = str(record.relative_to(ROOT))
    if record.suffix in (".json", ".md", ".png") and relative not in benchmarks:
      orphans.append(relative)
  assert not orphans, f"records no committed command writes: {orphans}"


# The most lines a function may have of its own: its signature and body, not
# its docstring nor the functions and classes defined inside it.
MAX_FUNCTION_LINES = 80
TRAIN_PY_LINES = 250
TRAINING_FUNCTION_LINES = 60


def _own_lines(function):
  import ast

  lines = set(range(function.lineno, function.end_lineno + 1))
  body = function.body
  if (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
      and isinstance(body[0].value.value, str)):
    lines -= set(range(body[0].lineno, body[0].end_lineno + 1))
  for node in ast.walk(function):
    if node is not function and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                   ast.ClassDef)):
      start = min([node.lineno] + [d.lineno for d in node.decorator_list])
      lines -= set(range(start, node.end_lineno + 1))
  return len(lines)


def _long_functions(sources, limit):
  import ast

  long = []
  for path in sources:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = _own_lines(node)
        if lines > limit:
          long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
  return long


def test_no_function_is_longer_than_80_lines_of_its_own():
  skip = ("build", "dist", "__pycache__")
  sources = [p for p in ROOT.rglob("*.py")
             if not any(part.startswith(".") or part in skip or part.endswith(".egg-info")
                        for part in p.relative_to(ROOT).parts[:-1])]
  assert ROOT / "train.py" in sources and ROOT / "entropix" / "_alias.py" in sources
  long = _long_functions(sources, MAX_FUNCTION_LINES)
  assert not long, f"functions of more than {MAX_FUNCTION_LINES} lines of their own: {long}"
  lines = len((ROOT / "train.py").read_text().splitlines())
  assert lines < TRAIN_PY_LINES, f"train.py has {lines} lines: keep the work in training/"


def test_the_training_side_reads_in_functions_of_at_most_60_lines():
  # One run reads top to bottom (training.loop); groups of runs sit on top of
  # it (training.sweeps); no step of either hides in a long function.
  sources = [ROOT / "train.py", *sorted((ROOT / "training").rglob("*.py"))]
  assert ROOT / "training" / "loop.py" in sources
  long = _long_functions(sources, TRAINING_FUNCTION_LINES)
  assert not long, f"training-side functions of more than {TRAINING_FUNCTION_LINES} lines: {long}"


def _python_blocks(page):
  return re.findall(r"```python\n(.*?)\n```", (ROOT / page).read_text(), flags=re.S)


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_the_front_page_example_does_what_it_says(page):
  # The first example a reader copies runs alone (tests/test_snippets.py runs
  # every block) and ends where its last comment says: w -> [1, -2, 0.5], b -> 0.3.
  import numpy as np

  [block] = _python_blocks(page)
  assert block == _python_blocks("README.md")[0]  # one example on both front pages
  scope = {}
  exec(block, scope)  # noqa: S102: our own page
  np.testing.assert_allclose(scope["params"]["w"], [1.0, -2.0, 0.5], atol=0.01)
  np.testing.assert_allclose(scope["params"]["b"], 0.3, atol=0.01)
