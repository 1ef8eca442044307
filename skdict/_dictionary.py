r"""Dictionary providers, dictionary learning and the oracle dictionary.

A *dictionary provider* is anything exposing ``components_`` of shape
``(n_components, n_features)`` and, optionally, ``intercept_`` of shape
``(n_features,)`` -- the offset the model reconstructs around (an SAE's decoder
bias). scikit-learn's PCA family calls that offset ``mean_``; it is used when
``intercept_`` is absent. A provider may be given as

* an array or tensor: the atoms themselves, with a zero intercept;
* an estimator: cloned and fitted on ``(X, y)`` in the coder's ``fit``;
* a fitted estimator wrapped in :class:`sklearn.frozen.FrozenEstimator`: used
  as it is, never refitted.

Dictionary learning minimises, over codes ``Z`` and unit-norm atoms ``D``
(the rows of the dictionary), the mean per-sample lasso objective

.. math:: F(Z, D) = \frac{1}{n} \sum_i \tfrac12 \lVert x_i - z_i D \rVert_2^2
          + \alpha \lVert z_i \rVert_1 .

* :func:`learn_dictionary` is the paper's DL-FISTA (Barin Pacela et al., 2026,
  arXiv 2603.28744): rounds of FISTA codes, warm-started from the previous
  round, alternate with the closed-form least-squares dictionary update (the
  method of optimal directions, Engan, Aase & Husøy, 1999). Started from
  atoms drawn from the data, every round explores: a continuation on
  ``alpha``, momentum on the atoms and atom resampling, with no promise that
  ``F`` decreases; refining a given ``init``, a safeguard makes every round
  decrease ``F``.
* :func:`online_dictionary_update` is the streaming counterpart (Mairal, Bach,
  Ponce & Sapiro, 2010, "Online learning for matrix factorization and sparse
  coding", JMLR 11): each mini-batch's codes update running sufficient
  statistics ``A = sum z^T z`` and ``B = sum z^T x``, from which the atoms are
  refreshed by block coordinate descent.
* :class:`OracleDictionary` is the ground-truth dictionary as an estimator,
  given, or estimated by least squares from known codes.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from types import SimpleNamespace
from typing import Any, NamedTuple, Self

import numpy as np
import scipy.sparse as sp
import torch
from sklearn import get_config
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    clone,
)
from sklearn.frozen import FrozenEstimator
from sklearn.utils import check_random_state, get_tags
from sklearn.utils._array_api import check_same_namespace
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import (
    _check_feature_names,
    _get_feature_names,
    _is_fitted,
    check_is_fitted,
)
from tqdm.auto import tqdm

from ._fitting import forget_fit_on_failure, restored_on_failure
from ._params import Satisfies, StrictParamsMixin, count_from, fit_context, is_count
from ._tensor import (
    DEVICE_CONSTRAINT,
    ArrayOrigin,
    DetachedCloneMixin,
    _all_finite,
    accumulation_dtype,
    as_tensor,
    ieee_float32_products,
    ignores_autocast,
    in_namespace_of,
    is_estimator,
    is_sparse,
    is_tensor,
    outside_inference_mode,
    portable_state,
    rows_per_block,
    scipy_if_pandas_sparse,
    sparse_as_tensor,
    sparse_tensor_as_scipy,
    to_fitted,
    to_numpy,
    to_output,
    validate_codes,
    validate_input,
)
from ._typing import ArrayLike, Bool, Device, Float, Int
from ._warnings import warn

__all__ = [
    "CODING_ESTIMATOR",
    "EXPOSES_COMPONENTS",
    "PROVIDER_CONSTRAINT",
    "DictionaryLearningResult",
    "DuplicateRecords",
    "GivenRecord",
    "OracleDictionary",
    "ResolvedDictionary",
    "batch_statistics",
    "block_coordinate_update",
    "check_atom_norms",
    "check_dictionary",
    "check_n_components",
    "estimate_dictionary",
    "fit_provider",
    "fits_on_data",
    "initial_dictionary",
    "is_provider",
    "is_same_given",
    "learn_dictionary",
    "lstsq_dictionary",
    "online_dictionary_update",
    "provider_input",
    "reconstruct",
    "record_given",
    "resolve_dictionary",
    "store_in_batch_type",
    "take_providers_tags",
    "torch_generator",
]

# The first rounds explore. Their codes use a penalty decreasing geometrically
# towards the round's target (``alpha``, or ``_FIRST_ALPHA_FACTOR * alpha``)
# over at most ``_MAX_HOMOTOPY_ROUNDS`` rounds, from ``_HOMOTOPY_FACTOR ** (1 -
# 1 / n)`` times it (a continuation, or homotopy): sparser codes
# early on make each atom's least-squares update an average over the few
# samples that clearly use it, which pulls atoms apart faster than codes spread
# over many half-right atoms.
# A short continuation is enough once the dictionary has momentum (below): on
# the compositional benchmark (n_latents=500, seed 0, 60 rounds, momentum 0.9,
# similarity / MCC-OOD) 15 rounds gave 0.951 / 0.902, 8 gave 0.959 / 0.931 and
# 4 gave 0.977 / 0.967.
_HOMOTOPY_FACTOR = 10.0
_MAX_HOMOTOPY_ROUNDS = 4
# Without ``init`` every round explores, none refines with the safeguarded
# (monotone) least-squares update: refinement lowers ``F`` but moves the atoms
# away from the truth (n_latents=500, seed 0, 60 rounds: a last quarter of
# refinement took F from 0.4382 to 0.4286 and the similarity from 0.986 to
# 0.977; exploring throughout ends at 0.988 / MCC-OOD 0.979 instead of 0.967).
# While exploring, the next round codes on the least-squares dictionary moved
# on along its change from the previous round's, ``Y = A + beta (A -
# A_previous)`` (``A`` the normalised least-squares atoms, ``beta =
# _EXTRAPOLATION``): momentum on the fixed-point iteration ``D -> LS(codes(D))``,
# whose slow directions -- the rarely used atoms -- it speeds up while the fast
# ones stay damped. n_latents=500, seed 0, 60 rounds (15 homotopy rounds):
# extrapolating from the previous *extrapolated* dictionary instead (a
# relaxation, the former rule) reached 0.919 / MCC-OOD 0.827 with beta=1 and
# oscillated with beta=1.5 (0.970 / 0.949 in twice the time); momentum 0.7 /
# 0.9 / 1.0 reached 0.933 / 0.951 / 0.947. With 4 homotopy rounds and 45
# rounds, beta 0.9 / 0.95 reached 0.988 / 0.988 (MCC-OOD 0.979 / 0.980) and
# with 3 homotopy rounds 0.984 / 0.991.
_EXTRAPOLATION = 0.95
# While exploring, every ``_RESAMPLE_EVERY`` rounds, of two atoms with
# |cosine| above ``_MAX_COHERENCE`` the less used one is replaced by the
# residual of a badly reconstructed sample (K-SVD's replacement rule, Aharon,
# Elad & Bruckstein, 2006, Sec. IV-E).
_MAX_COHERENCE = 0.7
_RESAMPLE_EVERY = 3
_SAME_ATOM = 0.9
_RETURNS_TO_KEEP = 2
_MAX_RECORDS_PER_ATOM = 4
# Dictionaries with more than ``_PLAIN_FISTA_RATIO`` atoms per feature resample,
# while exploring, above a lower bound: ``sqrt(2 ln K / d)`` (about the
# |cosine| at which a random unit atom in ``d`` dimensions finds its nearest of
# ``K`` others, so true atoms are rarely taken for duplicates), clipped to
# [_OVERCOMPLETE_COHERENCE, _MAX_COHERENCE]. Atoms that mix true atoms block
# the exploring chain reaction (below), and at 0.5 more of them are caught:
# n_latents=1000 (93 features), float32, true atoms within cosine 0.9 after
# 60 / 70 / 80 exploring rounds went from 37 / 81 / 184 to 99 / 181 / 327
# (seed 0), 80 / 194 / 351 to 188 / 401 / 458 (seed 1) and 34 / 81 / 179 to
# 263 / 423 / 487 (seed 2). A bound of 0.55 fell in between (158 and 379
# after 80 rounds, seeds 0 and 2); 0.45 was ahead per round but not per
# second (414 after 80 rounds, 48 s instead of 38 s: more atoms to re-code);
# 0.4 resampled true atoms and none was recovered; resampling every round
# (at 0.5) was slower (81 after 80 rounds). n_latents=500, 40 rounds: MCC-OOD
# 0.978 / 0.986 against 0.973 / 0.986 (seeds 0, 1). At n_latents=100 (2.1
# atoms per feature, 47 features, where pairs of true atoms reach 0.6) a
# bound of 0.5 cost MCC-OOD 0.985 -> 0.936 (seed 0).
_OVERCOMPLETE_COHERENCE = 0.5
# Codes with fewer than this fraction of non-zeros enter products as sparse
# tensors on CPU: below it, sparse products beat dense BLAS. One thread,
# 2,500 samples, float64, ``Z^T Z``, ``Z^T X`` and two ``Z D``: with 200 /
# 500 / 1,000 atoms the two break even at 16 / 20 / 15 % non-zeros, and at
# 8 % the sparse path takes 54 / 45 / 55 % of the dense one's time. Other
# devices keep ``_SPARSE_DENSITY_OTHER``, the bound measured on the CPU
# before; no GPU has measured its own.
_SPARSE_DENSITY = 0.12
_SPARSE_DENSITY_OTHER = 0.05
# Codes of a learning round are solved to a relative duality gap of the
# dictionary's last relative change, within [tol, _MAX_ROUND_TOL]: there is no
# point in solving codes for a dictionary that is about to move more than that.
# On the compositional benchmark (n_latents=100, 20 rounds) a cap of 5e-2
# instead of 1e-2 cut the fit time by 12% at the same MCC-OOD; with momentum
# (n_latents=500, seed 0, 60 rounds) 1e-1 instead of 5e-2 took 16.0 s instead
# of 20.2 s, similarity 0.990 instead of 0.988. Since exploring rounds code
# from zero codes, looser codes are also sparser ones, and the cap is 0.3
# (one thread, seeds 0 / 1 / 2): n_latents=500, 40 rounds, 7.8 / 7.8 / 7.7 s
# for MCC-OOD 0.987 / 0.986 / 0.988 against 9.4 / 9.9 / 9.7 s for 0.978 /
# 0.989 / 0.981 at 1e-1 (0.2: 8.6-9.2 s; 0.5: 7.8-8.1 s, 0.986-0.989);
# n_latents=1000, 120 rounds, 47-49 s for 0.540 / 0.491 / 0.570 against
# 55-58 s for 0.494 / 0.485 / 0.490. With few features such loose codes
# lose atoms, so data with fewer than ``_LOOSE_MIN_FEATURES`` features keeps
# the cap ``_MAX_ROUND_TOL_FEW_FEATURES``. Similarity with the true atoms,
# seeds 0 / 1 / 2, 0.3 against 0.1: 10 features (40 atoms, 2 active, 109
# rounds) 0.754 / 0.762 / 0.773 against 0.902 / 0.885 / 0.860; 20 features
# (80 atoms, 3 active, 60 rounds) 0.907 / 0.950 / 0.950 against 0.933 /
# 0.988 / 0.973; 40 features (200 atoms, 5 active, 40 rounds) 0.959 / 0.958
# / 0.957 against 0.963 / 0.962 / 0.950 in 6.6 s against 10.1 s; 60
# features (200 atoms, 10 active, 30 rounds) 0.993 / 0.995 / 0.992 against
# 0.997 / 0.997 / 0.991 in 13.5 s against 15.7 s.
_MAX_ROUND_TOL = 0.3
_LOOSE_MIN_FEATURES = 40
_MAX_ROUND_TOL_FEW_FEATURES = 0.1
# Dictionaries with at most ``_PLAIN_FISTA_RATIO`` atoms per feature are coded,
# while exploring, by ``_PLAIN_FISTA_ITER`` iterations of plain FISTA (step
# 1/L, warm-started, not to convergence: the paper's inexact codes) instead of
# the working-set solver run to a duality gap, whose per-call overhead
# dominates on small problems. n_latents=100 (2.1 atoms per feature), seed 0:
# 20 rounds to the gap took 3.04 s for similarity 0.976 / MCC-OOD 0.942, 25
# rounds of 8 plain iterations 1.12 s for 0.991 / 0.976. More overcomplete
# dictionaries need many more iterations (n_latents=500, 6.3 atoms per feature:
# 10 plain iterations left 20-38 coherent atoms to resample every third round
# and the objective diverged).
_PLAIN_FISTA_RATIO = 3.0
_PLAIN_FISTA_ITER = 8
# Dictionaries with more atoms per feature than that, given more than
# ``_FIRST_ROUNDS + _FINAL_ROUNDS`` rounds, spend the rounds between the first
# ``_FIRST_ROUNDS`` and the last ``_FINAL_ROUNDS`` on the paper's inexact
# alternation (its DL-FISTA):
# ``_INEXACT_FISTA_ITER`` plain FISTA iterations per round, warm-started, then
# the least-squares update, at ``alpha``, without resampling, its atoms moved
# on by momentum ``_INEXACT_EXTRAPOLATION`` as above; exploring rounds come
# before and after. On n_latents=1000 (10.8 atoms per feature, about 25
# training samples per atom, a dozen per OOD atom; seed 0, MCC-OOD) the
# exploring rounds recover atoms in a chain reaction within about 100 rounds
# (2 true atoms within cosine 0.9 after 50 rounds, 284 after 100: 0.279) but
# then stay in a basin short of the rarely used atoms (0.385 after 250 rounds,
# 0.397 after 400, 155 s); the inexact rounds from their atoms recover those
# (100 exploring + 100 inexact + 40 exploring rounds: 0.495, 76 s; with 300
# inexact rounds 0.517), where alone they need hundreds of rounds for the
# chain reaction (500 inexact + 40 exploring rounds: 0.475, 150 s; 210 + 40:
# 0.228). The paper ran 1,000 rounds of 100 iterations for its 0.48. Like
# the paper's loop, the inexact rounds start from zero codes and no momentum:
# continuing from the exploring rounds' codes ended at 0.376.
# Momentum 0.9 brought the inexact loop's chain reaction 2.5 times sooner;
# 0.97 was no faster; 3 or 5 iterations per round were slower per second, 20
# no faster. Their codes keep their scale: rescaling them by the
# least-squares atoms' norms, as exploring rounds do, made the objective grow
# round after round (n_latents=500: 0.66 after 10 rounds, 3.1 after 35).
# Fewer first rounds cut the exploring chain reaction short: 100 rounds as
# 30 + 30 + 40 gave 0.237 against 0.279 for 100 exploring rounds, 140 as
# 50 + 50 + 40 0.308 and 180 as 70 + 70 + 40 0.457. With the lower
# coherence bound (above) the chain reaction comes sooner, and 70 first
# rounds are enough (float32, seeds 0 / 1 / 2, two fits side by side): 140
# rounds as 70 + 40 + 30 reached 0.492 / 0.500 / 0.519, 160 as 70 + 50 + 40
# 0.540 / 0.492 / 0.522, 130 as 60 + 40 + 30 0.478 / 0.470 / 0.494 and 120
# as 50 + 40 + 30 0.425 / 0.456 / 0.450.
# When inexact rounds follow, the first rounds code at ``_FIRST_ALPHA_FACTOR``
# times ``alpha``: sparser codes are cheaper and lock atoms in sooner (seed 0,
# true atoms within cosine 0.9 after 50 / 70 rounds: 214 / 374 at 1.5 alpha
# against 18 / 168 at alpha, 0.27 s per round against 0.55 s; at 2 alpha 62 /
# 92). The inexact and last rounds stay at ``alpha``: at 1.5 alpha they ended
# at MCC-OOD 0.462 / 0.412 against 0.499. With the sooner chain reaction 60
# first rounds and 30 inexact ones suffice (one thread, two fits side by
# side, seeds 0-4): 120 rounds as 60 + 30 + 30 reached 0.503 / 0.480 / 0.503 /
# 0.539 / 0.490 in 36-40 s; 140 as 70 + 40 + 30 0.499 / 0.480 / 0.535 / 0.569
# / 0.497 in 39-50 s; 120 as 50 + 40 + 30 0.495 / 0.461 / 0.482 (seeds 0-2).
# Without inexact rounds, such dictionaries code the first half of their
# exploring rounds at ``_FIRST_ALPHA_FACTOR`` times ``alpha`` likewise. With
# exploring rounds started from zero codes (``learn_dictionary``), n_latents=500
# (6.3 atoms per feature), 40 rounds, one thread, seeds 0 / 1 / 2: 11.6 / 12.2
# / 11.4 s for MCC-OOD 0.978 / 0.989 / 0.981, against 22.2 / 23.2 / 21.3 s for
# 0.981 / 0.976 / 0.979 at ``alpha`` throughout; the first 30 of 40 rounds:
# 10.7-11.3 s, 0.973 / 0.989 / 0.982.
_FIRST_ALPHA_FACTOR = 1.5
_FIRST_ROUNDS = 60
_FINAL_ROUNDS = 30
# Fewer inexact rounds than this are not taken (every round explores, the
# first half at ``_FIRST_ALPHA_FACTOR * alpha``), so that up to 109 rounds --
# the paper reproduction's 100 among them -- take no inexact round. A few
# inexact rounds did help at n_latents=1000 (100 rounds as 60 + 10 + 30:
# MCC-OOD 0.472 / 0.443 at seeds 0 / 1, against 0.399 exploring); at
# n_latents=5000 they were what revealed the cost guarded against below (more
# atoms than samples: 38 s per inexact round against 6.5 s for an exploring
# one).
_MIN_INEXACT_ROUNDS = 20
_INEXACT_FISTA_ITER = 10
_INEXACT_EXTRAPOLATION = 0.9


class ResolvedDictionary(NamedTuple):
    """A provider turned into tensors.

    Attributes
    ----------
    components : torch.Tensor of shape (n_components, n_features)
    intercept : torch.Tensor of shape (n_features,)
        The provider's ``intercept_`` (or ``mean_``), zero when it has none.
    estimator : estimator or None
        The fitted provider (the clone, or the frozen estimator) when the
        dictionary came from an estimator.
    has_intercept : bool
        Whether the provider gave the intercept.
    """

    components: torch.Tensor
    intercept: torch.Tensor
    estimator: Any
    has_intercept: bool


def is_provider(obj: Any) -> bool:
    """Return True when ``obj`` provides atoms as opposed to being them.

    A provider is an estimator (fitted on the data, or frozen), or any other
    object exposing its atoms as ``components_`` (and optionally its offset
    as ``intercept_``), e.g. the weights of a model trained elsewhere.
    """
    return is_estimator(obj) or exposes_components(obj)


def exposes_components(obj: Any) -> bool:
    """Return True when ``obj`` holds atoms as ``components_``.

    Not a class: ``SparseAutoencoder`` itself (the parentheses forgotten) has
    ``components_`` as a property, and failed later in a float conversion of
    it.
    """
    return not isinstance(obj, type) and hasattr(obj, "components_")


def fits_on_data(obj: Any) -> bool:
    """Return True when resolving ``obj`` fits a clone of it on the data.

    A frozen estimator, and an object that is not an estimator, are used as
    they are; arrays need no fitting.
    """
    return is_estimator(obj) and not isinstance(obj, FrozenEstimator)


def fit_provider(estimator: Any, X: Any, y: Any = None, name: str | None = None) -> Any:
    """Fit a clone of the provider ``estimator`` on ``X`` and ``y``.

    When the fit fails and ``estimator`` was fitted already, the error gets a
    note naming the parameter ``name`` and :class:`~sklearn.frozen.FrozenEstimator`:
    a fitted oracle passed as it is failed with "requires y", which said
    nothing of the clone being fitted again.

    Under array-API dispatch, an estimator that does not declare array-API
    support (``DictionaryLearning``, ``NMF``, a ``Pipeline``) is fitted on
    NumPy copies of array-API arrays and tensors; handed them, it fails deep
    inside scikit-learn. Without dispatch, so is every estimator but skdict's
    own: scikit-learn reads its input through NumPy, which refuses GPU
    tensors and tensors that require grad. Its fitted atoms are converted as
    any array is, and :func:`provider_input` gives its ``transform`` NumPy
    copies too.
    """
    if _needs_host_arrays(estimator):
        X, y = _host_array(X), _host_array(y)
    try:
        return clone(estimator).fit(X, y)
    except Exception as error:
        if name is not None and _is_fitted(estimator):
            error.add_note(
                f"{name}, a fitted {type(estimator).__name__}, is cloned and "
                "fitted again on X; to use its fitted atoms as they are, pass "
                "it wrapped in sklearn.frozen.FrozenEstimator."
            )
        raise


def check_frozen_fitted(frozen: FrozenEstimator, name: str) -> None:
    """Refuse a frozen estimator that is not fitted, naming the parameter."""
    check_is_fitted(
        frozen.estimator,
        msg=(
            f"{name}, a FrozenEstimator of {type(frozen.estimator).__name__}, is "
            "not fitted: fit the estimator before freezing it, or pass it "
            "unfrozen to be fitted on X."
        ),
    )


def provider_input(estimator: Any, X: Any) -> Any:
    """Return ``X`` as the fitted provider ``estimator``'s ``transform`` takes it.

    NumPy copies for an estimator without array-API support under dispatch
    (see :func:`fit_provider`); otherwise ``X`` in the namespace and device
    the estimator was fitted in (:func:`~skdict._tensor.in_namespace_of`).
    """
    if _needs_host_arrays(estimator):
        return _host_array(X)
    return in_namespace_of(X, estimator)


def _needs_host_arrays(estimator: Any) -> bool:
    if not get_config()["array_api_dispatch"]:
        return not _is_skdict_estimator(estimator)
    tags = _tags_of(estimator)
    return not (tags is not None and tags.array_api_support)


def _is_skdict_estimator(estimator: Any) -> bool:
    # skdict's estimators (and subclasses of them) take tensors on any
    # device without dispatch.
    while isinstance(estimator, FrozenEstimator):
        estimator = estimator.estimator
    return any(
        cls.__module__.partition(".")[0] == "skdict" for cls in type(estimator).__mro__
    )


def check_provider_features(estimator: Any, X_user: Any, name: str) -> None:
    """Check ``X``'s column names against those a pre-fitted provider saw.

    A provider fitted elsewhere (frozen, or not an estimator) holds its atoms
    in the column order of its own training data; X in another order would
    be coded on atoms read in the wrong order, and the coder would then
    record X's order as its own. The same error and warnings as scikit-learn
    gives when such a provider's own ``transform`` is called with X.
    """
    while isinstance(estimator, FrozenEstimator):
        estimator = estimator.estimator
    if not is_estimator(estimator) and not hasattr(estimator, "feature_names_in_"):
        # Weights from elsewhere (SimpleNamespace(components_=W)) say nothing
        # of their columns: nothing to check, and no warning that they were
        # "fitted without feature names".
        return
    try:
        _check_feature_names(estimator, X_user, reset=False)
    except ValueError as error:
        raise ValueError(
            f"X's columns differ from those {name} ({type(estimator).__name__}) "
            f"was fitted on. {error}"
        ) from error


def check_atom_columns(atoms: Any, X_user: Any, name: str) -> None:
    """Check the column names of atoms given as a data frame against ``X``'s.

    Atoms are read by position: a frame of atoms whose columns are X's in
    another order was read in the wrong order without a word (MCC 0.97 ->
    0.57 with X's columns reversed), where a fitted provider's recorded
    column names are checked (:func:`check_provider_features`). Names that
    are not X's at all (a pipeline's ``num__a`` for ``a``) say nothing of the
    order, and only warn; frames of another width are left to the atoms'
    dimension check.
    """
    try:
        atom_names = _get_feature_names(atoms)
        x_names = _get_feature_names(X_user)
    except TypeError:  # names mixing strings and numbers: no names to go by
        return
    if atom_names is None or (x_names is not None and len(x_names) != len(atom_names)):
        return
    if x_names is None:
        warn(
            f"X has no feature names, but the atoms of {name} have column names: "
            "X's columns are read in the atoms' order.",
            UserWarning,
        )
    elif set(x_names) == set(atom_names) and (x_names != atom_names).any():
        raise ValueError(
            f"The columns of {name}'s atoms are X's in another order (atoms: "
            f"{atom_names[:5].tolist()}..., X: {x_names[:5].tolist()}...); atoms are "
            f"read by position. Reorder them as X's, e.g. {name}[list(X.columns)]."
        )
    elif (x_names != atom_names).any():
        warn(
            f"The columns of {name}'s atoms are not named as X's (atoms: "
            f"{atom_names[:5].tolist()}..., X: {x_names[:5].tolist()}...); X's "
            "columns are read in the atoms' order.",
            UserWarning,
        )


def take_providers_tags(tags: Any, *params: Any) -> None:
    """Make ``tags`` ask of ``X`` and ``y`` what the providers among ``params`` do.

    A skdict estimator fits its unfitted providers on ``(X, y)``, so it
    requires ``y`` whenever one of them does (an oracle without atoms), takes
    ``y`` with several columns when one of them does (an oracle's codes, one
    column per latent), and takes only non-negative ``X`` when one of them
    does (``FISTACoder(NMF(3))``, which said it took any ``X``).
    """
    fitted_here = [
        provider_tags
        for param in params
        if fits_on_data(param) and (provider_tags := _tags_of(param)) is not None
    ]
    tags.target_tags.required = any(t.target_tags.required for t in fitted_here)
    tags.target_tags.multi_output = any(t.target_tags.multi_output for t in fitted_here)
    tags.input_tags.positive_only = tags.input_tags.positive_only or any(
        t.input_tags.positive_only for t in fitted_here
    )


def _tags_of(estimator: Any) -> Any:
    try:
        return get_tags(estimator)
    except AttributeError:  # an estimator predating scikit-learn's tags
        return None


def _host_array(A: Any) -> Any:
    # Strided tensors and array-API arrays only: lists, data frames and sparse
    # matrices are what any scikit-learn estimator takes.
    if (is_tensor(A) and A.layout == torch.strided) or (
        hasattr(A, "__array_namespace__") and not isinstance(A, np.ndarray)
    ):
        return to_numpy(A)
    return A


class GivenRecord(NamedTuple):
    """A given dictionary as a fit saw it, for later calls to compare against."""

    #: The parameter's value.
    dictionary: Any
    #: A snapshot of its ``get_params(deep=True)`` when it is an estimator.
    params: dict | None


def record_given(dictionary: Any) -> GivenRecord:
    """Record the ``dictionary`` (or ``decoder``) parameter a fit started from."""
    params = dictionary.get_params(deep=True) if is_estimator(dictionary) else None
    return GivenRecord(dictionary, params)


def _same_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    # Arrays compare by value, NaN equal to NaN: joblib stores every NumPy
    # array on its own, so a model saved with joblib and loaded again holds
    # two equal arrays where it held one array twice (and pickle two NaN
    # floats where it held one).
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        )
    if is_tensor(a) or is_tensor(b):
        return (
            is_tensor(a)
            and is_tensor(b)
            and (a.shape, a.dtype, a.device, a.layout)
            == (b.shape, b.dtype, b.device, b.layout)
            and a.layout == torch.strided
            and _equal_tensors(a, b)
        )
    if is_estimator(a) or is_estimator(b):
        return False  # another estimator object, whatever its parameters
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):  # e.g. other array types
        return False


def _equal_tensors(a: torch.Tensor, b: torch.Tensor) -> bool:
    if torch.equal(a, b):
        return True
    if not a.is_floating_point():
        return False
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def is_same_given(dictionary: Any, record: GivenRecord) -> bool:
    """Return True when ``dictionary`` is still the one ``record`` holds.

    An estimator must be the same object (a refitted one of equal parameters
    has other atoms) with the same parameters, since ``set_params`` with a
    nested key (``dictionary__alpha=...``) changes it in place. An array
    compares by value.
    """
    if not _same_value(dictionary, record.dictionary):
        return False
    if record.params is None:
        return True
    params = dictionary.get_params(deep=True)
    return params.keys() == record.params.keys() and all(
        _same_value(params[name], value) for name, value in record.params.items()
    )


#: Parameter constraint: an object exposing ``components_``.
EXPOSES_COMPONENTS = Satisfies(exposes_components, "an object exposing 'components_'")
#: An estimator, as providers and ``init`` take it: ``fit`` to be fitted, and
#: ``get_params`` for ``clone`` (an object with ``fit`` alone was taken for an
#: array, and failed with "float() argument must be ... not 'MyDict'").
ESTIMATOR = Satisfies(
    is_estimator, "an estimator (with 'fit', and 'get_params' for clone)"
)
#: An estimator whose ``transform`` gives codes (``init`` with given atoms).
CODING_ESTIMATOR = Satisfies(
    lambda val: is_estimator(val) and hasattr(val, "transform"),
    "an estimator with 'transform' (and 'fit' and 'get_params')",
)
#: Parameter constraint of a dictionary provider (``dictionary``, ``decoder``).
PROVIDER_CONSTRAINT = ["array-like", ESTIMATOR, EXPOSES_COMPONENTS, None]


def sparse_atoms_slip(name: str, owner: str) -> tuple[str, Any, str]:
    """Return a ``_slips`` entry that refuses SciPy sparse atoms by name.

    The generic message of the constraint (see
    :class:`~skdict._params.StrictParamsMixin`) said they were not array-like.
    """
    return (
        name,
        sp.issparse,
        f"The {name!r} parameter of {owner} takes dense atoms; got a SciPy "
        "sparse matrix of shape {shape}. Pass " + f"{name}.toarray().",
    )


def check_dictionary(
    components: torch.Tensor, *, n_features: int | None = None, name: str = "dictionary"
) -> None:
    """Raise a ``ValueError`` naming ``name`` unless the atoms are usable.

    Parameters
    ----------
    components : torch.Tensor of shape (n_components, n_features)
        Atoms as rows.
    n_features : int, default=None
        Expected number of features (that of ``X``), when known.
    name : str, default="dictionary"
        The parameter the atoms came from, for error messages.
    """
    if components.shape[0] == 0:
        raise ValueError(
            f"{name} has zero atoms (shape {tuple(components.shape)}); a dictionary "
            "needs at least one row."
        )
    if n_features is not None and components.shape[1] != n_features:
        raise ValueError(
            f"{name} has atoms of dimension {components.shape[1]}, but X has "
            f"{n_features} features; the dictionary must have shape "
            f"(n_components, {n_features})."
            + (
                " (Without a dictionary, init is the dictionary that learning "
                "starts from; codes warm-start coding on a given dictionary.)"
                if name == "init"
                else ""
            )
        )
    # A row is zero when its largest and its smallest entries are: two
    # reductions, where abs().amax() first copied every atom (7 against 50 ms
    # on 8,192 atoms of 1,024 float32 features, one thread), in every fit and
    # in each of OracleDictionary's transforms.
    zero = torch.nonzero(
        (components.amax(dim=1) == 0) & (components.amin(dim=1) == 0)
    ).flatten()
    if zero.numel():
        raise ValueError(
            f"{name} has zero-norm atoms at rows {_listed(zero)}; every atom must be "
            "non-zero."
        )
    check_atom_norms(components, name=name)


def _listed(indices: torch.Tensor, limit: int = 10) -> str:
    """Format ``indices`` for a message: the first ``limit``, and how many more."""
    more = indices.numel() - limit
    return f"{indices[:limit].tolist()}" + (f" (and {more} more)" if more > 0 else "")


def check_n_components(n_components: int | None, n_atoms: int, source: str) -> int:
    """Return ``n_atoms``, refusing an ``n_components`` that disagrees with it.

    A conflicting width is a mistake to report, not a setting to ignore;
    ``source`` names where the atoms came from ("the dictionary", "init").
    """
    if n_components not in (None, n_atoms):
        raise ValueError(
            f"n_components={n_components} does not match the {n_atoms} atoms of "
            f"{source}; leave n_components=None to take it from {source}."
        )
    return n_atoms


def check_atom_norms(
    components: torch.Tensor,
    *,
    name: str = "dictionary",
    remedy: str = "rescale the dictionary, e.g. to unit-norm rows",
) -> None:
    """Raise a ``ValueError`` unless every atom's norm is positive and finite.

    Non-zero atoms whose norm or squared norm under- or overflows in the
    compute precision (norms below about 1e-19 or above 1e19 in float32,
    1e-154 and 1e154 in float64, or float64 atoms cast to float32 beyond its
    range) would divide by zero or infinity in the normalisation, the Gram
    matrix and the step size.

    Parameters
    ----------
    components : torch.Tensor of shape (n_components, n_features)
        Atoms as rows, in the precision they are computed in.
    name : str, default="dictionary"
        The parameter the atoms came from, for error messages.
    remedy : str
        What the message advises.
    """
    norms = torch.linalg.vector_norm(components, dim=1)
    # Squared norms enter the step size 1 / ||D||_2^2: they must be normal
    # numbers too (float32 atoms of norm 1e-20 gave NaN codes).
    squares = norms**2
    usable = (squares >= torch.finfo(norms.dtype).tiny) & torch.isfinite(squares)
    unusable = torch.nonzero(~usable).flatten()
    if unusable.numel():
        dtype = str(components.dtype).removeprefix("torch.")
        # The norm itself, scaled by the largest entry: torch's norm of an
        # atom of entries 1e-200 underflows to 0 although float64 holds it.
        row = components[unusable[0]]
        norm = float(row.abs().amax())
        if math.isfinite(norm):
            norm = _max_row_norm(row.unsqueeze(0))
        what = (
            f"is {norm:g} in {dtype}"
            if norm in (0.0, math.inf)
            else f"({norm:.3g}) squares outside the normal range of {dtype}"
        )
        raise ValueError(
            f"{name} has atoms at rows {_listed(unusable)} whose norm {what}; {remedy}."
        )


def resolve_dictionary(
    dictionary: Any,
    X_user: Any = None,
    y: Any = None,
    *,
    device: torch.device,
    dtype: torch.dtype,
    n_features: int | None = None,
    name: str = "dictionary",
) -> ResolvedDictionary:
    """Turn an array, estimator or frozen estimator into atoms and an intercept.

    Parameters
    ----------
    dictionary : array-like, torch.Tensor or estimator
        The provider.
    X_user, y : array-like, default=None
        The data an unfitted estimator is fitted on, in the caller's own type.
    device, dtype :
        Where and in which precision the returned tensors live.
    n_features : int, default=None
        Expected atom dimension.
    name : str, default="dictionary"
        The parameter name, for error messages.

    Returns
    -------
    ResolvedDictionary
    """
    estimator = None
    if is_provider(dictionary):
        if not fits_on_data(dictionary):
            estimator = dictionary
            if isinstance(dictionary, FrozenEstimator):
                check_frozen_fitted(dictionary, name)
            if X_user is not None:
                check_provider_features(estimator, X_user, name)
        else:
            if X_user is None:
                raise ValueError(
                    f"{name} is an unfitted estimator; it is fitted on X in fit()."
                )
            estimator = fit_provider(dictionary, X_user, y, name)
        if not hasattr(estimator, "components_"):
            raise TypeError(
                f"{name} must expose 'components_' (n_components, n_features) after "
                f"fitting; {type(dictionary).__name__} does not."
            )
        components = as_tensor(
            estimator.components_, device=device, name=f"{name}.components_"
        )
        offset = getattr(estimator, "intercept_", getattr(estimator, "mean_", None))
    else:
        if X_user is not None:
            check_atom_columns(dictionary, X_user, name)
        components = as_tensor(dictionary, device=device, name=name)
        offset = None
    # Checked in their own precision first, so that atoms a cast to ``dtype``
    # under- or overflows are named as such, not as zero or infinite atoms.
    check_dictionary(components, n_features=n_features, name=name)
    # Fitted estimators keep what they were fitted with: without a copy, the
    # atoms could share memory with the caller's array (a decoder that goes
    # on training, an estimator refitted later) and change under them.
    components = components.to(dtype=dtype, copy=True)
    check_atom_norms(components, name=name)
    if offset is None:
        intercept = torch.zeros(components.shape[1], device=device, dtype=dtype)
    else:
        intercept = as_tensor(
            offset, device=device, dtype=dtype, name=f"{name}.intercept_", ndim=1
        ).clone()
        if intercept.shape[0] != components.shape[1]:
            raise ValueError(
                f"{name}.intercept_ has {intercept.shape[0]} entries, but the atoms "
                f"have dimension {components.shape[1]}."
            )
    return ResolvedDictionary(components, intercept, estimator, offset is not None)


def store_in_batch_type(estimator: Any, X_t: torch.Tensor, origin: ArrayOrigin) -> None:
    """Hand a given dictionary's fitted atoms out in a stream's latest array type.

    A :meth:`partial_fit` stream over a given dictionary has nothing to
    update, but its ``components_`` and ``intercept_`` follow the array type
    of the latest batch (``origin``, of ``X_t``), as learned atoms do, in
    their own precision.
    """
    components = as_tensor(estimator.components_, device=X_t.device)
    intercept = as_tensor(estimator.intercept_, device=X_t.device, ndim=1)
    origin = origin._replace(dtype=components.dtype)
    estimator.components_ = to_fitted(components, origin)
    estimator.intercept_ = to_fitted(intercept, origin)


def reconstruct(estimator: Any, codes: Any) -> Any:
    """Return ``codes @ components_ + intercept_`` of a fitted provider.

    :class:`OracleDictionary`'s ``inverse_transform``: the codes' array type,
    device and dtype decide the output's, and computations run where the
    estimator's ``device`` parameter says.

    Parameters
    ----------
    estimator : fitted estimator
        Exposes ``components_``, ``intercept_`` and a ``device`` parameter.
    codes : array-like or torch.Tensor of shape (n_samples, n_components)
        Codes.

    Returns
    -------
    X_reconstructed : ndarray or torch.Tensor of shape (n_samples, n_features)

    Examples
    --------
    >>> import numpy as np
    >>> from skdict import OracleDictionary
    >>> from skdict._dictionary import reconstruct
    >>> oracle = OracleDictionary(np.eye(2)).fit(np.ones((3, 2)))
    >>> reconstruct(oracle, np.array([[1.0, 2.0]]))
    array([[1., 2.]])
    """
    Z, origin = validate_codes(estimator, codes)
    D = as_tensor(estimator.components_, device=Z.device, dtype=Z.dtype)
    b = as_tensor(estimator.intercept_, device=Z.device, dtype=Z.dtype, ndim=1)
    return to_output(Z @ D + b, origin)


def torch_generator(random_state: Any) -> torch.Generator:
    """Return a CPU torch generator seeded from a scikit-learn ``random_state``.

    Examples
    --------
    >>> import torch
    >>> from skdict._dictionary import torch_generator
    >>> a = torch.rand(2, generator=torch_generator(0))
    >>> b = torch.rand(2, generator=torch_generator(0))
    >>> bool((a == b).all())
    True
    """
    seed = check_random_state(random_state).randint(2**31 - 1)
    return torch.Generator().manual_seed(int(seed))


class DictionaryLearningResult(NamedTuple):
    """Output of :func:`learn_dictionary`.

    Attributes
    ----------
    components : torch.Tensor of shape (n_components, n_features)
        The learned atoms, with unit norm.
    codes : torch.Tensor of shape (n_samples, n_components)
        Codes of ``X`` from the last round, rescaled to ``components``: a warm
        start for coding ``X`` on the returned atoms.
    history : list of dict
        One record per round, see :func:`learn_dictionary`.
    """

    components: torch.Tensor
    codes: torch.Tensor
    history: list[dict[str, float]]


def _normalize_atoms(components: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm rows and the norms they had; zero rows stay zero."""
    norms = components.norm(dim=1)
    tiny = torch.finfo(components.dtype).tiny
    return components / norms.clamp_min(tiny)[:, None], norms


def _operand(codes: torch.Tensor) -> torch.Tensor:
    """``codes`` as a sparse tensor when mostly zeros, where products cost O(nnz)."""
    bound = _SPARSE_DENSITY if codes.device.type == "cpu" else _SPARSE_DENSITY_OTHER
    # count_nonzero: a third of the time of ``(codes != 0).sum()`` (no mask).
    if int(torch.count_nonzero(codes)) < bound * codes.numel():
        return codes.to_sparse()
    return codes


def _rescaled(
    codes: torch.Tensor, operand: torch.Tensor, norms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``codes * norms`` and its operand, scaled without a second conversion.

    A round's codes enter three products (the objective, ``Z^T Z`` and
    ``Z^T X``, the rescaled objective); converting them to a sparse tensor once
    instead of three times saves about 20 ms a round at n_components=1000.
    """
    scaled = codes * norms
    if not operand.is_sparse:
        return scaled, scaled
    indices = operand.indices()
    values = operand.values() * norms[indices[1]]
    return scaled, torch.sparse_coo_tensor(
        indices,
        values,
        operand.shape,
        is_coalesced=True,
        check_invariants=False,
        device=values.device,
    )


def _code_statistics(
    codes: torch.Tensor, X: torch.Tensor, operand: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Z^T Z`` and ``Z^T X``; ``operand`` is ``_operand(codes)`` when known."""
    transposed = (_operand(codes) if operand is None else operand).t()
    return transposed @ codes, transposed @ X


def _sample_objective(
    X: torch.Tensor,
    codes: torch.Tensor,
    components: torch.Tensor,
    alpha: float,
    operand: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``0.5 ||x - z D||^2 + alpha ||z||_1``, and the residuals.

    ``operand`` is ``_operand(codes)`` when already known.
    """
    if operand is None:
        operand = _operand(codes)
    residual = X - operand @ components
    if operand.is_sparse:
        # O(nnz) instead of a pass over every entry of the codes.
        l1 = torch.zeros(codes.shape[0], dtype=codes.dtype, device=codes.device)
        l1.index_add_(0, operand.indices()[0], operand.values().abs())
    else:
        l1 = codes.abs().sum(dim=1)
    return 0.5 * (residual * residual).sum(dim=1) + alpha * l1, residual


def _well_posed_cholesky(matrix: torch.Tensor) -> torch.Tensor | None:
    """Return the Cholesky factor of ``matrix``, or None if it is (nearly) singular.

    Rounding can let Cholesky through on a singular matrix, whose solves are
    then noise, and the factor's pivots do not reveal it reliably (without
    pivoting, a singular matrix's smallest pivot can be far from zero). Two
    steps of inverse iteration with the factor do: from any start with a
    component along a near-null vector, they amplify it by ``lambda_max /
    lambda_min`` each, so the Rayleigh quotient of the result, an upper bound
    on ``lambda_min``, falls to rounding level exactly when the matrix is
    singular to working precision (``size * eps``).

    The test is made on the matrix scaled to a unit diagonal, ``S G S`` with
    ``S = diag(G)^(-1/2)``: the accuracy of Cholesky solves depends on that
    matrix's condition number, not on ``G``'s (van der Sluis, 1969, "Condition
    numbers and equilibration of matrices"), and codes in other units (one
    concept labelled in 1e8 ths) stretch ``G``'s diagonal without making its
    solves any less exact. Judged on ``G`` itself, such a matrix was taken for
    singular and its smallest direction dropped by the pseudo-inverse. The
    cost is two triangular solve pairs, ``O(size^2)``.
    """
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) != 0:
        return None
    n = matrix.shape[0]
    tiny = torch.finfo(matrix.dtype).tiny
    # diag(G)^(1/2) = S^-1, so that (S G S)^-1 v = S^-1 G^-1 S^-1 v.
    root = matrix.diagonal().clamp_min(tiny).sqrt().unsqueeze(1)
    # A fixed start with no symmetry: null vectors of codes such as
    # (1, -1, 0, ...) for two latents that always fire together are
    # orthogonal to the constant vector, never to this one.
    v = torch.cos(
        torch.arange(1, n + 1, dtype=matrix.dtype, device=matrix.device) * 2.3
    ).unsqueeze(1)
    for _ in range(2):
        v = torch.cholesky_solve(v * root, factor) * root
        # Scaled by its largest entry before its norm: a solve with the Gram
        # of codes of scale 1e-80 grows v past the square root of the
        # largest float, where its norm overflowed to inf and v became zero.
        v = v / v.abs().amax().clamp_min(tiny)
        v = v / torch.linalg.vector_norm(v)
    scaled = v / root  # S v, so that v^T (S G S) v = (S v)^T G (S v)
    rayleigh = float(scaled.T @ matrix @ scaled)
    return factor if rayleigh > n * torch.finfo(matrix.dtype).eps else None


def lstsq_dictionary(
    gram: torch.Tensor,
    cross: torch.Tensor,
    fallback: torch.Tensor | None = None,
    *,
    singular_warning: str | None = None,
) -> torch.Tensor:
    """Least-squares atoms ``argmin_D ||X - Z D||_F^2`` from sufficient statistics.

    Solves the normal equations ``(Z^T Z) D = Z^T X`` -- the closed-form
    dictionary update of the method of optimal directions (Engan et al., 1999)
    and of the paper's DL-FISTA -- by Cholesky, or by the pseudo-inverse when
    ``Z^T Z`` is singular on the atoms in use. Atoms no code uses (a zero
    diagonal entry) are not determined by the data.

    "Singular" is judged in the statistics' own precision, at ``size * eps``
    of the largest diagonal entry (NumPy's ``matrix_rank`` tolerance): in
    float32, a ``Z^T Z`` of condition number above about 8e4 at 100 atoms or
    8e3 at 1,000 (``cond(Z)`` above 290 or 90) takes the pseudo-inverse,
    whose cutoff drops its smallest directions, where a float64 solve would
    still be accurate. :class:`OracleDictionary` therefore forms and solves
    the normal equations in float64; dictionary learning solves in float32
    for speed, where a round's atoms need no such accuracy (its codes are
    solved to relative gaps of 1e-2 to 0.3) and a refinement keeps only
    updates that lower the objective.

    Parameters
    ----------
    gram : torch.Tensor of shape (n_components, n_components)
        ``Z^T Z``.
    cross : torch.Tensor of shape (n_components, n_features)
        ``Z^T X``.
    fallback : torch.Tensor of shape (n_components, n_features), default=None
        Rows returned for the unused atoms; zeros when None.
    singular_warning : str, default=None
        When given, the message of a ``UserWarning`` issued if ``Z^T Z`` is
        singular on the atoms in use (the pseudo-inverse's minimum-norm atoms
        are then returned).

    Returns
    -------
    torch.Tensor of shape (n_components, n_features)
        The atoms, not normalised.

    Examples
    --------
    >>> import torch
    >>> from skdict._dictionary import lstsq_dictionary
    >>> Z = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    >>> D = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    >>> X = Z @ D
    >>> torch.allclose(lstsq_dictionary(Z.T @ Z, Z.T @ X), D)
    True
    """
    used = torch.nonzero(gram.diagonal() > 0).flatten()
    out = torch.zeros_like(cross) if fallback is None else fallback.clone()
    if used.numel():
        G, C = gram[used][:, used], cross[used]
        factor = _well_posed_cholesky(G)
        if factor is not None:
            out[used] = torch.cholesky_solve(C, factor)
        else:
            if singular_warning is not None:
                warn(singular_warning, UserWarning)
            out[used] = torch.linalg.pinv(G, hermitian=True) @ C
    return out


def _sample_side_atoms(
    codes: torch.Tensor,
    operand: torch.Tensor,
    X: torch.Tensor,
    gram: torch.Tensor,
    fallback: torch.Tensor,
) -> torch.Tensor | None:
    """Return the atoms of :func:`lstsq_dictionary` via the samples' Gram matrix.

    With more atoms in use than samples using them, ``Z^T Z`` is singular and
    :func:`lstsq_dictionary` returns the minimum-norm atoms ``Z^+ X`` through
    the pseudo-inverse of that (atoms x atoms) matrix, an eigendecomposition.
    When the codes of those samples are linearly independent, the same atoms
    are ``Z^T (Z Z^T)^{-1} X``, one Cholesky factorisation of the (samples x
    samples) ``Z Z^T`` (samples with zero codes left out: they add nothing).
    n_latents=5000 on 2,500 samples (125 features, float32, one thread): 10
    rounds in 7.1 s instead of 104.6 s. Returns None unless more atoms are in
    use than samples have non-zero codes, or when ``Z Z^T`` is not well
    posed; ``operand`` is
    ``_operand(codes)`` and ``gram`` is ``Z^T Z``.
    """
    used = gram.diagonal() > 0
    if operand.is_sparse:
        # O(nnz): this test runs every round, also where it fails.
        coding = torch.zeros(codes.shape[0], dtype=torch.bool, device=codes.device)
        coding[operand.indices()[0]] = True
    else:
        coding = torch.count_nonzero(codes, dim=1) > 0
    if int(used.sum()) <= int(coding.sum()):
        return None
    # Z Z^T from the sparse operand costs O(nnz * n_samples).
    factor = _well_posed_cholesky((operand @ codes.T)[coding][:, coding])
    if factor is None:
        return None
    weights = torch.zeros_like(X)
    weights[coding] = torch.cholesky_solve(X[coding], factor)
    out = fallback.clone()
    out[used] = (operand.t() @ weights)[used]
    return out


def block_coordinate_update(
    components: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor
) -> torch.Tensor:
    """One sweep of block coordinate descent over unit-norm atoms.

    Mairal et al. (2010), Algorithm 2, with atoms kept on the unit sphere: with
    the other atoms fixed, ``0.5 ||X - Z D||^2`` restricted to ``||d_j|| = 1``
    is minimised exactly by ``d_j = v / ||v||`` with ``v = B_j - A_j D + A_jj
    d_j`` (``A = Z^T Z``, ``B = Z^T X``), so the sweep never increases the
    reconstruction error of the codes the statistics came from. Unused atoms
    (``A_jj = 0``) are left as they are.

    Parameters
    ----------
    components : torch.Tensor of shape (n_components, n_features)
        Current unit-norm atoms.
    gram : torch.Tensor of shape (n_components, n_components)
        ``A = Z^T Z`` (possibly a weighted running sum).
    cross : torch.Tensor of shape (n_components, n_features)
        ``B = Z^T X`` (weighted alike).

    Returns
    -------
    torch.Tensor of shape (n_components, n_features)
        The updated atoms.

    Examples
    --------
    >>> import torch
    >>> from skdict._dictionary import block_coordinate_update
    >>> D = torch.eye(2, dtype=torch.float64)
    >>> Z = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    >>> X = torch.tensor([[0.0, 3.0], [4.0, 0.0]], dtype=torch.float64)
    >>> block_coordinate_update(D, Z.T @ Z, Z.T @ X)
    tensor([[0., 1.],
            [1., 0.]], dtype=torch.float64)
    """
    D = components.clone()
    tiny = torch.finfo(D.dtype).tiny
    # The statistics scale with the squared data, and so does v: squaring v
    # for its norm overflowed float32 for data of scale 1e10 (every atom came
    # back zero) and lost precision below 1e-10. Dividing them by their
    # largest diagonal entry keeps v near unit scale and leaves its direction,
    # the new atom, as it is.
    scale = gram.diagonal().max().clamp_min(tiny)
    gram, cross = gram / scale, cross / scale
    diagonal = gram.diagonal()
    for j in torch.nonzero(diagonal > 0).flatten().tolist():
        v = cross[j] - gram[j] @ D + diagonal[j] * D[j]
        norm = v.norm()
        # A zero v leaves every unit atom equally good: keep the current one.
        D[j] = torch.where(norm > 0, v / norm.clamp_min(tiny), D[j])
    return D


def initial_dictionary(
    X: torch.Tensor,
    n_components: int,
    generator: torch.Generator,
    *,
    return_n_rows: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, int]:
    """Unit-norm atoms drawn from the data.

    Distinct random samples of ``X``, normalised; Gaussian atoms replace
    zero samples and fill in when there are fewer samples than atoms. Sample
    atoms start inside the cone the data spans, which Gaussian atoms do not
    (half of their correlations with non-negative data are negative).

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Training data.
    n_components : int
        Number of atoms.
    generator : torch.Generator
        A CPU generator; the atoms are moved to ``X``'s device.
    return_n_rows : bool, default=False
        Also return how many atoms are rows of ``X`` (distinct and non-zero);
        the others are Gaussian.

    Returns
    -------
    atoms : torch.Tensor of shape (n_components, n_features)
    n_rows : int
        Returned when ``return_n_rows`` is True.
    """
    n_samples, n_features = X.shape
    take = min(n_samples, n_components)
    # Drawn on the CPU, whatever torch's default device: the generator is a
    # CPU one, and every device starts from the same atoms.
    order = torch.randperm(n_samples, generator=generator, device="cpu").to(X.device)
    rows = _distinct_rows(X, order, take)
    gaussian = torch.randn(
        n_components, n_features, generator=generator, dtype=X.dtype, device="cpu"
    ).to(X.device)
    from . import _fista  # imports this module: reached at call time

    # Drawn at a power-of-two scale near 1, which normalising undoes exactly:
    # the norms of rows of 1e160 overflowed, and the atoms came back zero.
    taken = X[rows]
    take = len(rows)
    scale = _fista._certifiable_scale(taken)
    # A copy, so that the Gaussian rows survive to replace zero samples.
    atoms = gaussian.clone()
    atoms[:take] = taken if scale == 1.0 else taken * scale
    zero = atoms.norm(dim=1) == 0
    atoms[zero] = gaussian[zero]
    atoms = _normalize_atoms(atoms)[0]
    if return_n_rows:
        return atoms, take - int(zero[:take].sum())
    return atoms


# Rounds of replacing repeated rows among the drawn ones by further rows
# (see _distinct_rows); each round halves them or better unless most rows
# repeat one another, where the rest are left to Gaussian atoms.
_DISTINCT_ROUNDS = 8


def _distinct_rows(X: torch.Tensor, order: torch.Tensor, take: int) -> torch.Tensor:
    """Return indices of the first ``take`` rows of ``X`` in ``order`` that differ.

    Real activations repeat rows (the first token of every sequence, padding):
    500 copies of one row among 2,000 started a quarter of 300 atoms as one
    direction, and the learned dictionary's similarity to the true one fell
    from 0.999 to 0.85-0.90 (``benchmarks/RESULTS.md``, "Repeated rows").
    A repeat is replaced by the next row in ``order``; data without repeats
    (in the compute precision; zero rows repeat each other) keeps the rows
    ``order[:take]``, bit for bit. Fewer than ``take`` rows come back when
    too few distinct ones were found within ``_DISTINCT_ROUNDS`` rounds of
    replacements (10,000 rows, 80 % of them one padding row: 857 of 1,000
    rows where 2,001 differ); the callers fill in random atoms.
    """
    rows, spare = order[:take], order[take:]
    for _ in range(_DISTINCT_ROUNDS):
        repeat = _repeats(X[rows])
        n_repeat = int(repeat.sum())
        if n_repeat == 0 or len(spare) == 0:
            break
        fresh, spare = spare[:n_repeat], spare[n_repeat:]
        rows = torch.cat([rows[~repeat], fresh])
    else:  # the last round's fresh rows are not checked yet
        repeat = _repeats(X[rows])
    return rows[~repeat]


def _repeats(T: torch.Tensor) -> torch.Tensor:
    """Return a mask of the rows of ``T`` equal to an earlier row."""
    _, inverse = torch.unique(T, dim=0, return_inverse=True)
    # First occurrence of each value: the smallest position with its id.
    position = torch.arange(len(T), device=T.device)
    first = torch.full_like(inverse, len(T)).scatter_reduce_(
        0, inverse, position, reduce="amin"
    )
    return first[inverse] != position


def _worst_residuals(residual: torch.Tensor, count: int, generator) -> torch.Tensor:
    """``count`` unit atoms along the largest residuals (random where none is left).

    Repeated samples have repeated residuals; each direction is taken once
    (see :func:`_distinct_rows`).
    """
    sq = (residual * residual).sum(dim=1)
    take = min(count, int((sq > 0).sum()))
    atoms = torch.randn(
        count,
        residual.shape[1],
        generator=generator,
        dtype=residual.dtype,
        device="cpu",
    ).to(residual.device)
    if take:
        order = torch.topk(sq, take).indices
        # Candidates for repeats, largest first, after the first ``take`` as
        # they are (a wider topk may order tied norms differently).
        wider = min(int((sq > 0).sum()), _DISTINCT_ROUNDS * take)
        if wider > take:
            more = torch.topk(sq, wider).indices
            order = torch.cat([order, more[~torch.isin(more, order)]])
        rows = _distinct_rows(residual, order, take)
        atoms[: len(rows)] = residual[rows]
    return _normalize_atoms(atoms)[0]


def _few_atoms_per_feature(n_components: int, n_features: int) -> bool:
    """At most ``_PLAIN_FISTA_RATIO`` atoms per feature (see there)."""
    return n_components <= _PLAIN_FISTA_RATIO * n_features


def _coherence_bound(n_components: int, n_features: int) -> float:
    """|cosine| above which the exploring rounds take two atoms for duplicates.

    ``_MAX_COHERENCE`` for at most ``_PLAIN_FISTA_RATIO`` atoms per feature;
    above, ``sqrt(2 ln K / d)`` clipped to ``[_OVERCOMPLETE_COHERENCE,
    _MAX_COHERENCE]`` (see ``_OVERCOMPLETE_COHERENCE``).
    """
    if _few_atoms_per_feature(n_components, n_features):
        return _MAX_COHERENCE
    typical = math.sqrt(2.0 * math.log(n_components) / n_features)
    return min(_MAX_COHERENCE, max(_OVERCOMPLETE_COHERENCE, typical))


def _coherent_atoms(
    components: torch.Tensor,
    codes: torch.Tensor,
    bound: float,
    kept: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of the less used atom of every pair with |cosine| above ``bound``.

    Pairs marked in the boolean ``(n_components, n_components)`` matrix
    ``kept`` are left out. Also returns every atom's closest other atom
    outside them (meaningless for an atom kept with every other, which is
    never marked).
    """
    cosine = (components @ components.T).abs()
    cosine.fill_diagonal_(0.0)
    if kept is not None:
        cosine.masked_fill_(kept, 0.0)
    closest, partner = cosine.max(dim=1)
    energy = (codes * codes).sum(dim=0)
    # Ties go to the higher index so that exactly one atom of a pair moves.
    index = torch.arange(energy.numel(), device=energy.device)
    less_used = (energy < energy[partner]) | (
        (energy == energy[partner]) & (index > partner)
    )
    return (closest > bound) & less_used, partner


class DuplicateRecords(NamedTuple):
    """What :class:`_DuplicateMemory` knows, as tensors (pickled to the CPU).

    Attributes
    ----------
    replaced, partners : torch.Tensor of shape (n_records, n_features)
        Atoms resampled as duplicates, and the atom each was close to.
    count : torch.Tensor of shape (n_records,)
        How often each was resampled.
    kept : torch.Tensor of shape (n_components, n_components)
        Boolean: the pairs of atoms no longer taken for duplicates.
    """

    replaced: torch.Tensor
    partners: torch.Tensor
    count: torch.Tensor
    kept: torch.Tensor


class _DuplicateMemory:
    """Atoms the data brought back after they were resampled as duplicates.

    The exploring rounds resample the less used of two atoms closer than the
    coherence bound, taking them for duplicates. True atoms can be that
    close too: ``make_compositional(n_latents=50, n_active=3)`` with seeds
    0-11 has its closest two true atoms at 0.66-0.79 in 17 features, at 10
    seeds above the bound of 0.7. The resampled atom came back within the
    three rounds before the next check and was resampled again, for ever:
    6 of the 12 fits ran all 200 rounds with the dictionary's change above
    ``tol=1e-2``, and both atoms of the pair were found (within 0.95) at only
    7 seeds. An atom resampled away ``_RETURNS_TO_KEEP`` times -- the same
    direction, within ``_SAME_ATOM`` (|cosine|), near the same partner, in
    whatever slot -- is kept with that partner: the data calls for both.
    The pair stays kept while its two atoms still match the record and stay
    further apart than ``_SAME_ATOM``; the records resampled only once are
    bounded (``_trim``). Now 11
    of the 12 fits find both atoms (at 0.99 or more; the twelfth as before)
    and stop after 21-84 rounds (``benchmarks/bench_small_problems.py
    --close-pairs``, with AVX-512 kernels and without SIMD kernels alike).
    Counting by slot instead lost the atom at seed 0 without SIMD kernels,
    where three slots took turns at it. Keeping an atom after one
    resampling instead of two did better on the small-problem sweep of
    ``benchmarks/bench_small_problems.py`` (mean similarity over 16 cells
    0.846 against 0.837, and 0.815 without the memory) and with 40 atoms in
    10 features (0.961 against 0.927 and 0.880, seeds 0-11), but kept atoms
    mixing two true ones here: both atoms of the close pair at 10 seeds
    (seed 9: 0.914), and similarity 0.984 against 0.999 at seed 3. The
    benchmark's n_latents=1000 moved within the spread of seeds either way
    (MCC-OOD at 90 rounds, seeds 0-2: 0.528 / 0.524 / 0.554 after one,
    0.513 / 0.507 / 0.568 after two, 0.513 / 0.508 / 0.563 without).
    """

    def __init__(
        self, components: torch.Tensor, records: DuplicateRecords | None = None
    ) -> None:
        n_components, n_features = components.shape
        device, dtype = components.device, components.dtype
        if records is not None:
            # Copies: a stream's step leaves the statistics it was given (and
            # so a copy of the estimator holding them) as they were.
            self.replaced = records.replaced.to(device, dtype, copy=True)
            self.partners = records.partners.to(device, dtype, copy=True)
            self.count = records.count.to(device, copy=True)
            self.kept = records.kept.to(device, copy=True)
            return
        # Directions resampled away, each with the atom it was close to and
        # how often it was resampled (by direction: it may come back in
        # another slot).
        self.replaced = components.new_zeros(0, n_features)
        self.partners = components.new_zeros(0, n_features)
        self.count = torch.zeros(0, dtype=torch.long, device=device)
        self.kept = torch.zeros(
            n_components, n_components, dtype=torch.bool, device=device
        )

    def records(self) -> DuplicateRecords:
        """Return the memory as tensors, for a stream's statistics."""
        return DuplicateRecords(self.replaced, self.partners, self.count, self.kept)

    def coherent(
        self, components: torch.Tensor, codes: torch.Tensor, bound: float
    ) -> torch.Tensor:
        """Mask of the atoms to resample; remembers what they were."""
        # A kept pair stays kept while its atoms still are the recorded pair
        # (one may since have been resampled, re-initialised or moved away)
        # and apart: merged beyond _SAME_ATOM, they are duplicates after all.
        first, second = torch.nonzero(self.kept, as_tuple=True)
        if first.numel():
            still = self._recorded(components[first], components[second])
            self.kept.zero_()
            self.kept[first[still], second[still]] = True
            self.kept[second[still], first[still]] = True
        coherent, partner = _coherent_atoms(components, codes, bound, self.kept)
        slots = torch.nonzero(coherent).flatten()
        if not slots.numel():
            return coherent
        atoms, partners = components[slots], components[partner[slots]]
        match = self._matches(atoms, partners)
        keep = self._recorded(atoms, partners, match)
        self.kept[slots[keep], partner[slots[keep]]] = True
        self.kept[partner[slots[keep]], slots[keep]] = True
        coherent[slots[keep]] = False
        # One more resampling for each record the resampled atoms match;
        # new records for the others.
        self.count += match[~keep].any(dim=0)
        new = ~match.any(dim=1)
        self.replaced = torch.cat([self.replaced, atoms[new]])
        self.partners = torch.cat([self.partners, partners[new]])
        self.count = torch.cat([self.count, self.count.new_ones(int(new.sum()))])
        self._trim(len(components))
        return coherent

    def _matches(self, atoms: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        """Which records each (atom, partner) pair is, up to sign."""
        return ((atoms @ self.replaced.T).abs() > _SAME_ATOM) & (
            (partners @ self.partners.T).abs() > _SAME_ATOM
        )

    def _recorded(
        self,
        atoms: torch.Tensor,
        partners: torch.Tensor,
        match: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Whether each pair was resampled often enough to keep, and is apart."""
        if match is None:
            # Either atom may be the one that was resampled.
            match = self._matches(atoms, partners) | self._matches(partners, atoms)
        often = (match & (self.count >= _RETURNS_TO_KEEP)).any(dim=1)
        apart = (atoms * partners).sum(dim=1).abs() <= _SAME_ATOM
        return often & apart

    def _trim(self, n_components: int) -> None:
        """Drop the oldest records resampled only once, past a bound.

        A stream with more atoms than the data holds resamples some every
        batch, nearly all of them for good: with 2,000 atoms on
        ``make_compositional(n_latents=500)`` (79 features, batches of 128,
        float32) the records grew by about 10 a batch and 98 % never matched
        again. A check with its copy took 28 ms with no records, 55 ms with
        100,000 (63 MB) and 160 ms with 200,000, on steps of about 0.2 s.
        """
        excess = len(self.count) - _MAX_RECORDS_PER_ATOM * n_components
        if excess <= 0:
            return
        once = torch.nonzero(self.count < _RETURNS_TO_KEEP).flatten()[:excess]
        kept = torch.ones_like(self.count, dtype=torch.bool)
        kept[once] = False
        self.replaced = self.replaced[kept]
        self.partners = self.partners[kept]
        self.count = self.count[kept]

    def forget(self, replaced: torch.Tensor) -> None:
        """Drop the kept pairs of atoms re-initialised as unused."""
        self.kept[replaced] = False
        self.kept[:, replaced] = False


class _Step(NamedTuple):
    components: torch.Tensor
    codes: torch.Tensor
    objective: torch.Tensor  # per sample, at (codes, components)
    residual: torch.Tensor
    # Exploration: the normalised least-squares atoms before extrapolation.
    anchor: torch.Tensor | None = None


def _lstsq_step(
    X: torch.Tensor,
    codes: torch.Tensor,
    components: torch.Tensor,
    alpha: float,
    objective: torch.Tensor | None,
    extrapolation: float = 0.0,
    previous: torch.Tensor | None = None,
    rescale: bool = True,
    operand: torch.Tensor | None = None,
) -> _Step:
    """Apply the least-squares dictionary update (never increasing F when refining).

    Normalising the least-squares atoms either keeps their reconstruction
    (codes rescaled by the atoms' norms, which changes the L1 term) or keeps
    the codes (which changes the reconstruction); the first that does not
    increase ``F`` beyond ``objective`` (per-sample values at ``codes,
    components``) is taken. Should both increase it -- the least-squares atoms
    are optimal only without the unit-norm constraint -- one sweep of
    :func:`block_coordinate_update` is used instead, which cannot. With
    ``objective=None`` (exploration) there is no safeguard: the normalised
    least-squares atoms ``A`` are moved on by ``extrapolation`` times their
    change from ``previous`` (the last round's ``A``), renormalised; the codes
    are rescaled to ``A`` unless ``rescale`` is False, and ``A`` is returned
    as the step's ``anchor``. ``operand`` is ``_operand(codes)`` when known.
    """
    if operand is None:
        operand = _operand(codes)
    gram, cross = _code_statistics(codes, X, operand)
    raw = _sample_side_atoms(codes, operand, X, gram, components)
    if raw is None:
        raw = lstsq_dictionary(gram, cross, components)
    atoms, norms = _normalize_atoms(raw)
    unusable = norms == 0
    atoms[unusable], norms[unusable] = components[unusable], 1.0
    if objective is None:
        anchor = atoms
        if extrapolation and previous is not None:
            atoms = _normalize_atoms(atoms + extrapolation * (atoms - previous))[0]
        if rescale:
            codes, operand = _rescaled(codes, operand, norms)
        return _Step(
            atoms, codes, *_sample_objective(X, codes, atoms, alpha, operand), anchor
        )
    for Z, Z_operand in (_rescaled(codes, operand, norms), (codes, operand)):
        f, R = _sample_objective(X, Z, atoms, alpha, Z_operand)
        if f.sum() <= objective.sum():
            return _Step(atoms, Z, f, R)
    D = block_coordinate_update(components, gram, cross)
    return _Step(D, codes, *_sample_objective(X, codes, D, alpha, operand))


class _Schedule(NamedTuple):
    """Which rounds of a fit explore, follow the paper or raise the penalty."""

    n_explore: int  # rounds [0, n_explore) explore
    n_homotopy: int  # rounds of the continuation
    n_inexact: int  # rounds [_FIRST_ROUNDS, _FIRST_ROUNDS + n_inexact): the paper's
    n_raised: int  # rounds [0, n_raised) target _FIRST_ALPHA_FACTOR * alpha
    few_atoms: bool  # see _few_atoms_per_feature

    def exploring(self, t: int) -> bool:
        return t < self.n_explore

    def inexact(self, t: int) -> bool:
        return _FIRST_ROUNDS <= t < _FIRST_ROUNDS + self.n_inexact

    def plain_iterations(self, t: int) -> int | None:
        """Plain FISTA iterations that code round ``t``; None: to a duality gap."""
        if self.inexact(t):
            return _INEXACT_FISTA_ITER
        if self.exploring(t) and self.few_atoms:
            return _PLAIN_FISTA_ITER
        return None

    def round_alpha(self, t: int, alpha: float) -> float:
        """Return the penalty round ``t`` codes at (see :func:`learn_dictionary`)."""
        target = alpha * _FIRST_ALPHA_FACTOR if t < self.n_raised else alpha
        if t < self.n_homotopy and self.exploring(t):
            return target * _HOMOTOPY_FACTOR ** (1.0 - (t + 1) / self.n_homotopy)
        return target


def _schedule(
    n_explore: int, n_components: int, n_samples: int, n_features: int
) -> _Schedule:
    """Plan the rounds of a fit with ``n_explore`` exploring rounds."""
    few_atoms = _few_atoms_per_feature(n_components, n_features)
    n_homotopy = max(1, min(_MAX_HOMOTOPY_ROUNDS, n_explore))
    n_inexact = 0 if few_atoms else max(0, n_explore - _FIRST_ROUNDS - _FINAL_ROUNDS)
    if n_inexact < _MIN_INEXACT_ROUNDS or n_components > n_samples:
        # With more atoms than samples the inexact rounds do not pay:
        # n_latents=5000, 2,500 samples, seed 0, 120 rounds with 30 of them
        # took 455 s for MCC-OOD 0.274, where 10 exploring rounds take 7 s
        # for 0.278 (their dense codes make every least-squares step a
        # factorisation of the samples' full Z Z^T, or of Z^T Z's
        # pseudo-inverse where that is not well posed).
        n_inexact = 0
    if few_atoms:
        n_raised = 0
    elif n_inexact:
        n_raised = _FIRST_ROUNDS
    else:
        n_raised = n_explore // 2
    return _Schedule(n_explore, n_homotopy, n_inexact, n_raised, few_atoms)


def _code_round(
    X: torch.Tensor,
    components: torch.Tensor,
    codes: torch.Tensor,
    alpha: float,
    *,
    positive: bool,
    iterations: int | None,
    warm_start: bool,
    tol: float,
    max_iter: int,
    batch_size: int | None,
) -> tuple[torch.Tensor, float]:
    """Code ``X`` for a learning round: the codes and mean FISTA iterations.

    ``iterations`` plain FISTA iterations from ``codes`` when given (the
    paper's inexact codes); else the working-set solver to a relative gap
    ``tol``, from ``codes`` when ``warm_start`` and from zero codes if not.
    """
    from . import _fista  # imports this module: reached at call time

    if iterations is not None:
        return (
            _fista._plain_fista(X, components, codes, alpha, positive, iterations),
            float(iterations),
        )
    coded = _fista.fista_encode(
        X,
        components,
        alpha=alpha,
        positive=positive,
        # Exploring rounds start from zero codes: their atoms move by 20-40 %
        # a round, so the last supports are stale, and the working-set solver
        # spends its iterations shrinking them, where from zero it grows
        # sparser codes within the round's loose gap. n_latents=500, 40
        # rounds, one thread, seeds 0 / 1 / 2: 22.2 / 23.2 / 21.3 s for
        # MCC-OOD 0.981 / 0.976 / 0.979, against 31.9 / 31.9 / 30.0 s for
        # 0.978 / 0.986 / 0.984 warm-started; n_latents=1000, 120 rounds,
        # seed 0: 66.6 s for 0.494 against 81-91 s for 0.503.
        init=codes if warm_start else None,
        max_iter=max_iter,
        tol=tol,
        batch_size=batch_size,
        # Intermediate codes: a round needs no float64 finish, which at
        # alpha=0.01 (100 atoms, 400 float32 samples) finished 19,872 rows
        # over a fit and took it from 128 s to 166 s.
        float64_finish=False,
    )
    return coded.codes, float(coded.n_iter.double().mean())


# A plain exploring round's code costing this many times the zero code's
# 0.5 ||x||^2 is diverging (see learn_dictionary) and is set to zero. Not 1: a
# round's ordinary excess over zero codes then reset rows of converging fits
# too, which cost the n_latents=100 benchmark (MCC-OOD 0.946-0.985 against
# 0.960-0.986 over seeds 0-7 when such rows also restarted from zero) or, on
# make_compositional(50, 3, n_samples=4000), set off a resampling cycle that
# never met tol=1e-2 in 200 rounds (44 rounds otherwise). At 1.5, 2 or 4 the
# benchmark is unchanged over seeds 0-7 and 16 small problems (n_latents
# 10-100, n_active 1-10, 100-2,000 training samples, seeds 0-2) gain 0.06 in
# mean similarity, 0.759 -> 0.819 (scikit-learn's MiniBatchDictionaryLearning
# about 0.81 on the flagged ones).
_DIVERGED_CODES = 2.0


def _max_row_norm(X: torch.Tensor) -> float:
    # Scaled first, so that the norms of rows near the dtype's range are finite.
    scale = float(X.abs().amax()) if X.numel() else 0.0
    if scale == 0.0:
        return 0.0
    return scale * float(torch.linalg.vector_norm(X / scale, dim=1).max())


def _fits_float32(X: torch.Tensor) -> bool:
    """Whether float32 holds the squared row norms of ``X`` and their sums.

    The objective, ``Z^T X`` and the residual energies add ``n_samples`` such
    terms; a margin of 16 covers the factors of a round's arithmetic. At the
    other end, squares below float32's normal range lose their precision
    (rows of norm 2e-20 gave NaN atoms); all-zero data fit anywhere.
    """
    finfo = torch.finfo(torch.float32)
    norm = _max_row_norm(X)
    squared = norm * norm  # inf, not the OverflowError of norm ** 2
    if squared == 0.0:
        return True
    return finfo.tiny / finfo.eps < squared and squared * max(X.shape[0], 1) < (
        finfo.max / 16
    )


def learn_dictionary(
    X: torch.Tensor,
    n_components: int,
    *,
    alpha: float = 0.1,
    positive: bool = False,
    init: torch.Tensor | None = None,
    dict_max_iter: int = 50,
    tol: float = 1e-6,
    max_iter: int = 1000,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    verbose: int = 0,
) -> DictionaryLearningResult:
    """Learn unit-norm atoms for lasso codes: DL-FISTA.

    Each round

    1. codes ``X`` with FISTA (:func:`~skdict._fista.fista_encode`) to a
       relative duality gap equal to the dictionary's last relative change
       (between ``tol`` and 0.3, or 0.1 with fewer than 40 features),
       warm-started from the previous round's codes when refining (from
       zero codes while exploring, below), keeping a sample's previous code
       when it was better;
    2. replaces the atoms by the least-squares fit to those codes,
       ``(Z^T Z)^{-1} Z^T X``, normalised (the paper's update), falling back
       to a block-coordinate sweep in the rounds where normalising would
       increase the objective (:func:`block_coordinate_update`): rare with
       many samples per atom, but with more atoms than samples, where the
       least-squares atoms are a minimum-norm choice among many, it can be
       every round;
    3. re-initialises atoms that no sample uses with the residuals of the
       worst-reconstructed samples.

    Without ``init`` every round explores: the penalty decreases
    geometrically towards its target over the first 4 rounds (a
    continuation: round ``t``, from 0, codes at ``target * 10 ** (1 - (t +
    1) / 4)``, 5.6, 3.2, 1.8 and 1 times the target, which is ``alpha``, or
    ``1.5 * alpha`` in the rounds below that code above it), the next
    round codes on the least-squares atoms ``A`` moved on along their change,
    ``A + 0.95 (A - A_previous)`` (momentum), and every third round, of two
    atoms with |cosine| above 0.7 the less used is resampled as in step 3
    (except in the last round, so that no atom is returned untrained); an
    atom that comes back twice after such resamplings (within |cosine| 0.9
    of the one resampled, near the same partner) is kept with its partner
    from then on, since true atoms can be that close.
    Dictionaries with at most 3 atoms per feature are coded, while
    exploring, by 8 plain FISTA iterations from the warm start instead of to
    a duality gap. Larger ones resample above ``sqrt(2 ln K / d)`` clipped
    to [0.5, 0.7] (``K`` atoms of ``d`` features), return the last round's
    ``A`` rather than its momentum step, and code the first half of their
    rounds at ``1.5 * alpha`` (the continuation's target in those rounds) --
    unless, given at least 110 rounds and no more atoms than samples, they
    code the first 60 at ``1.5 * alpha`` and spend the rounds between them
    and the last 30 on the paper's inexact alternation: 10 plain FISTA
    iterations per round, warm-started from the previous round's codes (the
    first from zero codes and without momentum), codes not rescaled, no
    resampling, momentum 0.9, ``alpha`` fixed. Exploration computes in
    float32 whatever the dtype of ``X`` (the atoms and codes are returned in
    it), unless float32 cannot hold the squared row norms of ``X`` and
    their sums: float64 data then explore in float64, and float32 data are
    first scaled by a power of two (as are, whatever their norms, data with
    entries beyond ``2 ** 50`` or below ``2 ** -50``, in float32 and
    float64). A given ``init`` skips the exploration and
    refines in the dtype of ``X``: ``alpha`` is fixed and every round
    decreases ``F(Z, D)``. Either way, learning stops once ``alpha`` has
    reached its target and the relative change ``||D_new - D||_F / ||D||_F``
    is at most ``tol`` -- leaving out atoms unused in this round and the
    last, which the data does not call for (more atoms than samples need)
    and which step 3 re-draws every round -- or after ``dict_max_iter``
    rounds. While exploring, momentum and resampling keep the change at a
    few percent a round, so without ``init`` learning usually runs all
    ``dict_max_iter`` rounds.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Training data, float32 or float64 (the estimators compute narrower
        data in float32).
    n_components : int
        Number of atoms.
    alpha : float, default=0.1
        Weight of the L1 penalty.
    positive : bool, default=False
        Constrain the codes to be non-negative.
    init : torch.Tensor of shape (n_components, n_features), default=None
        Initial atoms (normalised here); None draws them from the data
        (:func:`initial_dictionary`). Given atoms skip the exploration: they
        are taken to be close already.
    dict_max_iter : int, default=50
        Maximum number of rounds.
    tol : float, default=1e-6
        Stop when the relative change of the dictionary is at most ``tol``;
        also the tightest duality gap the rounds' codes are solved to.
    max_iter : int, default=1000
        Maximum number of FISTA iterations per sample and round.
    batch_size : int, default=None
        Samples coded at once (see :func:`~skdict._fista.fista_encode`).
    generator : torch.Generator, default=None
        CPU generator for the initial and resampled atoms; None seeds one
        with 0.
    verbose : int, default=0
        Show a progress bar over rounds when positive.

    Returns
    -------
    DictionaryLearningResult
        The atoms, the last codes and one history record per round with keys
        ``alpha``, ``objective`` (mean of ``0.5 ||x - zD||^2 + alpha ||z||_1``
        over the samples, after the round's coding), ``exploring`` (whether
        the round explored, see above), ``inexact`` (whether it was one of
        the paper's inexact rounds), ``dictionary_change``,
        ``n_unused`` (atoms no sample used, re-initialised), ``n_resampled``
        (other coherent atoms replaced), ``coding_tol`` (the relative duality gap
        the round's codes were solved to; None where a fixed number of plain
        FISTA iterations coded them) and ``fista_iter`` (mean FISTA iterations
        per sample).

    Examples
    --------
    >>> import torch
    >>> from skdict._dictionary import learn_dictionary
    >>> g = torch.Generator().manual_seed(0)
    >>> D = torch.nn.functional.normalize(torch.randn(8, 6, generator=g), dim=1)
    >>> Z = torch.rand(200, 8, generator=g) * (torch.rand(200, 8, generator=g) < 0.3)
    >>> result = learn_dictionary(Z @ D, 8, alpha=0.01, positive=True, generator=g)
    >>> len(result.history) > 0, result.components.shape
    (True, torch.Size([8, 6]))
    """
    alpha, tol = float(alpha), float(tol)  # as in fista_encode
    from . import _fista  # imports this module: reached at call time

    _fista.refuse_mps(X.device)
    if X.dtype not in (torch.float32, torch.float64):
        # bfloat16 data beyond float32's squares failed inside torch (no
        # Cholesky kernel), and smaller ones were learned in bfloat16.
        raise TypeError(f"X must be float32 or float64; got {X.dtype}.")
    scale = _fista._certifiable_scale(X)
    if (
        scale == 1.0
        and init is None
        and X.dtype == torch.float32
        and not _fits_float32(X)
    ):
        # Entries within bounds whose squares, summed over many rows, still
        # leave float32: brought to a largest entry near 1 as well.
        scale = _fista._certifiable_scale(X, bound=0)
    # As in fista_encode: the lasso scales exactly (the atoms of (s X, s alpha)
    # are those of (X, alpha), their codes s times theirs), and data near the
    # ends of the dtype's range learned NaN or wrong atoms (entries of 1e-160:
    # NaN atoms; 1e-300: similarity 0.47, not 0.998).
    result = _learn_dictionary(
        X if scale == 1.0 else X * scale,
        n_components,
        alpha=alpha * scale,
        positive=positive,
        init=init,
        dict_max_iter=dict_max_iter,
        tol=tol,
        max_iter=max_iter,
        batch_size=batch_size,
        generator=generator,
        verbose=verbose,
        scale=scale,
    )
    if scale == 1.0:
        return result
    for record in result.history:
        record["alpha"] /= scale
        record["objective"] = _unscaled_objective(record["objective"], scale)
    return result._replace(codes=result.codes / scale)


def _unscaled_objective(objective: float, scale: float) -> float:
    """Return the lasso objective of data ``X`` from that of ``scale * X``."""
    # Two divisions: scale * scale can underflow to 0.
    return objective / scale / scale


def _learn_dictionary(
    X: torch.Tensor,
    n_components: int,
    *,
    alpha: float,
    positive: bool,
    init: torch.Tensor | None,
    dict_max_iter: int,
    tol: float,
    max_iter: int,
    batch_size: int | None,
    generator: torch.Generator | None,
    verbose: int,
    scale: float = 1.0,
) -> DictionaryLearningResult:
    """:func:`learn_dictionary` on data already at a certifiable ``scale``.

    ``scale`` is the factor ``X`` was multiplied by, used only to show the
    objective of the caller's data on the progress bar.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    dtype = X.dtype
    if init is None:
        # Learning from drawn atoms is a search whose rounds stop at relative
        # gaps of 0.01-0.3, far above float32 rounding: it runs in float32,
        # where products and factorisations cost half as much (one thread,
        # AVX-512 CPU, seeds 0-2: n_latents=500, 40 rounds, 3.1-3.6 s against
        # 3.6-4.1 s for MCC-OOD 0.980-0.987 against 0.986-0.989; n_latents=
        # 1000, 90 rounds, 11.8-13.0 s against 13.6-15.4 s, 0.50-0.53 both).
        # Unless float32 cannot hold the rounds' squared norms and their sums
        # (rows of norm 1e20 gave NaN atoms or a division by zero, rows of
        # norm 2e-20 NaN atoms): float64 data then explore in float64 (float32
        # data were brought near 1 by learn_dictionary).
        if _fits_float32(X):
            X = X.float()
        components = initial_dictionary(X, n_components, generator)
    else:
        components = _normalize_atoms(init.to(device=X.device, dtype=X.dtype))[0]
    schedule = _schedule(
        0 if init is not None else dict_max_iter, n_components, *X.shape
    )
    coherence_bound = _coherence_bound(n_components, X.shape[1])
    codes = torch.zeros(X.shape[0], n_components, dtype=X.dtype, device=X.device)
    # F of zero codes, per sample: 0.5 ||x||^2, which no code need exceed.
    zero_objective = 0.5 * (X * X).sum(dim=1)
    # Per-sample objective of ``codes`` on ``components`` at ``warm_alpha``:
    # the warm start a round's coding must improve on.
    warm_objective = None
    warm_alpha = None
    max_round_tol = (
        _MAX_ROUND_TOL
        if X.shape[1] >= _LOOSE_MIN_FEATURES
        else _MAX_ROUND_TOL_FEW_FEATURES
    )
    round_tol = max_round_tol
    # The last normalised least-squares atoms, from which exploration extrapolates.
    anchor = components
    # Atoms no sample used in the last round: re-initialised, see below.
    last_unused = torch.zeros(n_components, dtype=torch.bool, device=X.device)
    duplicates = _DuplicateMemory(components) if schedule.n_explore else None
    history: list[dict[str, float]] = []
    rounds = tqdm(range(dict_max_iter), disable=verbose <= 0, desc="DL-FISTA")
    for t in rounds:
        exploring, inexact = schedule.exploring(t), schedule.inexact(t)
        if inexact and t == _FIRST_ROUNDS:
            # The paper's loop starts from zero codes and no momentum.
            codes = torch.zeros_like(codes)
            anchor, warm_objective = components, None
        round_alpha = schedule.round_alpha(t, alpha)
        iterations = schedule.plain_iterations(t)
        new_codes, fista_iter = _code_round(
            X,
            components,
            codes,
            round_alpha,
            positive=positive,
            iterations=iterations,
            warm_start=not exploring,
            tol=round_tol,
            max_iter=max_iter,
            batch_size=batch_size,
        )
        operand = _operand(new_codes)
        objective = _sample_objective(X, new_codes, components, round_alpha, operand)[0]
        if exploring and schedule.few_atoms:
            # Codes rescaled by long least-squares atoms can cost more than
            # zero codes, which 8 iterations cannot undo: fed back, they grew
            # round after round with near-parallel atoms
            # (make_compositional(20, 2, n_samples=1000), seed 2: codes up to
            # 1,860 for data of norm 1, 40 duplicate atom pairs, similarity
            # 0.563, now 0.94). Rows past _DIVERGED_CODES times the cost of
            # zero codes become zero codes.
            worse = objective > _DIVERGED_CODES * zero_objective
            if bool(worse.any()):
                new_codes[worse] = 0.0
                objective[worse] = zero_objective[worse]
                operand = _operand(new_codes)
        if warm_objective is not None and warm_alpha == round_alpha:
            # FISTA stops within its tolerance of the optimum, which may be
            # above a warm start that was already closer.
            kept = warm_objective < objective
            if bool(kept.any()):
                new_codes[kept] = codes[kept]
                objective[kept] = warm_objective[kept]
                operand = _operand(new_codes)
        step = _lstsq_step(
            X,
            new_codes,
            components,
            round_alpha,
            None if exploring else objective,
            _INEXACT_EXTRAPOLATION if inexact else _EXTRAPOLATION,
            anchor,
            # The paper's codes keep their scale: a few iterations cannot undo
            # codes scaled up by atoms the shrunk codes made longer than one.
            rescale=not inexact,
            operand=operand,
        )
        new_components, codes, anchor = step.components, step.codes, step.anchor
        # The step rescales codes by positive norms: ``operand``'s support.
        if operand.is_sparse:
            unused = torch.bincount(operand.indices()[1], minlength=n_components) == 0
        else:
            unused = torch.count_nonzero(codes, dim=0) == 0
        n_unused = int(unused.sum())
        if n_unused:
            # Their codes are zero, so F does not change.
            new_components[unused] = _worst_residuals(
                step.residual, n_unused, generator
            )
            if anchor is not None:  # no momentum on a fresh atom
                anchor[unused] = new_components[unused]
            if duplicates is not None:
                duplicates.forget(unused)
        n_resampled = n_duplicates = 0
        # Not in the last round: a resampled atom would be returned untrained.
        if (
            exploring
            and not inexact
            and (t + 1) % _RESAMPLE_EVERY == 0
            and t + 1 < dict_max_iter
        ):
            coherent = duplicates.coherent(new_components, codes, coherence_bound)
            n_resampled = int(coherent.sum())
            if n_resampled:
                # From the largest residuals, as the unused atoms were: those
                # just re-initialised (zero codes, so the less used of any
                # close pair) can take the same directions again, copies that
                # the next round pulls apart. Giving them the residuals after
                # the unused atoms' (or leaving them out of the pairs) lowered
                # the small problems' mean similarity over seeds 0-5 from
                # 0.839 to 0.836 (0.831), and by 0.03-0.05 with 100 atoms on
                # 200 samples (benchmarks/RESULTS.md, "Atoms just
                # re-initialised").
                new_components[coherent] = _worst_residuals(
                    step.residual, n_resampled, generator
                )
                # Recorded apart from the unused atoms, counted already.
                n_duplicates = int((coherent & ~unused).sum())
                anchor[coherent] = new_components[coherent]
                codes[:, coherent] = 0.0
        warm_objective = (
            _sample_objective(X, codes, new_components, round_alpha)[0]
            if n_resampled
            else step.objective
        )
        warm_alpha = round_alpha
        difference = new_components - components
        change = float(difference.norm() / components.norm())
        # An atom left unused again after its re-initialisation is one the
        # data does not call for (more atoms than samples need): it is
        # re-drawn every round and would hold the change above ``tol`` for
        # ever. The stopping rule leaves it out; a newly unused atom counts.
        settled = unused & last_unused
        stop_change = (
            float(difference[~settled].norm() / components.norm())
            if bool(settled.any())
            else change
        )
        last_unused = unused
        components = new_components
        history.append(
            {
                "alpha": round_alpha,
                "exploring": exploring,
                "inexact": inexact,
                "objective": float(objective.mean()),
                "dictionary_change": change,
                "n_unused": n_unused,
                "n_resampled": n_duplicates,
                # Plain FISTA runs a fixed number of iterations, to no gap.
                "coding_tol": None if iterations is not None else round_tol,
                "fista_iter": fista_iter,
            }
        )
        if verbose > 0:
            rounds.set_postfix(
                objective=_unscaled_objective(history[-1]["objective"], scale),
                change=change,
            )
        round_tol = min(max_round_tol, max(tol, change))
        # Once alpha has reached its target (after the continuation).
        if round_alpha == alpha and stop_change <= tol and not inexact:
            break
    if not schedule.few_atoms and history and history[-1]["exploring"]:
        # The momentum step guesses atoms for a round that does not come:
        # return the least-squares atoms of the last codes instead.
        # n_latents=1000, 5 / 90 / 110 rounds, seeds 0-2: MCC-OOD 0.254 /
        # 0.253 / 0.260, 0.509 / 0.534 / 0.518 and 0.535 / 0.547 / 0.561,
        # against 0.248 / 0.246 / 0.250, 0.505 / 0.532 / 0.511 and 0.529 /
        # 0.541 / 0.555 with the momentum step; n_latents=200 and 500
        # within 0.002 either way. Plain rounds (8 FISTA iterations from the
        # warm start) lag behind their atoms, which the momentum step
        # continues: at n_latents=50 (33 features), 30 rounds, seed 0, it
        # returned atoms coding at 0.957 against 0.950 for the least-squares
        # ones.
        components = anchor
    if components.dtype != dtype:
        # Unit norm to the precision of the caller's dtype, not float32's.
        components = _normalize_atoms(components.to(dtype))[0]
    return DictionaryLearningResult(components, codes.to(dtype), history)


def _forgetting_factor(step: int, eta: int) -> float:
    """Weight ``beta`` of the running statistics at ``step`` (0-based).

    Mairal et al. (2010), Sec. 3.4.3: with ``theta = (t + 1) eta`` for ``t <
    eta - 1`` and ``eta^2 + t + 1 - eta`` after, ``beta = (theta + 1 - eta) /
    (theta + 1)``, which down-weights the first, worse-coded batches.
    """
    theta = (step + 1) * eta if step < eta - 1 else eta**2 + step + 1 - eta
    return (theta + 1 - eta) / (theta + 1)


def _stream_weight(n_steps: int, eta: int) -> float:
    """Total weight of the batch averages in ``A`` after ``n_steps`` steps."""
    weight = 0.0
    for step in range(n_steps):
        weight = _forgetting_factor(step, eta) * weight + 1.0
    return weight


def online_dictionary_update(
    X: torch.Tensor,
    components: torch.Tensor,
    statistics: dict[str, Any] | None,
    *,
    alpha: float = 0.1,
    positive: bool = False,
    max_iter: int = 1000,
    tol: float = 1e-6,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    explore: bool = True,
    verbose: int = 0,
) -> tuple[torch.Tensor, dict[str, Any], dict[str, float]]:
    r"""Take one mini-batch step of online dictionary learning.

    Mairal et al. (2010), Algorithm 1: the mini-batch ``X`` is coded with FISTA
    on the current atoms, its statistics are added to the running ones,

    .. math:: A \leftarrow \beta A + Z^T Z / \eta, \qquad
              B \leftarrow \beta B + Z^T X / \eta,

    with ``eta`` the batch size and ``beta`` the down-weighting of early
    (worse-coded) batches of their Sec. 3.4.3, and one sweep of
    :func:`block_coordinate_update` refreshes the atoms. A stream that
    explores (one started from atoms drawn from the data) re-initialises, with
    the residuals of the batch's worst-reconstructed samples, the atoms no
    sample has used yet and the less used of two atoms closer than
    :func:`learn_dictionary`'s coherence bound (forgetting its statistics),
    except atoms that came back twice after such resamplings, as there.
    A stream started from given atoms only refines them: an atom no sample
    has used yet keeps its place (:func:`learn_dictionary` re-initialises
    unused atoms in every round, since it sees every sample; a batch does
    not show that an atom is useless).

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        The mini-batch.
    components : torch.Tensor of shape (n_components, n_features)
        Current unit-norm atoms.
    statistics : dict or None
        The running ``{"A", "B", "n_steps"}`` from the previous step (and,
        when exploring, ``"duplicates"``, the atoms resampled as duplicates:
        :class:`DuplicateRecords`; and ``"scale"``, the power of two the
        stream's data are multiplied by, when not 1); None starts afresh, at
        the scale of ``X``. Statistics of a
        full-batch fit (:func:`batch_statistics`) carry ``n_samples`` instead of
        ``n_steps``: they enter with the weight that ``ceil(n_samples /
        len(X))`` batches like ``X`` would have, as if they had been
        streamed.
    alpha, positive, max_iter, tol, batch_size :
        Coding settings, as in :func:`~skdict._fista.fista_encode`.
    generator : torch.Generator, default=None
        CPU generator for re-initialised atoms; None seeds one with 0.
    explore : bool, default=True
        Whether to re-initialise unused and duplicate atoms (see above).
    verbose : int, default=0
        Show a progress bar over the batch's coding when positive.

    Returns
    -------
    components : torch.Tensor of shape (n_components, n_features)
        The updated atoms.
    statistics : dict
        The updated running statistics.
    record : dict
        ``objective`` (mean lasso objective of the batch before the update),
        ``dictionary_change``, ``n_unused`` (atoms no sample of the stream has
        used yet, re-initialised when exploring) and ``n_resampled`` (used
        coherent atoms replaced).
    """
    alpha, tol = float(alpha), float(tol)  # as in fista_encode
    from . import _fista  # imports this module: reached at call time

    _fista.refuse_mps(X.device)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    # A stream learns at one power-of-two scale, its first batch's (see
    # learn_dictionary; the lasso scales exactly): statistics of data of
    # 1e160 overflowed, and all atoms came back zero.
    if statistics is None:
        scale = _fista._certifiable_scale(X)
    else:
        scale = statistics.get("scale", 1.0)
    if scale != 1.0:
        X, alpha = X * scale, alpha * scale
    n_components = components.shape[0]
    if statistics is None:
        statistics = {
            "A": X.new_zeros(n_components, n_components),
            "B": X.new_zeros(n_components, X.shape[1]),
            "n_steps": 0,
        }
    codes = _fista.fista_encode(
        X,
        components,
        alpha=alpha,
        positive=positive,
        max_iter=max_iter,
        tol=tol,
        batch_size=batch_size,
        verbose=verbose,
        float64_finish=False,  # intermediate codes, as in learn_dictionary
    ).codes
    objective, residual = _sample_objective(X, codes, components, alpha)
    eta = X.shape[0]
    step = statistics.get("n_steps")
    A, B = statistics["A"], statistics["B"]
    if step is None:
        # Per-sample averages of a full-batch fit: scaled to the weight a
        # stream of the same samples in batches like this one would give them.
        step = math.ceil(statistics["n_samples"] / eta)
        weight = _stream_weight(step, eta)
        A, B = weight * A, weight * B
    beta = _forgetting_factor(step, eta)
    gram, cross = _code_statistics(codes, X)
    # Into the fresh products, not beside them: beta * A + gram / eta made
    # three (n_components, n_components) arrays besides the old A, and the
    # check of finiteness two more (at 8,192 atoms 1.06 GB a call, now 0.55).
    # The old statistics are not written: a batch refused below leaves them.
    A = gram.div_(eta).add_(A.mul(beta))
    B = cross.div_(eta).add_(B.mul(beta))
    if not all(_all_finite(T) for T in (A, B, objective)):
        # Raised before anything is kept: statistics of inf froze every atom
        # for the rest of the stream, with no sign of it in later records.
        # A first batch of nearly nothing (one row of 1e-200 among zeros)
        # sets a scale at which every later batch overflows: rescaling the
        # data, the only remedy named, could not help that stream.
        largest = float(X.abs().max()) / scale
        remedy = "Rescale the data, every batch by one factor."
        if scale != 1.0:
            remedy = (
                "A stream learns at the scale of its first batch (largest "
                f"entry about {1 / scale:.3g}): start a new one (fit, or "
                "partial_fit on a clone) whose first batch has the data's "
                "usual scale, or rescale every batch by one factor."
            )
        raise FloatingPointError(
            f"A batch with entries up to {largest:.3g} overflows the stream's "
            f"running statistics in {X.dtype}; the stream is left as it was. "
            f"{remedy}"
        )
    updated = block_coordinate_update(components, A, B)
    never_used = A.diagonal() == 0
    coherent = torch.zeros(n_components, dtype=torch.bool, device=A.device)
    if explore:
        # Of two atoms closer than the coherence bound, the less used one
        # restarts (its statistics forgotten) from a residual, as in
        # learn_dictionary's exploration: in a stream from drawn atoms,
        # every batch is exploration.
        bound = _coherence_bound(n_components, X.shape[1])
        duplicates = _DuplicateMemory(updated, statistics.get("duplicates"))
        coherent = duplicates.coherent(updated, A.diagonal()[None].sqrt(), bound)
        A[coherent] = 0.0
        A[:, coherent] = 0.0
        B[coherent] = 0.0
    if explore:
        duplicates.forget(never_used)
    # Counted apart: the atoms no sample has used yet, close to another or
    # not (those were counted as resampled duplicates), and the used atoms
    # resampled as duplicates.
    n_unused = int(never_used.sum())
    n_resampled = int((coherent & ~never_used).sum())
    replaced = never_used | coherent
    if explore and bool(replaced.any()):
        updated[replaced] = _worst_residuals(residual, int(replaced.sum()), generator)
    record = {
        "objective": _unscaled_objective(float(objective.mean()), scale),
        "dictionary_change": float((updated - components).norm() / components.norm()),
        "n_unused": n_unused,
        "n_resampled": n_resampled,
    }
    statistics = {"A": A, "B": B, "n_steps": step + 1}
    if scale != 1.0:
        statistics["scale"] = scale
    if explore:
        statistics["duplicates"] = duplicates.records()
    return updated, statistics, record


def batch_statistics(codes: torch.Tensor, X: torch.Tensor) -> dict[str, Any]:
    """Return the running statistics that let a stream continue a full-batch fit.

    ``A = Z^T Z / n`` and ``B = Z^T X / n`` of the fit's final codes, with
    the number of samples ``n`` they summarise, on the CPU (``A`` holds
    ``n_components**2`` values);
    :func:`online_dictionary_update` weights them as the batches of a stream
    of those samples.

    Parameters
    ----------
    codes : torch.Tensor of shape (n_samples, n_components)
        The fit's final codes.
    X : torch.Tensor of shape (n_samples, n_features)
        The data they code.

    Returns
    -------
    dict
        ``{"A", "B", "n_samples"}``, and ``"scale"`` when ``X`` lies beyond
        the range a stream learns at unscaled (see
        :func:`online_dictionary_update`).

    Examples
    --------
    >>> import torch
    >>> from skdict._dictionary import batch_statistics
    >>> Z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> stats = batch_statistics(Z, Z @ torch.eye(2))
    >>> stats["A"], stats["n_samples"]
    (tensor([[0.5000, 0.0000],
            [0.0000, 2.0000]]), 2)
    """
    from . import _fista  # imports this module: reached at call time

    n_samples = X.shape[0]
    # At the scale a stream of X would learn at (online_dictionary_update).
    scale = _fista._certifiable_scale(X)
    if scale != 1.0:
        codes, X = codes * scale, X * scale
    gram, cross = _code_statistics(codes, X)
    statistics = {
        "A": (gram / n_samples).cpu(),
        "B": (cross / n_samples).cpu(),
        "n_samples": n_samples,
    }
    if scale != 1.0:
        statistics["scale"] = scale
    return statistics


def _largest_magnitude(A: Any) -> float:
    """``max |A|`` of a tensor or SciPy sparse array without a copy of ``|A|``."""
    if min(A.shape) == 0:
        return 0.0
    return max(float(A.max()), -float(A.min()))


def _sparse_code_statistics(
    codes: Any, X: torch.Tensor, code_scale: float, x_scale: float, work: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Z^T Z`` and ``Z^T X`` of scaled sparse codes, in O(nnz) products.

    ``codes`` is a SciPy CSR array. Densified chunks would cost
    ``n_samples * n_latents**2`` multiply-adds for ``Z^T Z`` (1,000 latents,
    10,000 samples: 0.57 s against 0.04 s for the sparse products).
    """
    scaled = codes.astype(np.float64) / code_scale
    gram = torch.as_tensor((scaled.T @ scaled).toarray(), device="cpu")
    cross = X.new_zeros(codes.shape[1], X.shape[1], dtype=work)
    chunk = rows_per_block(X.shape[1])
    for start in range(0, X.shape[0], chunk):
        Z = sparse_as_tensor(
            scaled[start : start + chunk], device=X.device, dtype=work, name="y"
        )
        X_chunk = X[start : start + chunk].to(work) / x_scale
        cross += torch.sparse.mm(Z.t(), X_chunk)
    return gram.to(device=X.device, dtype=work), cross


def estimate_dictionary(X: torch.Tensor, codes: Any) -> torch.Tensor:
    """Least-squares atoms from known codes: ``argmin_D ||X - codes @ D||_F``.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Data.
    codes : array-like, torch.Tensor or sparse matrix of shape \
(n_samples, n_latents) or (n_samples,)
        Ground-truth codes; the statistics of sparse matrices (SciPy, or
        sparse tensors) are formed by sparse products, those of dense codes a
        chunk of rows at a time.

    Returns
    -------
    torch.Tensor of shape (n_latents, n_features)
        The atoms, on ``X``'s device and in its dtype (computed in float64
        where the device has it), not normalised: noiseless ``X = codes @ D``
        gives back ``D`` exactly up to rounding.

    Raises
    ------
    ValueError
        If ``codes`` does not have one row per sample, or a latent is zero in
        every sample (its atom is not determined by the data).

    Warns
    -----
    UserWarning
        If the columns of ``codes`` are linearly dependent, e.g. two latents
        always active together with proportional values: their atoms are not
        determined by the data, and the minimum-norm solution is returned.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skdict._dictionary import estimate_dictionary
    >>> D = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    >>> Z = np.array([[1.0, 0.0], [0.5, 2.0], [0.0, 1.0]])
    >>> D_hat = estimate_dictionary(torch.from_numpy(Z @ D), Z)
    >>> D_hat.shape
    torch.Size([2, 3])

    Noiseless data give the atoms back up to rounding:

    >>> torch.allclose(D_hat, torch.from_numpy(D), rtol=0, atol=1e-12)
    True
    """
    return atoms_from_statistics(code_statistics(X, codes), X.dtype)


class CodeStatistics(NamedTuple):
    """``Z^T Z`` and ``Z^T X`` of codes and data scaled to a largest entry of 1.

    ``gram`` holds ``(Z / code_scale)^T (Z / code_scale)`` and ``cross``
    ``(Z / code_scale)^T (X / x_scale)``, in float64 where the device has it.
    """

    gram: torch.Tensor
    cross: torch.Tensor
    code_scale: float
    x_scale: float

    def merged(self, other: CodeStatistics) -> CodeStatistics:
        """Return the statistics of both sets of rows, at the larger scales.

        Each side is rescaled by ratios of at most 1, so sums of batches of
        any units stay as far from float64's limits as one batch's.
        """
        code_scale = max(self.code_scale, other.code_scale)
        x_scale = max(self.x_scale, other.x_scale)

        def rescaled(stats: CodeStatistics) -> tuple[torch.Tensor, torch.Tensor]:
            c, x = stats.code_scale / code_scale, stats.x_scale / x_scale
            device = self.gram.device
            return (
                stats.gram.to(device) * (c * c),
                stats.cross.to(device) * (c * x),
            )

        (g1, c1), (g2, c2) = rescaled(self), rescaled(other)
        return CodeStatistics(g1 + g2, c1 + c2, code_scale, x_scale)


def _warn_if_class_labels(y: Any) -> None:
    """Warn that a 1-D ``y`` of more than two whole numbers looks like class labels.

    A classifier pipeline hands its labels to every step, and a 1-D ``y`` is
    one latent's codes: labels 0-19 made one atom, scaled by the class index,
    with a plausible score after it and no warning.
    """
    if sp.issparse(y):
        return
    ndim = getattr(y, "ndim", None)
    if ndim is None:  # a list, or another object NumPy reads
        try:
            y = np.asarray(y)
        except (TypeError, ValueError):
            return  # ragged rows: refused with the codes, naming y
        ndim = y.ndim
    if ndim != 1:
        return
    values = to_numpy(y, name="y")
    if values.dtype.kind not in "iuf" or not np.isfinite(values).all():
        return  # NaN and inf are refused with the codes, naming y
    if type_of_target(values) != "multiclass":
        return
    warn(
        f"y is 1-D and holds {len(np.unique(values))} whole numbers, like class "
        "labels; a 1-D y is the codes of one latent, so one atom is estimated. "
        "For an atom per class, one-hot encode the labels first (e.g. "
        "OneHotEncoder().fit_transform(labels.reshape(-1, 1))).",
        UserWarning,
    )


def code_statistics(X: torch.Tensor, codes: Any) -> CodeStatistics:
    """Return the least-squares statistics of ``X`` on known ``codes``.

    See :func:`estimate_dictionary` for ``codes`` and the errors raised.
    """
    n_samples = X.shape[0]
    # The normal equations square the codes' condition number: in float32 a
    # well-posed problem (1,000 latents, k=5, 5,000 samples, cond(Z) = 752)
    # looked singular, and 12 atoms came back wrong (cosine down to -0.17).
    # They are formed and solved in float64 where the device has it, a chunk
    # of rows at a time (a float64 copy of X would double its memory), and
    # the atoms returned in X's dtype.
    work = accumulation_dtype(X.device, X.dtype)

    # Codes keep their own precision until a chunk is cast to ``work``.
    code_dtype = None if work == torch.float64 else work

    def dense(block, column=True):
        block = block.toarray() if sp.issparse(block) else block
        T = as_tensor(block, device=X.device, dtype=code_dtype, name="y", ndim=None)
        return T.reshape(-1, 1) if column and T.ndim == 1 else T

    codes = scipy_if_pandas_sparse(codes)
    if is_sparse(codes) and not sp.issparse(codes):
        codes = sparse_tensor_as_scipy(codes, name="y")
    if sp.issparse(codes):
        if codes.dtype.kind not in "biuf":
            raise ValueError(
                f"y must hold real codes; got a sparse matrix of dtype {codes.dtype}."
            )
        # A copy: SciPy sums duplicate entries and sorts indices in place (on
        # max(), for one), which would rewrite the caller's arrays.
        codes = sp.csr_array(codes, copy=True)
        given = shape = codes.shape
    else:
        codes = dense(codes, column=False)
        given = tuple(codes.shape)  # the error names the shape as given
        codes = codes.reshape(-1, 1) if codes.ndim == 1 else codes
        shape = tuple(codes.shape)
    if len(shape) != 2 or shape[0] != n_samples:
        raise ValueError(
            f"y must hold the codes of the {n_samples} samples of X, shape "
            f"(n_samples, n_latents); got shape {given}."
        )
    if shape[1] == 0:
        raise ValueError(
            f"y must hold at least one latent (column); got shape {given}, "
            "which would give an oracle of zero atoms."
        )
    # The normal equations are formed for codes and X scaled to a largest
    # entry of 1 (scalars, undone on the atoms, which leave the least-squares
    # and minimum-norm solutions as they are): their entries then stay far
    # from float64's limits whatever the data's units (codes of scale 1e-155
    # or 1e154 gave NaN atoms or a failed eigendecomposition).
    if sp.issparse(codes) and not np.isfinite(codes.data).all():
        raise ValueError("y contains NaN or infinity.")
    code_scale = _largest_magnitude(codes) or 1.0
    x_scale = _largest_magnitude(X) or 1.0
    if sp.issparse(codes):
        gram, cross = _sparse_code_statistics(codes, X, code_scale, x_scale, work)
    else:
        chunk = rows_per_block(max(shape[1], X.shape[1]))
        gram = X.new_zeros(shape[1], shape[1], dtype=work)
        cross = X.new_zeros(shape[1], X.shape[1], dtype=work)
        for start in range(0, n_samples, chunk):
            Z = dense(codes[start : start + chunk]).to(work) / code_scale
            gram += Z.T @ Z
            cross += Z.T @ (X[start : start + chunk].to(work) / x_scale)
    return CodeStatistics(gram, cross, code_scale, x_scale)


def atoms_from_statistics(
    stats: CodeStatistics, dtype: torch.dtype, *, silent_ok: bool = False
) -> torch.Tensor:
    """Return the least-squares atoms of :func:`code_statistics`, in ``dtype``.

    See :func:`estimate_dictionary` for the errors raised and the warning.
    With ``silent_ok``, latents zero in every sample get zero atoms instead
    of an error (a stream's batches so far may not hold every latent).
    """
    gram, cross = stats.gram, stats.cross
    code_scale, x_scale = stats.code_scale, stats.x_scale
    silent = torch.nonzero(gram.diagonal() == 0).flatten()
    if silent.numel() and not silent_ok:
        raise ValueError(
            f"Latents {_listed(silent)} are zero in every sample of y, so their atoms "
            "cannot be estimated from X; drop those columns or add samples where "
            "they are active."
        )
    atoms = lstsq_dictionary(
        gram,
        cross,
        singular_warning=(
            "The columns of y are linearly dependent (for example, two latents "
            "always active together in proportion), so X does not determine "
            "their atoms; the minimum-norm least-squares atoms are returned."
        ),
    )
    # X / x_scale = (Z / code_scale) (D code_scale / x_scale).
    exact = atoms * (x_scale / code_scale)
    atoms = exact.to(dtype)
    # Codes of 1e-150 for float32 data of order 1 ask for atoms of 1e150
    # (stored as inf), codes of 1e150 for atoms of 1e-150 (stored as 0).
    lost = (exact != 0).any(dim=1) & (atoms == 0).all(dim=1)
    if not bool(torch.isfinite(atoms).all()) or bool(lost.any()):
        relation = "small" if not bool(torch.isfinite(atoms).all()) else "large"
        advice = " or pass X in float64" if dtype != torch.float64 else ""
        raise ValueError(
            f"The least-squares atoms of X on y leave {dtype}'s range: y's "
            f"entries (up to {code_scale:.3g}) are too {relation} for X's (up "
            f"to {x_scale:.3g}). Rescale y{advice}."
        )
    return atoms


# The most values of Z^T Z and Z^T X an oracle keeps after fit (32 MiB in
# float64, about 2,000 latents), for partial_fit to continue from.
_KEPT_STATISTICS = 2**22


def _check_concept_names(fitted: np.ndarray | None, names: np.ndarray | None) -> None:
    """Refuse a batch whose ``y`` names its columns otherwise than the first.

    Concepts in another order would be summed into the wrong latents' atoms
    (an error of 0.32 against 2e-15), as scikit-learn refuses reordered
    feature names.
    """
    if fitted is None or names is None:
        if (fitted is None) != (names is None):
            warn(
                "y has no column names, but the oracle's first batch named its "
                "concepts: its columns are taken in that order."
                if names is None
                else "y names its columns, but the oracle's first batch did not: "
                "they are taken in the first batch's order.",
                UserWarning,
            )
        return
    if len(names) != len(fitted) or (names != fitted).any():
        raise ValueError(
            "The concept names of y differ from those of the first batch (in "
            f"name or order): {list(names)[:5]} against {list(fitted)[:5]}. "
            "Order y's columns as the first batch's."
        )


class ConceptNamesOutMixin(ClassNamePrefixFeaturesOutMixin):
    """Mixin: codes named after an oracle's concepts where the atoms are theirs.

    :class:`~skdict.OracleDictionary` fitted on a ``y`` with string column names,
    and the coders that keep its atoms (a :class:`~skdict.FISTACoder` on them, a
    :class:`~skdict.SparseAutoencoder` with them as its frozen decoder), name their
    codes after the concepts; other estimators name them as scikit-learn's
    decompositions do. ``_names_of_codes`` gives the names, recorded at fit.
    """

    def _names_of_codes(self) -> np.ndarray | None:
        return getattr(self, "_concept_names", None)

    def get_feature_names_out(self, input_features: ArrayLike = None) -> np.ndarray:
        """Return the names of the codes: an oracle's concepts where the atoms are.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Checked against the names seen in ``fit``, as scikit-learn's
            transformers check them; not used otherwise.

        Returns
        -------
        feature_names_out : ndarray of str objects
            The concept names of an :class:`~skdict.OracleDictionary` estimated from
            a DataFrame ``y`` with string column names, for the oracle and
            for coders fitted on its atoms (a :class:`~skdict.FISTACoder`, or a
            :class:`~skdict.SparseAutoencoder` keeping them frozen); otherwise the
            class name and the code's index (``fistacoder0``, ...).
        """
        names = super().get_feature_names_out(input_features)
        concepts = self._names_of_codes()
        if concepts is None or len(concepts) != len(names):
            return names
        return np.asarray(concepts, dtype=object).copy()


def concept_names_of(provider: Any) -> np.ndarray | None:
    """Return the concept names an oracle gave its atoms, or None.

    ``provider`` is a fitted dictionary provider (a
    :class:`~sklearn.frozen.FrozenEstimator` passes attributes through):
    coders on an oracle's atoms name their codes after its concepts.
    """
    names = getattr(provider, "concept_names_", None)
    if names is None:
        # A coder that keeps an oracle's atoms (FISTACoder on them, or an SAE
        # with them as its frozen decoder) passes the names on, so that
        # wrapping the same atoms once more does not lose them.
        names_of_codes = getattr(provider, "_names_of_codes", None)
        names = names_of_codes() if callable(names_of_codes) else None
    return None if names is None else np.asarray(names, dtype=object).copy()


def _string_columns(y: Any) -> np.ndarray | None:
    """Return the column names of ``y`` (a DataFrame) when all are strings.

    A Series named by a string (the 1-D ``y`` of one concept) gives its name.
    Column names mixing strings and other types are refused, as scikit-learn
    refuses them in ``X`` (they were dropped silently).
    """
    if getattr(y, "ndim", None) == 1:
        name = getattr(y, "name", None)
        return np.asarray([name], dtype=object) if isinstance(name, str) else None
    try:
        return _get_feature_names(y)
    except TypeError as error:
        # scikit-learn's message says to convert X.columns, which is not
        # where the names are.
        kinds = sorted({type(name).__name__ for name in y.columns})
        raise TypeError(
            f"The column names of y mix types ({kinds}); they name the concepts "
            "(get_feature_names_out), so all must be strings: convert them, e.g. "
            "y.columns = y.columns.astype(str)."
        ) from error


class OracleDictionary(
    StrictParamsMixin,
    ConceptNamesOutMixin,
    TransformerMixin,
    DetachedCloneMixin,
    BaseEstimator,
):
    """The ground-truth dictionary as an estimator, with FISTA codes.

    The ceiling of the paper's comparison (Barin Pacela et al., 2026, arXiv
    2603.28744): per-sample sparse inference with the right dictionary. With
    ``dictionary`` given, :meth:`fit` only checks it against ``X``; without
    one, :meth:`fit` estimates it by least squares from ground-truth codes
    ``y``, ``argmin_D ||X - y D||_F`` -- an oracle wherever concept labels
    exist, such as known concept directions in real activations.
    :meth:`transform` codes with the FISTA solver of :class:`FISTACoder`
    (``positive=True`` by default here, for concept codes), and
    ``components_`` exposes the atoms, so the oracle is also a dictionary
    provider: ``FISTACoder(dictionary=OracleDictionary(D))`` or
    ``SparseAutoencoder(decoder=OracleDictionary(D), freeze_decoder=True)``.

    Parameters
    ----------
    dictionary : array-like, torch.Tensor, estimator or object, default=None
        The true atoms, shape ``(n_latents, n_features)``, or a dictionary
        provider (see :class:`FISTACoder`). None estimates them from ``y`` in
        :meth:`fit`.
    alpha : float, default=0.1
        Weight of the L1 penalty of the codes; positive (see
        :class:`~skdict.FISTACoder`).
    positive : bool, default=True
        Constrain the codes to be non-negative (the paper's setting).
    max_iter : int, default=1000
        Maximum number of FISTA iterations per sample.
    tol : float in [0, 1), default=1e-6
        Relative duality gap at which a sample's code is accepted.
    batch_size : int, default=None
        Number of samples coded at once; None picks it as
        :class:`~skdict.FISTACoder` does.
    device : str or torch.device, default="auto"
        Where to compute; ``"auto"`` uses a tensor input's own device, else
        CUDA when available.
    verbose : int, default=0
        Show progress bars when positive.

    Attributes
    ----------
    components_ : ndarray or torch.Tensor of shape (n_latents, n_features)
        The atoms, in the array type and precision of the data given to
        :meth:`fit` (float32 data: float32 atoms, from a float64 dictionary
        too, so that coding float64 data later uses the rounded atoms). A
        :meth:`partial_fit` stream keeps the precision of its first batch
        and hands the atoms out in the array type of its latest.
    intercept_ : ndarray or torch.Tensor of shape (n_features,)
        The provider's intercept, zero for atoms given as an array or estimated
        from ``y``.
    dictionary_ : estimator, object or None
        The fitted provider, when ``dictionary`` is an estimator (a frozen
        one as given); the object itself when it exposes ``components_``
        without being an estimator; None otherwise.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.
    concept_names_ : ndarray of shape (n_latents,) or None
        The string column names of ``y`` (a DataFrame of concept labels),
        which name the codes (:meth:`get_feature_names_out`, and the columns
        of ``set_output(transform="pandas")``); with a given ``dictionary``,
        the concept names of its atoms when it is a fitted oracle or a coder
        that keeps an oracle's atoms; None otherwise. Column names mixing
        strings and other types are refused, as in ``X``.

    See Also
    --------
    FISTACoder : FISTA codes on any dictionary, or on one it learns.

    Examples
    --------
    >>> from skdict import OracleDictionary
    >>> from skdict.datasets import make_compositional
    >>> data = make_compositional(n_latents=20, n_active=3, n_samples=400,
    ...                           random_state=0)
    >>> oracle = OracleDictionary().fit(data.X_train, data.Z_train)
    >>> bool(abs(oracle.components_ - data.dictionary).max() < 1e-8)
    True
    >>> oracle.transform(data.X_ood).shape
    (200, 20)
    """

    _slips = (
        (
            "dictionary",
            is_count,
            "The 'dictionary' parameter of OracleDictionary takes atoms (an "
            "array, or an estimator exposing components_); got {value!r}, a "
            "number. Without atoms, the oracle estimates one per column of y: "
            "OracleDictionary().fit(X, y).",
        ),
        sparse_atoms_slip("dictionary", "OracleDictionary"),
    )

    _parameter_constraints: dict = {
        "dictionary": PROVIDER_CONSTRAINT,
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "positive": ["boolean"],
        "max_iter": [count_from(1)],
        # At tol >= 1 zero codes always pass: their gap is at most their
        # objective.
        "tol": [Interval(Real, 0, 1, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "device": DEVICE_CONSTRAINT,
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        dictionary: ArrayLike = None,
        *,
        alpha: Float = 0.1,
        positive: Bool = True,
        max_iter: Int = 1000,
        tol: Float = 1e-6,
        batch_size: Int | None = None,
        device: Device = "auto",
        verbose: Int | Bool = 0,
    ) -> None:
        self.dictionary = dictionary
        self.alpha = alpha
        self.positive = positive
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.device = device
        self.verbose = verbose

    @ignores_autocast
    @outside_inference_mode
    @fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: ArrayLike, y: ArrayLike = None) -> Self:
        """Check the given dictionary against ``X``, or estimate it from ``y``.

        An invalid hyper-parameter is refused before the fit starts, and a
        fit interrupted with Ctrl-C (``KeyboardInterrupt``), both leave the
        estimator as it was before the call; a fit that raises any other
        error leaves it unfitted.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data.
        y : array-like, torch.Tensor or sparse matrix of shape (n_samples, \
n_latents) or (n_samples,), default=None
            Ground-truth codes, required when ``dictionary`` is None (e.g.
            ``Z_train`` of :func:`~skdict.datasets.make_compositional`); a 1-D
            ``y`` is the codes of one latent. Class labels are not codes:
            one-hot encode them first (e.g.
            ``OneHotEncoder().fit_transform(labels.reshape(-1, 1))``, a sparse
            matrix), which makes each class's atom the mean of its samples.
            With a given dictionary, passed to the provider's ``fit``.

        Returns
        -------
        self : OracleDictionary
            The fitted oracle.
        """
        with forget_fit_on_failure(self):
            X_t, origin = validate_input(self, X, reset=True, device=self.device)
            if self.dictionary is None:
                if y is None:
                    raise ValueError(
                        "OracleDictionary without a dictionary requires y to be "
                        "passed, but the target y is None: y holds the ground-truth "
                        "codes, shape (n_samples, n_latents), from which the atoms "
                        "are estimated."
                    )
                components = self._estimate(X_t, y, previous=None, streaming=False)
                intercept = X_t.new_zeros(X_t.shape[1])
                self.dictionary_ = None
                self.concept_names_ = _string_columns(y)
            else:
                self._statistics, self._estimated = None, False
                self._dictionary_param = record_given(self.dictionary)
                resolved = resolve_dictionary(
                    self.dictionary,
                    X,
                    y,
                    device=X_t.device,
                    dtype=X_t.dtype,
                    n_features=self.n_features_in_,
                )
                components, intercept = resolved.components, resolved.intercept
                self.dictionary_ = resolved.estimator
                self.concept_names_ = concept_names_of(resolved.estimator)
            self.components_ = to_fitted(components, origin)
            self.intercept_ = to_fitted(intercept, origin)
            return self

    def _estimate(self, X_t, y, previous, streaming):
        """Least-squares atoms from the statistics of ``X_t`` on ``y`` (and earlier)."""
        _warn_if_class_labels(y)
        # In IEEE float32 for float32 data, whatever the process's matmul
        # precision (TF32 keeps 10 bits of each input).
        with ieee_float32_products():
            stats = code_statistics(X_t, y)
            if previous is not None:
                if stats.gram.shape != previous.gram.shape:
                    raise ValueError(
                        f"y has {stats.gram.shape[0]} latents, but the oracle "
                        f"estimates {previous.gram.shape[0]} from the batches so "
                        "far; call fit, or partial_fit on a clone, to start again."
                    )
                stats = previous.merged(stats)
            components = atoms_from_statistics(stats, X_t.dtype, silent_ok=streaming)
        silent = torch.nonzero(stats.gram.diagonal() == 0).flatten()
        if silent.numel():
            warn(
                f"Latents {_listed(silent)} have been zero in every batch passed "
                "to partial_fit so far, so their atoms are not determined yet: "
                "they stay zero, and transform refuses them, until a batch "
                "holds them.",
                UserWarning,
            )
        # Checked now, not at the first transform: least-squares atoms scale
        # as X over y (y = 1e200 codes gave atoms of norm 1e-200).
        determined = torch.nonzero(stats.gram.diagonal() > 0).flatten()
        check_atom_norms(
            components[determined],
            name="The dictionary estimated from X and y",
            remedy="the atoms scale as X over y: rescale y (the codes) or X",
        )
        # Z^T Z and Z^T X, n_latents x (n_latents + n_features) float64 values,
        # for partial_fit to continue from: always in a stream, and after fit
        # up to 32 MiB (a fit on 10,000 latents would otherwise keep 800 MB).
        kept = stats.gram.numel() + stats.cross.numel() <= _KEPT_STATISTICS
        self._statistics = stats if streaming or kept else None
        self._estimated = True
        return components

    @ignores_autocast
    @outside_inference_mode
    def partial_fit(self, X: ArrayLike, y: ArrayLike = None) -> Self:
        """Update the atoms estimated from ``y`` with one batch, or check ``X``.

        Without a dictionary, the least-squares statistics ``Z^T Z`` and
        ``Z^T X`` (in float64, ``n_latents x (n_latents + n_features)``
        values, kept on the estimator) gather the batches, so the atoms of
        data larger than memory are those :meth:`fit` would estimate from
        all of them at once, to rounding; a first call starts them, and a
        call after :meth:`fit` continues the fit's (which :meth:`fit` keeps
        while ``n_latents * (n_latents + n_features)`` is at most 2**22
        values, 32 MiB: about 1,700 latents at 768 features; beyond, start
        the stream with :meth:`partial_fit`, which keeps them whatever their
        size). Each call solves the ``n_latents`` system again (0.3 s at
        2,000 latents), so stream batches of many rows. A ``y`` with named
        columns must name them as the first batch did. Latents not yet active in any
        batch have zero atoms, with a warning, until a batch holds them;
        :meth:`transform` refuses them until then. With a given dictionary
        there is nothing to update: the first call is :meth:`fit`, later calls
        check ``X``. Changing between a given dictionary and none, or the
        dictionary itself, between calls is an error (call :meth:`fit` to
        start again; an array or provider changed in place is not always
        detected). A call that raises leaves the oracle as it was.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            A batch of data.
        y : array-like, torch.Tensor or sparse matrix of shape (n_samples, \
n_latents) or (n_samples,), default=None
            The batch's ground-truth codes, required without a dictionary
            (as in :meth:`fit`); with one, passed to the provider's ``fit`` on
            the first call.

        Returns
        -------
        self : OracleDictionary
            The updated oracle.
        """
        first = not hasattr(self, "components_")
        self._validate_params()
        if first and self.dictionary is not None:
            return self.fit(X, y)
        # Oracles pickled by earlier versions hold no record of how they were
        # fitted: the parameter says.
        estimated = getattr(self, "_estimated", self.dictionary is None)
        if not first and (self.dictionary is None) != estimated:
            raise ValueError(
                "partial_fit cannot switch between a given dictionary and one "
                "estimated from y: this oracle was fitted with "
                f"{'atoms estimated from y' if estimated else 'a given dictionary'}"
                f", but dictionary is now "
                f"{'None' if self.dictionary is None else 'set'}. Call fit, or "
                "partial_fit on a clone, to start again."
            )
        if self.dictionary is not None:
            record = getattr(self, "_dictionary_param", None)  # None: pickled before
            if record is not None and not is_same_given(self.dictionary, record):
                raise ValueError(
                    "partial_fit continues the dictionary given at its first call; "
                    "a new dictionary needs a new fit: call fit, or partial_fit "
                    "on a clone."
                )
            X_t, origin = validate_input(self, X, reset=False, device=self.device)
            store_in_batch_type(self, X_t, origin)
            return self
        with forget_fit_on_failure(self) if first else restored_on_failure(self):
            X_t, origin = validate_input(self, X, reset=first, device=self.device)
            if y is None:
                raise ValueError(
                    "OracleDictionary without a dictionary requires y to be "
                    "passed, but the target y is None: y holds the batch's "
                    "ground-truth codes, shape (n_samples, n_latents)."
                )
            previous = None if first else getattr(self, "_statistics", None)
            if not first and previous is None:
                why = (
                    f"for {self.components_.shape[0]} latents they take more "
                    f"than {_KEPT_STATISTICS} values"
                    if hasattr(self, "_statistics")
                    else "it was fitted by an earlier skdict version"
                )
                raise ValueError(
                    f"fit kept no statistics to continue from: {why}. Start the "
                    "stream with partial_fit on a clone (partial_fit keeps them "
                    "whatever their size)."
                )
            names = _string_columns(y)
            if not first:
                _check_concept_names(self.concept_names_, names)
                # The atoms keep the stream's first precision, as FISTACoder's
                # and SparseAutoencoder's streams do: one float32 batch
                # rounded float64 atoms, and every later transform with them.
                dtype = as_tensor(self.components_, device=X_t.device).dtype
                X_t = as_tensor(X_t, device=X_t.device, dtype=dtype, name="X")
                origin = origin._replace(dtype=dtype)
            components = self._estimate(X_t, y, previous, streaming=True)
            if first:
                self.dictionary_, self.concept_names_ = None, names
            # Both in the latest batch's array type.
            self.intercept_ = to_fitted(X_t.new_zeros(X_t.shape[1]), origin)
            self.components_ = to_fitted(components, origin)
        return self

    def _check_determined(self) -> None:
        stats = getattr(self, "_statistics", None)
        if stats is None:
            return
        silent = torch.nonzero(stats.gram.diagonal() == 0).flatten()
        if silent.numel():
            raise ValueError(
                f"The atoms of latents {_listed(silent)} are not determined: they "
                "have been zero in every batch passed to partial_fit so far. "
                "Pass batches where they are active first."
            )

    def _coder(self):
        # FISTACoder on this fitted oracle: the one home of FISTA coding. Its
        # module imports this one, hence the import at call time.
        from ._fista import FISTACoder

        # The atoms as weights that name no columns: X's were checked by the
        # oracle itself, and the coder's check of a frozen oracle repeated its
        # feature-name warnings.
        weights = SimpleNamespace(
            components_=self.components_, intercept_=self.intercept_
        )
        # Its output as skdict returns it, whatever the global
        # set_config(transform_output=...): the oracle's own output is
        # wrapped once, by its own transform (a DataFrame from the coder
        # crashed to_output).
        return FISTACoder(
            weights,
            alpha=self.alpha,
            positive=self.positive,
            max_iter=self.max_iter,
            tol=self.tol,
            batch_size=self.batch_size,
            device=self.device,
            verbose=self.verbose,
        ).set_output(transform="default")

    def fit_transform(self, X: ArrayLike, y: ArrayLike = None) -> Any:
        """Fit the oracle (see :meth:`fit`) and return the codes of ``X``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data.
        y : array-like, torch.Tensor or sparse matrix of shape (n_samples, \
n_latents) or (n_samples,), default=None
            Ground-truth codes, required when ``dictionary`` is None; with a
            given dictionary, passed to the provider's ``fit``.

        Returns
        -------
        codes : ndarray or torch.Tensor of shape (n_samples, n_components)
            In the array type, device and dtype of ``X`` (float64 for
            integer and NumPy float16 input, as in scikit-learn).
        """
        return self.fit(X, y).transform(X)

    @ignores_autocast
    def transform(self, X: ArrayLike) -> Any:
        """Sparse-code ``X`` on the oracle atoms with FISTA.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data to code; ``intercept_`` is subtracted first.

        Returns
        -------
        codes : ndarray or torch.Tensor of shape (n_samples, n_latents)
            In the array type, device and dtype of ``X`` (float64 for
            integer and NumPy float16 input, as in scikit-learn).
        """
        check_is_fitted(self)
        # Coding reads alpha, positive, max_iter, tol, ... as they are now.
        self._validate_params()
        check_same_namespace(X, self, attribute="components_", method="transform")
        self._check_determined()
        # Converted once: a dask array or a float16 memmap converted again by
        # the coder was computed or copied twice.
        X_t, origin = validate_input(self, X, reset=False, device=self.device)
        return to_output(self._coder().fit_transform(X_t), origin, self)

    @ignores_autocast
    def inverse_transform(self, X: ArrayLike) -> Any:
        """Reconstruct data from codes: ``X @ components_ + intercept_``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_latents)
            Codes.

        Returns
        -------
        X_reconstructed : ndarray or torch.Tensor of shape (n_samples, n_features)
            In the array type, device and dtype of the codes (float64
            for integer and NumPy float16 codes).
        """
        self._check_determined()
        return reconstruct(self, X)

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def _names_of_codes(self) -> np.ndarray | None:
        return getattr(self, "concept_names_", None)

    @ignores_autocast
    def score(self, X: ArrayLike, y: ArrayLike = None) -> float:
        """Negative mean squared reconstruction error of ``X`` (greater is better).

        ``-mean((X - inverse_transform(transform(X))) ** 2)`` over all entries,
        as :meth:`skdict.FISTACoder.score`, so that model selection without a
        ``scoring`` compares the oracle with learned dictionaries.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        score : float
            Minus the mean squared error; 0 for a perfect reconstruction.
        """
        check_is_fitted(self)
        self._validate_params()
        check_same_namespace(X, self, attribute="components_", method="score")
        self._check_determined()
        X_t, _ = validate_input(self, X, reset=False, device=self.device)
        # FISTACoder's own score, in the compute precision (a reconstruction
        # returned in float16 first would round it). Its partial_fit resolves
        # this oracle without coding, so X is coded once, and converted once.
        return self._coder().partial_fit(X_t).score(X_t)

    def __getstate__(self):
        return portable_state(super().__getstate__())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        take_providers_tags(tags, self.dictionary)
        # Without a dictionary, fit needs the ground-truth codes; y holds one
        # column of codes per latent.
        tags.target_tags.required |= self.dictionary is None
        tags.target_tags.multi_output = True
        return tags
