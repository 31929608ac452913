"""Sphinx configuration of the entropix documentation.

Build: pip install -e ".[docs]" && sphinx-build -W -n docs docs/_build/html
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # entropix from the checkout, installed or not

project = "entropix"
author = "the entropix authors"
copyright = "2026, the entropix authors"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# The notebooks are run by the test suite (tests/test_notebooks.py), not here.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

templates_path = ["_templates"]
autosummary_generate = True
autodoc_typehints = "signature"
# Shown as written, not expanded into the unions they stand for. They need
# the library's postponed annotations (from __future__ import annotations).
autodoc_type_aliases = {
    **{name: name for name in ("optax.ScalarOrSchedule", "optax.Schedule", "optax.Params",
                               "optax.Updates", "Average", "Sampler", "Center", "GradFn",
                               "Loss")},
    "_noise.Sampler": "Sampler",
}
python_maximum_signature_line_length = 88  # one parameter per line beyond this
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Nitpicky: every reference to one of our own names must resolve. Names from
# jax, optax, numpy and the standard library are written for the reader and
# not linked (the docs build offline, without intersphinx).
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(?!entropix\b).*")]

html_theme = "sphinx_book_theme"
html_title = "entropix"
html_theme_options = {
    "repository_url": "https://github.com/entropix/entropix",
    "use_repository_button": True,
    "show_toc_level": 2,
}
