"""The repository keeps its promises: CI runs the README's test command."""

import json
import pathlib
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
MAIN_SUITE_ONLY = {"tests/test_composition.py"}


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


def test_every_file_readme_and_the_code_cite_is_in_the_repository():
  readme = (ROOT / "README.md").read_text()
  cited = set(re.findall(r"`((?:[\w.-]+/)*[\w.-]+\.(?:py|md|json|toml|ipynb))`", readme))
  sources = [p for d in ("entropix", "models", "training", "tests", "benchmarks", "examples")
             for p in (ROOT / d).glob("*.py")] + [ROOT / "train.py", ROOT / "input_pipeline.py"]
  for path in sources:
    cited |= set(re.findall(r"\b((?:docs|results|benchmarks|data)/[\w./-]+\.\w+)", path.read_text()))
  cited = {c for c in cited if not c.startswith("WORKDIR/")}  # a run's files
  # README names the library's modules by their bare names (_alias.py).
  folders = ("", "entropix", "models", "training", "benchmarks", "tests", "examples", "notebooks")
  missing = [c for c in cited if not any((ROOT / d / c).exists() for d in folders)]
  assert cited and not missing, missing
  assert "docs/conventions.md" in cited


# README's Results section: Table 1 from the authors' initialisation, then
# the earlier one from Flax's under its own heading.
TABLES = {"results": "## Results", "results/flax_init": "### From Flax's initialisation"}


@pytest.mark.parametrize("folder", list(TABLES))
def test_readme_results_table_is_the_one_the_runs_wrote(folder):
  # README's tables are pasted from table1.md: a stale copy would publish
  # numbers the records no longer give.
  table = (ROOT / folder / "table1.md").read_text().strip()
  readme = (ROOT / "README.md").read_text()
  header = table.splitlines()[0]
  assert TABLES[folder] in readme, f"README has no section {TABLES[folder]!r}"
  section = readme.index(TABLES[folder])
  assert header in readme[section:], f"README has no table of {folder}/table1.md"
  start = readme.index(header, section)
  end = readme.find("\n\n", start)
  pasted = readme[start:end if end != -1 else len(readme)].strip()
  assert pasted == table, (
      f"README's table under {TABLES[folder]!r} differs from {folder}/table1.md: paste the "
      "file's table in (python benchmarks/reproduce_table1.py --tables writes it)")


@pytest.mark.parametrize("folder,param_init", [("results", settings.PARAM_INIT),
                                               ("results/flax_init", "flax")])
def test_each_table_holds_runs_of_one_initialisation(folder, param_init):
  # A runner given stale flags would mix initialisations in one table.
  records = json.loads((ROOT / folder / "table1_runs.json").read_text())
  assert records
  mixed = {name: r["config"]["param_init"] for name, r in records.items()
           if r["config"]["param_init"] != param_init}
  assert not mixed, f"{folder}/table1_runs.json: runs not from {param_init}: {mixed}"
