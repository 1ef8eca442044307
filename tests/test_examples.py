"""The documentation stays in step with the code.

The gallery examples themselves run in the documentation build (``.ci/run``
builds it with warnings as errors); these checks are the cheap part: every
public name has an entry in the API reference, and every example is a
well-formed sphinx-gallery script.
"""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "doc" / "api.rst"
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))
PUBLIC_MODULES = [
    "skdict",
    "skdict.datasets",
    "skdict.metrics",
    "skdict.model_selection",
    "skdict.experiments",
]


def _documented_names():
    """Fully qualified names listed in autosummary blocks of the API reference."""
    names, module = set(), None
    in_autosummary = False
    for line in API.read_text().splitlines():
        if match := re.match(r"\.\. currentmodule:: (\S+)", line):
            module = match.group(1)
        if line.startswith(".. autosummary::"):
            in_autosummary = True
            continue
        if in_autosummary:
            if line and not line.startswith(" "):
                in_autosummary = False
            elif (entry := line.strip()) and not entry.startswith(":"):
                names.add(f"{module}.{entry}")
    return names


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_api_reference_lists_every_public_name(module_name):
    module = importlib.import_module(module_name)
    public = {
        f"{module_name}.{name}" for name in module.__all__ if not name.startswith("__")
    }
    missing = sorted(public - _documented_names())
    assert not missing, f"doc/api.rst has no autosummary entry for {missing}"


def test_api_reference_lists_only_existing_names():
    for name in sorted(_documented_names()):
        module_name, _, attr = name.rpartition(".")
        assert hasattr(importlib.import_module(module_name), attr), name


def test_there_are_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_gallery_script(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    docstring = ast.get_docstring(tree, clean=False)
    assert docstring, f"{path.name} needs a module docstring with a title"
    lines = docstring.strip("\n").splitlines()
    # sphinx-gallery reads the title from an over- and underlined first line.
    overline, title, underline = lines[:3]
    assert set(overline) == {"="} and overline == underline, path.name
    assert len(underline) >= len(title.strip()), f"{path.name}: short underline"
    assert len(lines) > 4, f"{path.name} needs a paragraph after the title"


def test_the_readme_example_prints_what_the_readme_says(capsys):
    # The README's Python block is the first code a user runs.
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) == 1
    exec(compile(blocks[0], "README.md", "exec"), {})
    printed = float(capsys.readouterr().out)
    promised = re.search(r"print\(mcc_score\(.*\)\)\s+#.* about (\S+)", blocks[0])
    assert printed == pytest.approx(float(promised.group(1)), abs=0.01)
