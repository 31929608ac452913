"""Every Python block of README.md and the guides runs as it is written.

Blocks of one page run in order in one namespace, as a reader pasting them
into one session would; each page in a fresh process, so no state leaks
between pages. A block that cannot run alone says so on its first line
(``# fragment: why``) and is skipped, and only the fragments named in
FRAGMENTS may: a new fragment is a decision, not an accident.
"""

import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted(["README.md", *(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")),
                *(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "guides").glob("*.md")),
                *(str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*/README.md"))])
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
FRAGMENT = "# fragment:"
# (page, first line of the block after the marker) of every block allowed to be a fragment.
FRAGMENTS: set[tuple[str, str]] = set()


def blocks(page):
  return BLOCK.findall((ROOT / page).read_text())


def runnable(page):
  return [b for b in blocks(page) if not b.startswith(FRAGMENT)]


@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)])
def test_the_pages_python_blocks_run(page):
  source = "\n".join(f"# --- block {n}\n{b}" for n, b in enumerate(runnable(page)))
  # A fresh process: the page's imports, jit caches and devices are its own.
  result = subprocess.run([sys.executable, "-c", source], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, (
      f"{page}: a Python block failed\n{result.stderr[-4000:]}\n--- the code:\n"
      + textwrap.indent(source, "  "))


def test_only_the_named_fragments_are_skipped():
  found = {(page, b.splitlines()[0][len(FRAGMENT):].strip()) for page in PAGES
           for b in blocks(page) if b.startswith(FRAGMENT)}
  assert found == FRAGMENTS, f"fragments not named in FRAGMENTS: {found - FRAGMENTS}; " \
                             f"named but gone: {FRAGMENTS - found}"


def test_every_page_with_code_is_collected():
  assert "README.md" in PAGES and "docs/guides/using.md" in PAGES
  assert all(blocks(page) for page in ["README.md", "docs/guides/using.md"])
