"""The repository keeps its promises: CI runs the README's test command."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
  readme = (ROOT / "README.md").read_text()
  commands = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
  assert len(commands) == 2, "the Quick start has exactly two commands"
  ci_lines = [
      line for line in (ROOT / ".ci" / "run").read_text().splitlines()
      if line and not line.startswith(("#", "set ", "cd "))
  ]
  assert ci_lines == [commands[1]]


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
