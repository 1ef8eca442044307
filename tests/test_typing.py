"""The public signatures as users' type checkers see them.

The package ships ``py.typed``, so mypy and pyright read its annotations.
Decorators that hide a signature (scikit-learn's untyped ``validate_params``,
a decorator typed ``Callable -> Callable``) turn every call into ``Any``: a
misspelt keyword then passes the checker and fails at run time.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import skdict

pytest.importorskip("mypy")

# Each ``type: ignore[...]`` marks a call the checker must refuse: with
# --warn-unused-ignores, an accepted call is reported as an unused ignore.
PROBE = """
from typing import assert_type

import numpy as np
import torch

from skdict import FISTACoder, OracleDictionary, SparseAutoencoder
from skdict.datasets import default_n_features, make_compositional
from skdict.experiments import compare_methods, run_study
from skdict.metrics import (
    best_feature_auc,
    dictionary_similarity,
    mcc_score,
    probe_accuracy,
    reconstruction_error,
    support_scores,
)
from skdict.model_selection import CompositionalSplit

X = np.zeros((4, 3))

# Parameters as the docs give them, NumPy scalars from grids included.
coder = FISTACoder(
    device=torch.device("cpu"),
    alpha=np.float32(0.1),
    max_iter=np.int64(5),
    random_state=np.random.RandomState(0),
)
sae = SparseAutoencoder(4, device=torch.device("cpu"), lr=np.float64(1e-3))
oracle = OracleDictionary(device="cpu", positive=np.bool_(True))
split = CompositionalSplit(np.int64(3), random_state=np.random.RandomState(0))
data = make_compositional(np.int64(20), 3, n_samples=np.int64(100), noise=0.1)
# Real parameters take NumPy integers, as the checks at fit do; integer ones
# refuse floats.
FISTACoder(alpha=np.int64(1), tol=np.int64(0))
OracleDictionary(alpha=np.uint64(2))
FISTACoder(max_iter=5.0)  # type: ignore[arg-type]

# Fitting returns the estimator itself.
assert_type(coder.fit(X), FISTACoder)
assert_type(coder.partial_fit(X), FISTACoder)
assert_type(oracle.fit(X), OracleDictionary)
assert_type(sae.fit(X), SparseAutoencoder)
assert_type(sae.partial_fit(X), SparseAutoencoder)
assert_type(coder.score(X), float)
assert_type(split.get_n_splits(), int)

# The metrics keep their signatures.
assert_type(mcc_score(X, X), float)
assert_type(dictionary_similarity(X, X), float)
assert_type(reconstruction_error(X, X), float)
assert_type(support_scores(X, X), dict[str, float])
assert_type(probe_accuracy(X, X[:, 0]), dict[str, float | None])

# NumPy scalars, which the checks accept, for the metrics' parameters too.
mcc_score(X, X, top_variance=np.bool_(True))
dictionary_similarity(X, X, threshold=np.float32(0.5))
dictionary_similarity(X, X, detailed=np.bool_(False))
support_scores(X, X, threshold=np.float64(1e-3))
probe_accuracy(X, X[:, 0], max_iter=np.int64(100))
probe_accuracy(X, X[:, 0], max_iter=None, probe=None)
default_n_features(np.int64(50), np.int64(5))
compare_methods(data, ["fista_oracle"], verbose=np.int64(0))
run_study("alpha", seeds=[np.int64(0)], progress=np.bool_(False))

# Misspelt keywords and missing arguments.
mcc_score(X, X, top_varience=True)  # type: ignore[call-arg]
support_scores(X, X, treshold=0.1)  # type: ignore[call-arg]
reconstruction_error(X)  # type: ignore[call-arg]
best_feature_auc(X)  # type: ignore[call-arg]
FISTACoder(aplha=0.1)  # type: ignore[call-arg]
SparseAutoencoder(4, max_epoch=3)  # type: ignore[call-arg]
OracleDictionary(device=3)  # type: ignore[arg-type]

# A misspelt name (the lazy imports' module __getattr__ must stay hidden).
from skdict import FISTACoderr  # type: ignore[attr-defined]
"""


def test_type_checkers_see_the_public_signatures(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(PROBE))
    package_root = Path(skdict.__file__).resolve().parents[1]
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--python-executable",
        sys.executable,
        # Only the probe's errors: the package's own modules call untyped
        # libraries (scikit-learn, SciPy), which is no concern of its users.
        "--follow-imports=silent",
        "--warn-unused-ignores",
        "--no-incremental",
        "--cache-dir",
        str(tmp_path / "cache"),
        str(probe),
    ]
    # An editable install is a setuptools import hook, which checkers do not
    # follow: point them at the sources.
    env = {"MYPYPATH": str(package_root), "PATH": ""}
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
