"""Scorers for ``scoring=`` in GridSearchCV and cross_validate.

Each scorer has scikit-learn's signature ``scorer(estimator, X, y)`` and
follows its convention that greater is better (losses are negated and named
``neg_...``). The ground-truth codes are passed as ``y``, so that
cross-validation splits them along with ``X``::

    GridSearchCV(FISTACoder(dictionary=D), {"alpha": [0.01, 0.1]},
                 scoring=mcc_scorer).fit(X, Z)

:func:`sklearn.metrics.make_scorer` feeds a metric with ``predict``-like
outputs only; :func:`make_code_scorer` feeds it with ``transform``'s codes, e.g.
``make_code_scorer(mcc_score, top_variance=True)``, or with ``predict``'s for
an estimator without ``transform`` -- a supervised probe from ``X`` to the
codes such as :class:`~sklearn.linear_model.RidgeCV`, the paper's linear
probe -- so that every method of the paper is scored alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline

from .._dictionary import _is_skdict_estimator, is_provider
from .._tensor import is_estimator
from ._matching import (
    _atoms,
    dictionary_similarity,
    mcc_score,
    refitted_estimator,
    support_scores,
)
from ._reconstruction import reconstruct, reconstruction_error

__all__ = [
    "make_code_scorer",
    "make_dictionary_similarity_scorer",
    "mcc_scorer",
    "neg_reconstruction_error_scorer",
    "support_f1_scorer",
]


#: Which method gives an estimator's codes, in order of preference.
CODE_METHODS = ("transform", "predict")


def estimator_codes(
    estimator: Any, X: Any, response_method: tuple[str, ...] = CODE_METHODS
) -> Any:
    """Codes of a transformer, or the predicted codes of a supervised probe.

    The first method of ``response_method`` the estimator has gives them.
    """
    method = next((m for m in response_method if hasattr(estimator, m)), None)
    if method is None:
        raise ValueError(
            f"{type(estimator).__name__} has none of the methods "
            f"{list(response_method)} that give codes."
        )
    if method == "transform":
        return estimator.transform(X)
    predicted = estimator.predict(X)
    if len(getattr(predicted, "shape", ())) != 2:
        # E.g. a Pipeline ending in a classifier: no transform, and predict
        # gives labels, not codes.
        raise ValueError(
            f"{type(estimator).__name__} has no transform, and its predict "
            f"returned shape {tuple(predicted.shape)}, not codes of shape "
            "(n_samples, n_latents). Score the coding part: for a Pipeline "
            "ending in a classifier, pipe[:-1]."
        )
    return predicted


def _support_f1(Z_true: Any, codes: Any) -> float:
    return support_scores(Z_true, codes)["f1"]


class _CodeScorer:
    """A scorer comparing the true codes ``y`` with an estimator's codes.

    ``scorer(estimator, X, y)`` returns ``sign * score_func(y, codes,
    **kwargs)``, greater is better, with ``codes = estimator.transform(X)``,
    or ``estimator.predict(X)`` for a probe without ``transform``. Made by
    :func:`make_code_scorer`.
    """

    # Scorers pickled by skdict releases before make_code_scorer took
    # greater_is_better or response_method hold neither: they score as before.
    sign = 1
    response_method = CODE_METHODS

    def __init__(
        self,
        score_func: Callable[..., float | dict[str, float]],
        kwargs: dict[str, Any],
        name: str | None = None,
        sign: int = 1,
        response_method: tuple[str, ...] = CODE_METHODS,
    ):
        self.score_func = score_func
        self.kwargs = kwargs
        self.name = name
        self.sign = sign
        self.response_method = response_method

    def __call__(
        self, estimator: Any, X: Any, y: Any = None
    ) -> float | dict[str, float]:
        """Score ``estimator``'s codes of ``X`` against the true codes ``y``.

        Parameters
        ----------
        estimator : estimator
            A fitted transformer, or a fitted probe regressing codes on ``X``.
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data to code.
        y : array-like or sparse matrix of shape (n_samples, n_latents)
            The true codes; required (None, scikit-learn's call without a
            target, raises a ValueError that says so). :class:`GridSearchCV`
            passes a sparse ``y`` through; scikit-learn's ``cross_validate``
            and ``cross_val_score`` refuse one, so pass them dense codes.

        Returns
        -------
        float or dict of str to float
            The metric, greater is better; a metric returning a dict gives
            each of its scores (``cross_validate`` reports each).
        """
        if y is None:
            raise ValueError(
                f"{self!r} compares codes with the true codes, passed as y; got "
                "y=None. Without true codes, score with a plain callable "
                "scorer(estimator, X, y=None), e.g. the mean number of active "
                "latents (see the user guide's Metrics page)."
            )
        if np.ndim(y) != 2:
            # Class labels, typically, from a search over a pipeline that ends
            # in a classifier: the metric's own message would name Z_true,
            # which the user never passed.
            raise ValueError(
                f"{self!r} compares codes with the true codes, passed as y of shape "
                f"(n_samples, n_latents); got y of shape {tuple(np.shape(y))}. Class "
                "labels cannot be scored so: fit the search with the true codes as "
                "y, or score the labels with a classification metric."
            )
        codes = estimator_codes(estimator, X, self.response_method)
        score = self.score_func(y, codes, **self.kwargs)
        # A metric may return a dict of scores, which scikit-learn's
        # cross_validate takes as several: a loss negates each.
        if self.sign > 0:
            return score
        if isinstance(score, dict):
            return {name: -value for name, value in score.items()}
        return -score

    def __repr__(self) -> str:
        if self.name is not None:
            return self.name
        # A functools.partial or a callable object has no __name__.
        func = getattr(self.score_func, "__name__", None) or repr(self.score_func)
        kwargs = "".join(f", {key}={value!r}" for key, value in self.kwargs.items())
        sign = ", greater_is_better=False" if self.sign < 0 else ""
        method, shown = "", self.response_method
        if shown != CODE_METHODS:
            method = f", response_method={shown[0] if len(shown) == 1 else shown!r}"
        return f"make_code_scorer({func}{sign}{method}{kwargs})"


def make_code_scorer(
    score_func: Callable[..., float | dict[str, float]],
    *,
    greater_is_better: bool = True,
    response_method: str | Sequence[str] = CODE_METHODS,
    **kwargs: Any,
) -> _CodeScorer:
    """Make a scorer from a metric comparing true codes with an estimator's codes.

    Parameters
    ----------
    score_func : callable
        ``score_func(Z_true, codes, **kwargs) -> float``, such as
        :func:`~skdict.metrics.mcc_score`, or a metric returning a dict of
        floats, such as :func:`~skdict.metrics.support_scores`: scikit-learn's
        ``cross_validate`` then reports each entry as a score of its own
        (a search needs ``refit`` to name the one that chooses). Such a
        scorer is the whole ``scoring=``: scikit-learn refuses it inside a
        dict of scorers.
    greater_is_better : bool, default=True
        Whether ``score_func`` is a score (True) or a loss (False), which the
        scorer negates, as :func:`sklearn.metrics.make_scorer` does: searches
        maximise scores.
    response_method : {"transform", "predict"} or tuple of them, \
default=("transform", "predict")
        The estimator's method that gives its codes, or methods in order of
        preference (the first the estimator has). The default suits
        transformers and probes regressing the codes on ``X`` (``RidgeCV``);
        a probe with both methods, such as
        :class:`~sklearn.cross_decomposition.PLSRegression`, whose
        ``transform`` gives its latent scores, predicts its codes with
        ``response_method="predict"``.
    **kwargs
        Passed to ``score_func``.

    Returns
    -------
    callable
        ``scorer(estimator, X, y)`` returning ``score_func(y,
        estimator.transform(X), **kwargs)`` (negated for a loss), with the
        true codes as ``y``
        (2-D, ``(n_samples, n_latents)``: a 1-D ``y``, such as class labels,
        is refused); by default ``estimator.predict(X)`` stands in for an
        estimator without ``transform`` (a probe regressing the codes on
        ``X``). A metric's dict comes back as a dict, each entry negated for
        a loss.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from skdict.metrics import make_code_scorer, mcc_score
    >>> scorer = make_code_scorer(mcc_score, top_variance=True)
    >>> scorer
    make_code_scorer(mcc_score, top_variance=True)
    >>> Z = np.random.default_rng(0).uniform(size=(50, 2))
    >>> X = Z @ np.array([[1.0, 1, 0], [0, 1, -1]])
    >>> round(scorer(PCA(n_components=2).fit(X), X, Z), 3)  # PCA mixes the latents
    0.789
    """
    # Checked now: a scorer failing at every call would leave GridSearchCV
    # (error_score=nan by default) with NaN scores and an arbitrary best.
    if not callable(score_func):
        raise TypeError(
            f"score_func must be a callable score_func(Z_true, codes, **kwargs); "
            f"got {type(score_func).__name__}."
        )
    try:
        # A decorator (functools.wraps) may take keywords of its own: those
        # its own signature names are the decorator's to check. Only a
        # decorator's: a plain function's required keyword, passed, was
        # dropped here and then reported missing.
        signature = inspect.signature(score_func)
        own = inspect.signature(score_func, follow_wrapped=False).parameters
        if own == signature.parameters:
            own = {}
        rest = {name: value for name, value in kwargs.items() if name not in own}
        signature.bind(None, None, **rest)
    except TypeError as error:
        name = getattr(score_func, "__name__", None) or repr(score_func)
        raise TypeError(
            f"make_code_scorer's keyword arguments {sorted(kwargs)} do not fit "
            f"{name}(Z_true, codes, ...): {error}"
        ) from None
    except ValueError:  # no signature to check (some builtins)
        pass
    if not isinstance(greater_is_better, (bool, np.bool_)):
        raise TypeError(f"greater_is_better must be a bool; got {greater_is_better!r}.")
    methods = (
        (response_method,) if isinstance(response_method, str) else response_method
    )
    try:
        methods = tuple(methods)
    except TypeError:
        methods = ()
    if not methods or any(m not in CODE_METHODS for m in methods):
        raise ValueError(
            f"response_method must be 'transform', 'predict' or a tuple of them "
            f"in order of preference; got {response_method!r}."
        )
    return _CodeScorer(
        score_func,
        kwargs,
        sign=1 if greater_is_better else -1,
        response_method=methods,
    )


#: :func:`~skdict.metrics.mcc_score` between ``y`` (the true codes) and
#: ``estimator.transform(X)`` (``predict`` for a probe without ``transform``).
#: Called as ``mcc_scorer(estimator, X, Z_true)``, with the 2-D true codes as
#: ``y`` (as a search passes them).
mcc_scorer = _CodeScorer(mcc_score, {}, name="mcc_scorer")

#: Mean per-sample F1 of the active sets (:func:`~skdict.metrics.support_scores`)
#: of ``y`` (the true codes) and ``estimator.transform(X)`` (``predict`` for
#: a probe without ``transform``). Called as
#: ``support_f1_scorer(estimator, X, Z_true)``, with the 2-D true codes as ``y``.
support_f1_scorer = _CodeScorer(_support_f1, {}, name="support_f1_scorer")


class _NegReconstructionErrorScorer:
    """A scorer: the negated reconstruction error of ``X`` through an estimator.

    ``scorer(estimator, X, y=None)`` returns minus the mean squared error of
    ``estimator.inverse_transform(estimator.transform(X))``; ``y`` is ignored,
    as reconstruction needs no ground truth.
    """

    def __call__(self, estimator: Any, X: Any, y: Any = None) -> float:
        """Score how well ``estimator`` reconstructs ``X`` (greater is better).

        Parameters
        ----------
        estimator : estimator
            A fitted estimator with ``transform`` and ``inverse_transform``.
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data to reconstruct.
        y : None
            Ignored.

        Returns
        -------
        float
            Minus the mean squared reconstruction error.
        """
        return -reconstruction_error(X, reconstruct(estimator, X))

    def __repr__(self) -> str:
        return "neg_reconstruction_error_scorer"


#: Negated mean squared reconstruction error of ``X`` through
#: ``estimator.transform`` and ``estimator.inverse_transform``. Called as
#: ``neg_reconstruction_error_scorer(estimator, X)`` (``y`` is ignored).
neg_reconstruction_error_scorer = _NegReconstructionErrorScorer()


class _DictionarySimilarityScorer:
    """A scorer: the similarity of a fitted estimator's atoms to known atoms.

    ``scorer(estimator, X=None, y=None)`` returns
    :func:`~skdict.metrics.dictionary_similarity` between the known atoms and
    ``estimator.components_``. Made by :func:`make_dictionary_similarity_scorer`.
    """

    def __init__(self, dictionary: Any):
        self.dictionary = dictionary

    def __call__(self, estimator: Any, X: Any = None, y: Any = None) -> float:
        """Score ``estimator``'s atoms against the known ones.

        Parameters
        ----------
        estimator : estimator
            A fitted estimator exposing ``components_``, or a
            :class:`~sklearn.pipeline.Pipeline` (nested or frozen too) whose
            first step is its coder (followed by a probe, say).
        X : object, default=None
            Ignored.
        y : object, default=None
            Ignored.

        Returns
        -------
        float
            The dictionary similarity; greater is better.
        """
        coder = _coding_step(estimator)
        try:
            return dictionary_similarity(self.dictionary, coder)
        except (TypeError, ValueError) as error:
            # Its messages use dictionary_similarity's names, which the
            # scorer's user never passed ("dictionary must be an array" for
            # an estimator without atoms, whose own dictionary was fine).
            error.add_note(
                "In make_dictionary_similarity_scorer: 'true_dictionary' is the "
                "scorer's known atoms, 'dictionary' the atoms of the scored "
                f"{type(coder).__name__}."
            )
            raise

    def __repr__(self) -> str:
        if hasattr(self.dictionary, "shape"):
            atoms = f"atoms of shape {tuple(self.dictionary.shape)}"
        elif hasattr(self.dictionary, "get_params"):  # a provider estimator
            atoms = f"the atoms of {type(self.dictionary).__name__}"
        else:
            atoms = f"atoms of shape {np.shape(self.dictionary)}"
        return f"make_dictionary_similarity_scorer(<{atoms}>)"


def _coding_step(estimator: Any) -> Any:
    """Return the step of a pipeline whose atoms code the pipeline's own input.

    A search over ``coder -> classifier`` scores the coder's atoms: the last
    of skdict's coders in the pipeline, or else its only step exposing
    ``components_`` (PCA before a probe). Steps after it (PCA reducing the
    codes) do not matter; atoms of a coder after other steps are in the units
    those steps made (a scaler's, PCA's), which the known atoms are not:
    refused rather than compared, as are several steps of other libraries
    exposing atoms, of which none can be told to be the coder.
    """
    estimator = refitted_estimator(estimator)
    if hasattr(estimator, "components_"):
        return estimator
    if not is_estimator(estimator):
        # The metric would name its own `dictionary` argument, which the
        # scorer's caller never passed ("Invalid dictionary: float() ...").
        raise TypeError(
            "a dictionary similarity scorer scores a fitted estimator exposing "
            f"components_, or a Pipeline of one; got {type(estimator).__name__}."
        )
    steps = _pipeline_steps(estimator)
    if steps is None:  # not a pipeline: the metric names what is missing
        return estimator
    coding = [i for i, step in enumerate(steps) if hasattr(step, "components_")]
    coders = [i for i in coding if _is_skdict_estimator(steps[i])]
    if coders:
        chosen = coders[-1]
    elif len(coding) == 1:
        chosen = coding[0]
    else:
        # PCA before a coder of another library, or after it: which one is
        # "the" coder cannot be told, and PCA's score would stand for both.
        names = ", ".join(type(steps[i]).__name__ for i in coding)
        raise TypeError(
            "a dictionary similarity scorer reads the atoms of the step that codes "
            "a Pipeline's input; "
            + (
                f"several of its steps expose components_ ({names})"
                if coding
                else "none of its steps exposes components_"
            )
            + ". Score the coding step fitted alone."
        )
    if chosen == 0:
        return steps[0]
    raise TypeError(
        "a dictionary similarity scorer reads the atoms of the step that codes a "
        f"Pipeline's input; its {type(steps[chosen]).__name__} codes the output "
        f"of {type(steps[0]).__name__}, in its units rather than the known "
        "atoms'. Score the coding step fitted alone."
    )


def _pipeline_steps(estimator: Any) -> list[Any] | None:
    """Return the steps of a (frozen, nested) pipeline, without passthroughs."""
    if isinstance(estimator, FrozenEstimator):
        estimator = estimator.estimator
    if not isinstance(estimator, Pipeline):
        return None
    steps = []
    for _, step in estimator.steps:
        if step is None or step == "passthrough":
            continue
        step = refitted_estimator(step)  # a fitted search as a step
        nested = _pipeline_steps(step)
        steps.extend([step] if nested is None else nested)
    return steps


def make_dictionary_similarity_scorer(dictionary: Any) -> _DictionarySimilarityScorer:
    """Make a scorer comparing an estimator's ``components_`` with known atoms.

    Parameters
    ----------
    dictionary : array-like, torch.Tensor of shape (n_latents, n_features), \
or dictionary provider
        The true atoms as rows (e.g. ``make_compositional(...).dictionary``),
        or an estimator whose ``components_`` hold them (e.g. a fitted
        :class:`~skdict.OracleDictionary`). An array is checked at once; an
        estimator is read at each call, so it may be fitted after the scorer
        is made, but must be fitted by then.

    Returns
    -------
    callable
        ``scorer(estimator, X=None, y=None)`` returning
        :func:`~skdict.metrics.dictionary_similarity` between ``dictionary``
        and the fitted ``estimator.components_`` (``X`` and ``y`` are unused):
        greater is better. For a :class:`~sklearn.pipeline.Pipeline` (nested
        or frozen too), the atoms of its coder, which must be its first step
        (steps after it, a reduction of the codes or a probe, may follow); a
        coder after other steps (a scaler, PCA) has atoms in their units, and
        is refused. A fitted search (nested cross-validation) is scored by
        its ``best_estimator_``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from skdict.metrics import make_dictionary_similarity_scorer
    >>> atoms = np.eye(3)[:2]
    >>> X = np.random.default_rng(0).standard_normal((50, 2)) * [3, 1] @ atoms
    >>> scorer = make_dictionary_similarity_scorer(atoms)
    >>> round(scorer(PCA(n_components=2).fit(X), X), 3)  # 50 samples: close axes
    0.998
    """
    if not is_provider(dictionary):
        # An array is checked now (an estimator may be fitted later).
        _atoms(dictionary, "dictionary", torch.device("cpu"))
    return _DictionarySimilarityScorer(dictionary)
