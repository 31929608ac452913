"""The notebooks run top to bottom, with CI's small budget, in a fresh kernel."""

import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "docs" / "notebooks"


def run(name, monkeypatch, tmp_path):
  monkeypatch.setenv("ENTROPIX_NOTEBOOK_BUDGET", "small")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  monkeypatch.setenv("ENTROPIX_NOTEBOOK_RUNS", str(tmp_path / "runs"))  # not the checkout's
  # The kernel starts with this environment: one CPU device, as a Colab CPU runtime.
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOKS)}})
  client.execute()  # raises CellExecutionError naming the cell that failed
  return notebook


def outputs(notebook):
  return "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                 for o in c.outputs)


def test_quickstart_runs_and_compares_the_four_optimizers(monkeypatch, tmp_path):
  text = outputs(run("quickstart.ipynb", monkeypatch, tmp_path))
  for line in ("Entropy-SGD:", "local_entropy + adam:", "Linen TrainState + Entropy-SGD:",
               "SGD ", "HJ ", "HEAT "):
    assert line in text, text


def test_reproduce_runs_a_table1_cell(monkeypatch, tmp_path):
  text = outputs(run("reproduce.ipynb", monkeypatch, tmp_path))
  assert '"model": "lenet"' in text and '"optimizer": "entropy-sgd"' in text, text


def test_the_committed_notebooks_carry_no_outputs():
  for path in NOTEBOOKS.glob("*.ipynb"):
    notebook = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in notebook.cells if c.cell_type == "code"), path.name
