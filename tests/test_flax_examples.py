"""Flax's MNIST example, Linen and NNX, with SGD and with Entropy-SGD (examples/flax_mnist).

Each example trains on a few hundred bundled MNIST images for a short budget
and learns; the README's diffs are the files' own.
"""

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ["linen_sgd", "linen_entropix", "nnx_sgd", "nnx_entropix"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_example_trains_at_the_gradient_budget_it_reports(name, load_script, tmp_path):
  example = load_script(f"examples/flax_mnist/{name}.py")
  # 1,280 images: 10 batches of 128 per epoch, 2 updates of 5 minibatches for Entropy-SGD.
  config = example.Config(num_epochs=2, train_examples=1280, test_examples=300)
  records = example.train_and_evaluate(config, str(tmp_path))
  assert [r["epoch"] for r in records] == [1, 2]
  assert [r["gradient_evaluations"] for r in records] == [10, 20]  # equal budgets
  assert records[-1]["test_accuracy"] > 0.4  # chance is 0.1
  assert records[-1]["train_loss"] < 2.3  # log 10, the loss of a uniform guess
  if name.startswith("nnx"):
    assert records[-1]["test_accuracy_recomputed_stats"] > 0.4
  assert (tmp_path / "records.json").is_file()


def test_the_readme_shows_each_files_own_diff(load_script):
  maker = load_script("examples/flax_mnist/make_readme_diffs.py")
  readme = (ROOT / "examples/flax_mnist/README.md").read_text()
  assert maker.with_diffs(readme) == readme, (
      "examples/flax_mnist/README.md's diffs are stale: run "
      "python examples/flax_mnist/make_readme_diffs.py")
  assert readme.count("```diff") == 2
