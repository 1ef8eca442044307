"""Sphinx configuration of the skdict documentation.

Build with ``python -m sphinx -W --keep-going -b html doc doc/_build/html``.
The build needs no network: cross-references to other projects through
intersphinx are off unless ``SKDICT_DOCS_INTERSPHINX=1`` is set.
"""

import inspect
import os
import re
import sys
from pathlib import Path

# scikit-learn's array-API dispatch (used by the GPU example) needs SciPy's
# array-API mode, which must be on before SciPy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

HERE = Path(__file__).resolve().parent

import skdict  # noqa: E402

project = "skdict"
author = "the skdict developers"
copyright = "the skdict developers"
release = skdict.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py"]
root_doc = "index"
default_role = "literal"

# -- API reference -----------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": True}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True

# -- Figures in the user guide -----------------------------------------------
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
plot_rcparams = {"figure.figsize": (6.4, 3.2), "figure.autolayout": True}

# -- Example gallery -----------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "doc_module": ("skdict",),
    "backreferences_dir": "generated/backreferences",
    "reference_url": {"skdict": None},
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
}

# -- Cross-references to other projects (needs network; off by default) -----
if os.environ.get("SKDICT_DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "scipy": ("https://docs.scipy.org/doc/scipy", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
    }

# -- Broken references --------------------------------------------------------
# Every cross-reference to skdict must resolve (a private or unexported name
# would render as plain text without a warning). Other projects' names resolve
# only through intersphinx, so without it they are let through.
nitpicky = True
if "sphinx.ext.intersphinx" not in extensions:
    nitpick_ignore_regex = [
        (r"py:.*", r"(sklearn|torch|numpy|np|scipy|matplotlib|pandas|tqdm)(\..*)?")
    ]

# -- HTML ----------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"skdict {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 5,
}
html_show_sourcelink = False


# -- Docstrings inherited from scikit-learn --------------------------------------
# Methods such as ``set_output`` keep scikit-learn's docstrings, which refer to
# labels and glossary terms of scikit-learn's own documentation. Without
# intersphinx those cannot resolve, so the references are rendered as plain
# text.
_REF = re.compile(r":(?:ref|term):`([^`<]*?)\s*(?:<([^`>]*)>)?`", re.DOTALL)


def _unlink_sklearn_refs(app, what, name, obj, options, lines):
    module = getattr(obj, "__module__", None) or ""
    if not module.startswith("sklearn.") or "sphinx.ext.intersphinx" in extensions:
        return
    text = _REF.sub(lambda m: " ".join(m.group(1).split()), "\n".join(lines))
    lines[:] = text.split("\n")


# -- Module-level data re-exported by a package ---------------------------------
# Constants such as ``skdict.metrics.mcc_scorer`` are documented by a ``#:``
# comment where they are defined (``skdict.metrics._scorers``), but documented
# under the public package, where autodoc finds no comment and would fall back
# to the docstring of the value's type. Look the comment up in the submodules.
def _attribute_comment(package, attr, obj):
    from sphinx.errors import PycodeError
    from sphinx.pycode import ModuleAnalyzer

    names = [package, *sorted(m for m in sys.modules if m.startswith(package + "."))]
    for name in names:
        if getattr(sys.modules.get(name), attr, None) is not obj:
            continue
        try:
            comment = ModuleAnalyzer.for_module(name).find_attr_docs().get(("", attr))
        except PycodeError:
            continue
        if comment:
            return list(comment)
    return None


def _document_data(app, what, name, obj, options, lines):
    if what != "data":
        return
    package, _, attr = name.rpartition(".")
    comment = _attribute_comment(package, attr, obj)
    if comment is not None:
        lines[:] = comment
    elif "\n".join(lines).strip() == inspect.cleandoc(type(obj).__doc__ or ""):
        lines[:] = []


def setup(app):
    # Before numpydoc (priority 500) reformats the docstring.
    app.connect("autodoc-process-docstring", _document_data, priority=100)
    app.connect("autodoc-process-docstring", _unlink_sklearn_refs)
