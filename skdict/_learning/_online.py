"""Online dictionary learning: mini-batches update running sufficient statistics.

:func:`online_dictionary_update` follows Mairal, Bach, Ponce & Sapiro (2010),
"Online learning for matrix factorization and sparse coding", JMLR 11: each
mini-batch's codes update running statistics ``A = sum z^T z`` and
``B = sum z^T x``, from which the atoms are refreshed by block coordinate
descent, so that ``partial_fit`` streams data larger than memory.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._fista._core import _sample_objective
from .._fista._driver import _certifiable_scale, fista_encode, refuse_mps
from .._tensor import (
    _all_finite,
)
from ._alternation import _coherence_bound, _unscaled_objective
from ._atoms import _DuplicateMemory, _worst_residuals
from ._updates import _code_statistics, block_coordinate_update


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
    the coherence bound of
    :func:`~skdict._learning._alternation.learn_dictionary` (forgetting
    their statistics), except atoms that came back twice after such
    resamplings, as there.
    A stream started from given atoms only refines them: an atom no sample
    has used yet keeps its place (``learn_dictionary`` re-initialises
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
        :class:`~skdict._learning._atoms.DuplicateRecords`; and ``"scale"``,
        the power of two the stream's data are multiplied by, when not 1);
        None starts afresh, at the scale of ``X``. Statistics of a full-batch
        fit (:func:`batch_statistics`) carry ``n_samples`` instead of
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

    refuse_mps(X.device)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    # A stream learns at one power-of-two scale, its first batch's (see
    # learn_dictionary; the lasso scales exactly): statistics of data of
    # 1e160 overflowed, and all atoms came back zero.
    if statistics is None:
        scale = _certifiable_scale(X)
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
    codes = fista_encode(
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
    >>> from skdict._learning._online import batch_statistics
    >>> Z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> stats = batch_statistics(Z, Z @ torch.eye(2))
    >>> stats["A"], stats["n_samples"]
    (tensor([[0.5000, 0.0000],
            [0.0000, 2.0000]]), 2)
    """
    n_samples = X.shape[0]
    # At the scale a stream of X would learn at (online_dictionary_update).
    scale = _certifiable_scale(X)
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
