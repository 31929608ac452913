"""Writes the diffs between each example and its Entropy-SGD version into README.md.

The README's two ``diff`` blocks are generated here, between the markers
``<!-- diff linen -->`` / ``<!-- diff nnx -->`` and ``<!-- end diff -->``;
tests/test_flax_examples.py checks that they are what this writes.

Run: python examples/flax_mnist/make_readme_diffs.py
"""

import difflib
import pathlib
import re

HERE = pathlib.Path(__file__).resolve().parent


def diff(flavour: str) -> str:
  old, new = (HERE / f"{flavour}_sgd.py"), (HERE / f"{flavour}_entropix.py")
  lines = difflib.unified_diff(old.read_text().splitlines(keepends=True),
                               new.read_text().splitlines(keepends=True),
                               fromfile=old.name, tofile=new.name, n=1)
  return "".join(lines)


def with_diffs(readme: str) -> str:
  for flavour in ("linen", "nnx"):
    readme = re.sub(rf"(<!-- diff {flavour} -->\n).*?(<!-- end diff -->)",
                    lambda m: f"{m.group(1)}```diff\n{diff(flavour)}```\n{m.group(2)}",
                    readme, flags=re.S)
  return readme


if __name__ == "__main__":
  path = HERE / "README.md"
  path.write_text(with_diffs(path.read_text()))
