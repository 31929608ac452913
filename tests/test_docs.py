"""The documentation site builds with every warning an error."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_site_builds_without_a_warning(tmp_path):
  # -W: warnings are errors; -n: every reference to one of our names resolves
  # (docs/conf.py); -E: no cached environment hides a stale page.
  result = subprocess.run(
      [sys.executable, "-m", "sphinx", "-W", "-n", "-E", "--keep-going", "-q",
       "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html")],
      capture_output=True, text=True, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-6000:]
  api = (tmp_path / "html" / "_autosummary" / "entropix.entropy_sgd.html").read_text()
  assert "Example" in api and "MathJax" in api  # the docstring, with its maths
  for page in ("getting_started", "guides/composing", "notebooks/quickstart"):
    assert (tmp_path / "html" / f"{page}.html").is_file(), page


def test_the_api_page_lists_every_public_name():
  import entropix
  from entropix import diagnostics, pde

  page = (ROOT / "docs" / "api.md").read_text()
  listed = set(re.findall(r"^   (entropix\.[\w.]+)$", page, flags=re.M))
  modules = {"pde": pde, "diagnostics": diagnostics}
  public = {f"entropix.{name}" for name in entropix.__all__ if name not in modules}
  for name, module in modules.items():
    public |= {f"entropix.{name}.{attr}" for attr in dir(module)
               if not attr.startswith("_") and callable(getattr(module, attr))
               and getattr(getattr(module, attr), "__module__", "") == module.__name__}
  public |= {"entropix.linen.TrainState", "entropix.linen.recompute_batch_stats",
             "entropix.nnx.recompute_batch_stats"}
  assert listed == public, (f"docs/api.md misses {sorted(public - listed)}, "
                            f"lists unknown {sorted(listed - public)}")
