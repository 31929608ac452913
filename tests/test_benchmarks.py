"""benchmarks/: each script still builds its command line against today's code.

The benchmarks are run by hand, not by CI, so a refactor that renames what
one imports or reads would otherwise surface only when somebody next needs
the numbers. ``--help`` builds the whole parser (the optimizers' and models'
registries included) and exits 0 without measuring anything.
"""

import pathlib
import sys

import pytest

BENCHMARKS = sorted((pathlib.Path(__file__).resolve().parent.parent / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_every_benchmark_builds_its_command_line(script, load_script, monkeypatch, capsys):
  module = load_script(f"benchmarks/{script.name}")
  monkeypatch.setattr(sys, "argv", [script.name, "--help"])
  with pytest.raises(SystemExit) as exit_:
    module.main()
  assert exit_.value.code == 0
  assert "usage:" in capsys.readouterr().out
