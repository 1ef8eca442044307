r"""Per-sample sparse inference with FISTA, batched on torch, and :class:`FISTACoder`.

Each sample ``x`` (a row of ``X``) is coded independently by solving the lasso

.. math:: \min_z \; P(z) = \tfrac12 \lVert x - z D \rVert_2^2
          + \alpha \lVert z \rVert_1 \quad (\text{optionally } z \ge 0),

the objective of :func:`sklearn.decomposition.sparse_encode`, with ``D`` of shape
``(n_components, n_features)``. The solver is FISTA (Beck & Teboulle, 2009) with
gradient-based adaptive restart (O'Donoghue & Candès, 2015) inside a per-sample
working-set loop (as in Celer, Massias et al., 2018):

1. each sample keeps a small working set ``W`` of atoms: its current support plus
   the atoms whose optimality conditions are most violated;
2. FISTA solves the lasso restricted to ``W`` using the ``|W| x |W|`` Gram matrix
   of those atoms, with the step ``1 / L_W`` from a batched power iteration on it;
3. the duality gap of the *full* problem certifies each sample; samples whose
   gap is below ``tol * P(z)`` leave the batch (they stop costing compute), the
   others grow their working set and go back to step 2.

The duality gap uses the dual point ``theta = s r`` with ``r = x - zD`` the
residual and ``s = min(1, alpha / max_j r.d_j)`` (``max_j |r.d_j|`` without the
sign constraint), so ``P(z) - P* <= gap``: ``tol`` bounds the relative
suboptimality of every returned code.

When the working set would cover more than half of the atoms, the problem is
solved on all atoms directly, with the gradient in whichever of the Gram form
``z G - c`` (``G = D D^T``) and the residual form ``-(x - zD) D^T`` is cheaper.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from numbers import Integral, Real
from typing import NamedTuple

import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
    clone,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.utils._array_api import check_same_namespace
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._dictionary import is_provider, resolve_dictionary
from ._tensor import (
    as_tensor,
    portable_state,
    resolve_device,
    to_output,
    to_tensor,
    validate_input,
)

__all__ = ["FISTACoder", "FISTAResult", "fista_encode", "lipschitz_constant"]

# Elements per (n_samples, n_components)-shaped work array in one batch when
# ``batch_size=None``: 2**24 float32 values are 64 MiB, which keeps the peak of
# one batch (codes, correlations, residual correlations) near 200 MiB.
_AUTO_BATCH_ELEMENTS = 2**24
# Largest full Gram matrix (n_components ** 2 elements) precomputed and reused.
_MAX_GRAM_ELEMENTS = 2**24
# Smallest working set; it doubles when the support fills it.
_MIN_WORKING_SET = 32
# FISTA iterations between two duality-gap checks inside a working set.
_CHECK_EVERY = 10


class FISTAResult(NamedTuple):
    """Output of :func:`fista_encode`.

    Attributes
    ----------
    codes : torch.Tensor of shape (n_samples, n_components)
        The sparse codes.
    n_iter : torch.Tensor of shape (n_samples,)
        FISTA iterations spent on each sample (summed over working sets).
    converged : torch.Tensor of shape (n_samples,)
        Whether each sample's duality gap reached ``tol``.
    """

    codes: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor


def lipschitz_constant(
    dictionary: torch.Tensor, *, max_iter: int = 500, tol: float = 1e-7
) -> float:
    """Return ``||D||_2^2``, the Lipschitz constant of the lasso gradient.

    Power iteration on the smaller of ``D D^T`` and ``D^T D`` (applied as two
    products, never formed), so dictionaries with 65,536 atoms cost
    ``O(n_components * n_features)`` per iteration and no eigendecomposition.

    Parameters
    ----------
    dictionary : torch.Tensor of shape (n_components, n_features)
        The dictionary ``D``.
    max_iter : int, default=500
        Maximum number of power iterations.
    tol : float, default=1e-7
        Relative change of the estimate at which to stop.

    Returns
    -------
    float
        The estimate, inflated by ``10 * tol`` so the step ``1 / L`` errs on the
        safe side.

    Examples
    --------
    >>> import torch
    >>> from skdict._fista import lipschitz_constant
    >>> D = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> round(lipschitz_constant(D), 4)
    9.0
    """
    A = dictionary.to(torch.float64)
    if A.shape[0] < A.shape[1]:
        A = A.T
    # A^T A is the small side: (min(n_components, n_features),) square.
    generator = torch.Generator(device=A.device).manual_seed(0)
    v = torch.randn(A.shape[1], generator=generator, dtype=A.dtype, device=A.device)
    v /= v.norm()
    estimate = 0.0
    for _ in range(max_iter):
        w = A.T @ (A @ v)
        new_estimate = float(w @ v)
        norm = w.norm()
        if norm == 0:
            return 0.0
        v = w / norm
        if abs(new_estimate - estimate) <= tol * new_estimate:
            estimate = new_estimate
            break
        estimate = new_estimate
    return estimate * (1.0 + 10 * tol)


def _batched_lipschitz(gram: torch.Tensor, n_iter: int = 20) -> torch.Tensor:
    """Largest eigenvalue of each ``(w, w)`` Gram in a batch, shape ``(n, 1)``.

    Power iteration from the all-ones vector. The Rayleigh quotient is a lower
    bound; it is inflated by 5% and capped by the Gershgorin upper bound
    ``max_i sum_j |G_ij|`` so that the step errs on the safe side. A slightly
    large step only costs iterations: convergence is certified by the gap.
    """
    v = torch.ones(
        gram.shape[0], gram.shape[1], 1, dtype=gram.dtype, device=gram.device
    )
    for _ in range(n_iter):
        v = torch.bmm(gram, v)
        v = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(gram.dtype).tiny)
    rayleigh = (v * torch.bmm(gram, v)).sum(dim=1)
    gershgorin = gram.abs().sum(dim=2).amax(dim=1, keepdim=True)
    return torch.minimum(1.05 * rayleigh, gershgorin).clamp_min(
        torch.finfo(gram.dtype).tiny
    )


def _prox_l1(v: torch.Tensor, threshold: torch.Tensor, positive: bool) -> torch.Tensor:
    """Soft thresholding: the proximal operator of ``threshold * ||.||_1``."""
    if positive:
        return torch.clamp_min(v - threshold, 0.0)
    return torch.sign(v) * torch.clamp_min(v.abs() - threshold, 0.0)


def _dual_scaling(corr: torch.Tensor, alpha: float, positive: bool) -> torch.Tensor:
    """``s`` such that ``theta = s r`` is dual feasible, from ``corr = r D^T``."""
    worst = corr.amax(dim=1) if positive else corr.abs().amax(dim=1)
    return torch.clamp(alpha / worst.clamp_min(torch.finfo(corr.dtype).tiny), max=1.0)


def _gap_from_residual(
    x_sq: torch.Tensor,
    x_dot_r: torch.Tensor,
    r_sq: torch.Tensor,
    l1: torch.Tensor,
    scale: torch.Tensor,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Primal value and duality gap per sample.

    ``P = r.r / 2 + alpha |z|_1`` and, at the dual point ``theta = s r``,
    ``D(theta) = x.theta - theta.theta / 2`` (the lasso dual).
    """
    primal = 0.5 * r_sq + alpha * l1
    dual = scale * x_dot_r - 0.5 * scale**2 * r_sq
    return primal, primal - dual


def _compact(keep: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t[keep] for t in tensors]


def _bmv(gram: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Batched ``v_i G_i`` for ``gram`` ``(n, w, w)`` and ``v`` ``(n, w)``."""
    return torch.bmm(v.unsqueeze(1), gram).squeeze(1)


def _working_set_gap(gram, b, z, x_sq, alpha, positive):
    """Primal value and duality gap of the lasso restricted to a working set.

    From Gram quantities: ``r.r = x.x - 2 z.b + z G z``, ``x.r = x.x - z.b``
    and ``r.d_j = b_j - (z G)_j``, accumulated in float64.
    """
    gz = _bmv(gram, z).double()
    zd, bd = z.double(), b.double()
    z_dot_b = (zd * bd).sum(dim=1)
    r_sq = (x_sq - 2.0 * z_dot_b + (zd * gz).sum(dim=1)).clamp_min(0.0)
    scale = _dual_scaling(bd - gz, alpha, positive)
    return _gap_from_residual(
        x_sq, x_sq - z_dot_b, r_sq, zd.abs().sum(dim=1), scale, alpha
    )


def _newton_on_support(gram, b, z, alpha):
    """Exact minimiser on the face of ``z``'s support and signs.

    With the support ``S`` and signs ``s`` fixed the lasso is a quadratic whose
    minimiser solves ``G_SS z_S = b_S - alpha s_S``. When the solution keeps
    the signs it lies on the same face, so its objective is no larger than
    ``z``'s; it is then the exact optimum as soon as the atoms outside ``S``
    satisfy the optimality conditions, which the gap check decides. Rows whose
    system is singular or whose signs flip are flagged as not usable.
    """
    support = (z != 0).to(z.dtype)
    sign = torch.sign(z)
    system = gram * (support.unsqueeze(2) * support.unsqueeze(1))
    system = system + torch.diag_embed(1.0 - support)
    solution, info = torch.linalg.solve_ex(system, (b - alpha * sign) * support)
    usable = (info == 0) & ((solution * sign > 0) | (support == 0)).all(dim=1)
    return solution * support, usable


def _fista_working_set(
    gram: torch.Tensor,
    b: torch.Tensor,
    z: torch.Tensor,
    x_sq: torch.Tensor,
    alpha: float,
    positive: bool,
    tol: float,
    max_iter: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FISTA with restart on per-sample problems ``0.5 zGz - b.z + alpha |z|_1``.

    ``gram`` is ``(n, w, w)``. Every ``_CHECK_EVERY`` iterations, each sample's
    working-set gap is checked; a sample whose support has not changed since
    the last check also tries the exact Newton step on its support
    (:func:`_newton_on_support`), which typically ends it at once. Each sample
    stops at its own gap or at its own iteration budget ``max_iter``. Returns
    the codes and the iterations spent per sample.
    """
    n = z.shape[0]
    out = z.clone()
    spent = torch.zeros(n, dtype=torch.long, device=z.device)
    rows = torch.arange(n, device=z.device)
    step = 1.0 / _batched_lipschitz(gram)
    threshold = alpha * step
    y, z_prev = z.clone(), z.clone()
    t = torch.ones(n, 1, dtype=z.dtype, device=z.device)
    budget = max_iter.clone()
    next_stop = int(budget.min())
    last_support = z != 0
    it = 0
    while rows.numel():
        grad = _bmv(gram, y) - b
        z_new = _prox_l1(y - step * grad, threshold, positive)
        # Gradient-based restart: drop the momentum when it points uphill.
        restart = ((y - z_new) * (z_new - z_prev)).sum(dim=1, keepdim=True) > 0
        t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        beta = torch.where(restart, 0.0, (t - 1.0) / t_new)
        t = torch.where(restart, 1.0, t_new)
        y = z_new + beta * (z_new - z_prev)
        z_prev = z_new
        it += 1
        if it % _CHECK_EVERY and it < next_stop:
            continue
        primal, gap = _working_set_gap(gram, b, z_new, x_sq, alpha, positive)
        done = gap <= tol * primal
        support = z_new != 0
        stable = torch.nonzero(~done & (support == last_support).all(dim=1)).flatten()
        last_support = support
        if stable.numel():
            polished, usable = _newton_on_support(
                gram[stable], b[stable], z_new[stable], alpha
            )
            p_new, g_new = _working_set_gap(
                gram[stable], b[stable], polished, x_sq[stable], alpha, positive
            )
            accept = usable & (p_new <= primal[stable])
            better = stable[accept]
            z_new[better] = y[better] = z_prev[better] = polished[accept]
            t[better] = 1.0
            done[better] = g_new[accept] <= tol * p_new[accept]
        done |= it >= budget
        if bool(done.any()):
            out[rows[done]] = z_new[done]
            spent[rows[done]] = it
            keep = ~done
            (
                rows,
                gram,
                b,
                y,
                z_prev,
                t,
                step,
                threshold,
                x_sq,
                budget,
                last_support,
            ) = _compact(
                keep,
                [
                    rows,
                    gram,
                    b,
                    y,
                    z_prev,
                    t,
                    step,
                    threshold,
                    x_sq,
                    budget,
                    last_support,
                ],
            )
            if rows.numel():
                next_stop = int(budget.min())
    return out, spent


def _fista_all_atoms(
    apply_gram: Callable[[torch.Tensor], torch.Tensor],
    c: torch.Tensor,
    z: torch.Tensor,
    x_sq: torch.Tensor,
    lipschitz: float,
    alpha: float,
    positive: bool,
    tol: float,
    max_iter: int,
    gap_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FISTA with restart on all atoms with a shared gradient operator.

    ``apply_gram(v) = v G`` (Gram or residual form); ``gap_fn(z, rows)`` gives the
    exact primal and gap of the rows still running. Returns codes, iterations
    and convergence flags per sample.
    """
    n = z.shape[0]
    out = z.clone()
    spent = torch.full((n,), max_iter, dtype=torch.long, device=z.device)
    converged = torch.zeros(n, dtype=torch.bool, device=z.device)
    rows = torch.arange(n, device=z.device)
    step = 1.0 / lipschitz
    threshold = alpha * step
    y, z_prev = z.clone(), z.clone()
    t = torch.ones(n, 1, dtype=z.dtype, device=z.device)
    for it in range(1, max_iter + 1):
        grad = apply_gram(y) - c
        z_new = _prox_l1(y - step * grad, threshold, positive)
        restart = ((y - z_new) * (z_new - z_prev)).sum(dim=1, keepdim=True) > 0
        t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        beta = torch.where(restart, 0.0, (t - 1.0) / t_new)
        t = torch.where(restart, 1.0, t_new)
        y = z_new + beta * (z_new - z_prev)
        z_prev = z_new
        if it % _CHECK_EVERY and it < max_iter:
            continue
        primal, gap = gap_fn(z_new, rows)
        done = gap <= tol * primal
        out[rows] = z_new
        if bool(done.any()):
            converged[rows[done]] = True
            spent[rows[done]] = it
            keep = ~done
            rows, c, y, z_prev, t = _compact(keep, [rows, c, y, z_prev, t])
            if not rows.numel():
                break
    return out, spent, converged


class _Problem:
    """One batch of lasso problems sharing a dictionary, with cached products."""

    def __init__(self, X, D, gram, alpha, positive):
        self.X, self.D, self.gram = X, D, gram
        self.alpha, self.positive = alpha, positive
        self.x_sq = (X.double() ** 2).sum(dim=1)
        self.c = X @ D.T  # correlations x.d_j, the linear term of the lasso

    def certify(self, z: torch.Tensor, rows: torch.Tensor | None = None):
        """Exact primal, gap and residual correlations of the full problem."""
        X = self.X if rows is None else self.X[rows]
        x_sq = self.x_sq if rows is None else self.x_sq[rows]
        r = X - z @ self.D
        corr = r @ self.D.T
        rd = r.double()
        scale = _dual_scaling(corr, self.alpha, self.positive)
        primal, gap = _gap_from_residual(
            x_sq,
            (X.double() * rd).sum(dim=1),
            (rd * rd).sum(dim=1),
            z.double().abs().sum(dim=1),
            scale,
            self.alpha,
        )
        return primal, gap, corr

    def sub_gram(self, atoms: torch.Tensor) -> torch.Tensor:
        """Per-sample Gram ``(n, w, w)`` of the atoms indexed by ``atoms``."""
        if self.gram is not None:
            return self.gram[atoms.unsqueeze(2), atoms.unsqueeze(1)]
        D_w = self.D[atoms]
        return torch.bmm(D_w, D_w.transpose(1, 2))


def _violation_scores(corr, z, alpha, positive):
    """Rank atoms for the working set: the support first, then KKT violations."""
    score = corr - alpha if positive else corr.abs() - alpha
    return torch.where(z != 0, torch.inf, score)


def _solve_working_sets(
    problem: _Problem,
    z_rows: torch.Tensor,
    corr: torch.Tensor,
    rows: torch.Tensor,
    w: int,
    tol: float,
    budget: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve each row's lasso restricted to its ``w`` highest-ranked atoms.

    Rows are processed in chunks so that the per-sample Gram matrices hold at
    most ``_AUTO_BATCH_ELEMENTS`` values.
    """
    alpha, positive = problem.alpha, problem.positive
    atoms = torch.topk(
        _violation_scores(corr, z_rows, alpha, positive), w, dim=1, sorted=False
    ).indices
    new_z = torch.zeros_like(z_rows)
    spent = torch.zeros(rows.numel(), dtype=torch.long, device=z_rows.device)
    chunk = max(1, _AUTO_BATCH_ELEMENTS // (w * w))
    for start in range(0, rows.numel(), chunk):
        part = slice(start, start + chunk)
        z_w, spent[part] = _fista_working_set(
            problem.sub_gram(atoms[part]),
            problem.c[rows[part].unsqueeze(1), atoms[part]],
            z_rows[part].gather(1, atoms[part]),
            problem.x_sq[rows[part]],
            alpha,
            positive,
            tol,
            budget[part],
        )
        new_z[part].scatter_(1, atoms[part], z_w)
    return new_z, spent


def _encode_batch(
    problem: _Problem,
    z: torch.Tensor,
    tol: float,
    max_iter: int,
    lipschitz: Callable[[], float],
) -> FISTAResult:
    n, m = z.shape
    n_features = problem.D.shape[1]
    spent = torch.zeros(n, dtype=torch.long, device=z.device)
    converged = torch.zeros(n, dtype=torch.bool, device=z.device)
    rows = torch.arange(n, device=z.device)
    # Some lasso solution has at most n_features non-zeros (Tibshirani, 2013,
    # "The lasso problem and uniqueness", Lemma 14), so working sets beyond
    # 2 * n_features buy nothing: past that, all atoms are used at once.
    w_cap = min(m, max(_MIN_WORKING_SET, 2 * n_features))
    support = int((z != 0).sum(dim=1).max()) if n else 0
    w = min(w_cap, max(_MIN_WORKING_SET, 2 * support))

    primal, gap, corr = problem.certify(z)
    while True:
        done = gap <= tol * primal
        converged[rows[done]] = True
        keep = ~done & (spent[rows] < max_iter)
        rows, corr = rows[keep], corr[keep]
        if not rows.numel() or 2 * w >= m:
            break
        z_rows, it = _solve_working_sets(
            problem, z[rows], corr, rows, w, tol, max_iter - spent[rows]
        )
        z[rows] = z_rows
        spent[rows] += it
        primal, gap, corr = problem.certify(z_rows, rows)
        support = int((z_rows != 0).sum(dim=1).max())
        if 2 * support > w:
            w = min(w_cap, 2 * support)
        if support >= w_cap:
            w = m  # dense solutions: hand over to the all-atoms solver

    if rows.numel() and (spent[rows] < max_iter).any():
        # All atoms at once; the Gram form costs m^2 per sample and iteration,
        # the residual form 2 m n_features: use the cheaper one.
        D, G = problem.D, problem.gram
        if G is not None and m <= 2 * n_features:

            def apply_gram(v):
                return v @ G
        else:

            def apply_gram(v):
                return (v @ D) @ D.T

        def gap_fn(z_rows, active):
            primal, gap, _ = problem.certify(z_rows, rows[active])
            return primal, gap

        z_rows, it, conv = _fista_all_atoms(
            apply_gram,
            problem.c[rows],
            z[rows],
            problem.x_sq[rows],
            lipschitz(),
            problem.alpha,
            problem.positive,
            tol,
            int((max_iter - spent[rows]).max()),
            gap_fn,
        )
        z[rows] = z_rows
        spent[rows] += it
        converged[rows] = conv
    return FISTAResult(z, spent, converged)


def _effective_tol(tol: float, dtype: torch.dtype) -> float:
    # A relative gap below a few machine epsilons is not measurable.
    return max(tol, 100 * torch.finfo(dtype).eps)


def fista_encode(
    X: torch.Tensor,
    dictionary: torch.Tensor,
    *,
    alpha: float = 0.1,
    positive: bool = False,
    init: torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    batch_size: int | None = None,
    verbose: int = 0,
) -> FISTAResult:
    """Sparse-code the rows of ``X`` on ``dictionary`` with working-set FISTA.

    Solves, per sample, ``min_z 0.5 ||x - z D||^2 + alpha ||z||_1`` (with
    ``z >= 0`` when ``positive``). See the module docstring for the algorithm.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Data, float32 or float64.
    dictionary : torch.Tensor of shape (n_components, n_features)
        Atoms as rows, same device and dtype as ``X``.
    alpha : float, default=0.1
        Weight of the L1 penalty.
    positive : bool, default=False
        Constrain the codes to be non-negative.
    init : torch.Tensor of shape (n_samples, n_components), default=None
        Warm start; zeros when None.
    max_iter : int, default=1000
        Maximum number of FISTA iterations per sample.
    tol : float, default=1e-6
        Stop a sample when its duality gap is at most ``tol`` times its
        objective (floored at a few machine epsilons of the dtype).
    batch_size : int, default=None
        Samples coded at once; bounds peak memory to ``O(batch_size *
        n_components)``. None picks a batch of about ``2**24 / n_components``.
    verbose : int, default=0
        Show a progress bar over batches when positive.

    Returns
    -------
    FISTAResult
        Codes, iterations and convergence flags per sample.

    Examples
    --------
    >>> import torch
    >>> from skdict._fista import fista_encode
    >>> D = torch.eye(3, dtype=torch.float64)
    >>> X = torch.tensor([[1.0, -0.05, 0.5]], dtype=torch.float64)
    >>> fista_encode(X, D, alpha=0.1).codes
    tensor([[0.9000, -0.0000, 0.4000]], dtype=torch.float64)
    """
    n_samples, n_components = X.shape[0], dictionary.shape[0]
    dtype, device = X.dtype, X.device
    tol = _effective_tol(tol, dtype)
    if batch_size is None:
        batch_size = max(1, _AUTO_BATCH_ELEMENTS // max(n_components, 1))
    gram = None
    if n_components**2 <= _MAX_GRAM_ELEMENTS:
        gram = dictionary @ dictionary.T
    L_cache: list[float] = []

    def lipschitz() -> float:
        if not L_cache:
            L_cache.append(lipschitz_constant(dictionary))
        return L_cache[0]

    codes = torch.zeros(n_samples, n_components, dtype=dtype, device=device)
    n_iter = torch.zeros(n_samples, dtype=torch.long, device=device)
    converged = torch.zeros(n_samples, dtype=torch.bool, device=device)
    starts = range(0, n_samples, batch_size)
    for start in tqdm(starts, disable=verbose <= 0 or len(starts) < 2, desc="FISTA"):
        stop = min(start + batch_size, n_samples)
        z0 = (
            torch.zeros(stop - start, n_components, dtype=dtype, device=device)
            if init is None
            else init[start:stop].to(device=device, dtype=dtype).clone()
        )
        if positive:
            z0.clamp_(min=0.0)
        problem = _Problem(X[start:stop], dictionary, gram, alpha, positive)
        result = _encode_batch(problem, z0, tol, max_iter, lipschitz)
        codes[start:stop] = result.codes
        n_iter[start:stop] = result.n_iter
        converged[start:stop] = result.converged
    return FISTAResult(codes, n_iter, converged)


class FISTACoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Sparse coding by per-sample FISTA, on CPU or GPU.

    Codes each sample ``x`` by solving the lasso
    ``min_z 0.5 * ||x - z @ components_||^2 + alpha * ||z||_1`` (with ``z >= 0``
    when ``positive``), the objective of
    :func:`sklearn.decomposition.sparse_encode`, to a certified relative
    duality gap ``tol``. The solver is batched over samples: every sample stops
    at its own tolerance, works on a small set of candidate atoms, and uses an
    accelerated proximal gradient with adaptive momentum restart.

    Parameters
    ----------
    dictionary : array-like, torch.Tensor or estimator, default=None
        The atoms, shape ``(n_components, n_features)``, or a *dictionary
        provider*: an estimator exposing ``components_`` (and optionally
        ``intercept_``, or ``mean_`` for scikit-learn's PCA family), cloned and
        fitted on ``X, y`` in :meth:`fit`, or a fitted one wrapped in
        :class:`sklearn.frozen.FrozenEstimator`, used as is. Samples are coded
        after subtracting the provider's intercept. ``None`` learns the atoms
        from ``X`` with DL-FISTA: rounds of FISTA codes alternate with the
        closed-form least-squares dictionary update, atoms kept at unit norm
        (see :func:`skdict._dictionary.learn_dictionary`); :meth:`partial_fit`
        learns them online from mini-batches instead.
    n_components : int, default=None
        Number of atoms to learn when ``dictionary`` is None; None takes the
        number of atoms of ``init``, else ``n_features``.
    alpha : float, default=0.1
        Weight of the L1 penalty.
    positive : bool, default=False
        Constrain the codes to be non-negative.
    max_iter : int, default=1000
        Maximum number of FISTA iterations per sample.
    tol : float, default=1e-6
        A sample is coded once its duality gap is at most ``tol`` times its
        objective; this bounds the relative suboptimality of its code. The
        tolerance is floored at ``100 * eps`` of the data's dtype (about
        ``1.2e-5`` in float32), below which the gap is not measurable. When
        learning, also the relative change of the dictionary between two
        rounds, ``||D_new - D||_F / ||D||_F``, at which learning stops.
    init : array-like, torch.Tensor or estimator, default=None
        Warm start for the codes: an array of shape ``(n_samples,
        n_components)`` matching the ``X`` being coded, or an estimator whose
        ``transform(X)`` gives such codes (cloned and fitted on ``X, y`` in
        :meth:`fit`, or used as is when wrapped in
        :class:`~sklearn.frozen.FrozenEstimator`), e.g. a fitted
        :class:`SparseAutoencoder` sharing the dictionary. When ``dictionary``
        is None, ``init`` is instead the dictionary learning starts from:
        atoms of shape ``(n_components, n_features)`` or a dictionary provider,
        e.g. a fitted :class:`SparseAutoencoder` wrapped in
        :class:`~sklearn.frozen.FrozenEstimator` (its intercept is not used:
        learned dictionaries reconstruct around zero). None draws the atoms
        from the data.
    batch_size : int, default=None
        Number of samples coded at once; peak memory grows as
        ``batch_size * n_components``. None picks about ``2**24 / n_components``.
    device : str or torch.device, default="auto"
        Where to compute. ``"auto"`` uses a tensor input's own device, else
        CUDA when available, else the CPU. Outputs always come back in the
        input's array type, device and dtype.
    dict_max_iter : int, default=100
        Maximum number of dictionary-learning rounds when ``dictionary`` is None.
    random_state : int, RandomState instance or None, default=None
        Seed for dictionary learning: the atoms drawn from the data at the
        start and those re-initialised during learning.
    verbose : int, default=0
        Show progress bars when positive.

    Attributes
    ----------
    components_ : ndarray or torch.Tensor of shape (n_components, n_features)
        The dictionary atoms, in the array type of the data given to :meth:`fit`.
    intercept_ : ndarray or torch.Tensor of shape (n_features,)
        Offset the data is reconstructed around: ``X ≈ codes @ components_ +
        intercept_`` (zero for a plain array dictionary).
    dictionary_ : estimator or None
        The fitted dictionary provider, when ``dictionary`` is an estimator.
    init_ : estimator or None
        The fitted warm-start estimator, when ``init`` is an estimator.
    n_iter_ : int
        With a given dictionary, the largest number of FISTA iterations any
        training sample needed in :meth:`fit`. When learning, the number of
        rounds :meth:`fit` ran, or of :meth:`partial_fit` calls.
    history_ : list of dict
        When learning, one record per round of :meth:`fit` (or per
        :meth:`partial_fit` call): ``objective`` (mean over the samples of
        ``0.5 * ||x - z @ D||^2 + alpha * ||z||_1`` after the round's coding),
        ``dictionary_change`` (relative Frobenius change of the atoms) and
        ``n_unused`` (atoms no sample used, re-initialised); :meth:`fit` also
        records ``alpha``, ``n_resampled``, ``coding_tol`` and ``fista_iter``
        (see :func:`skdict._dictionary.learn_dictionary`).
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.

    See Also
    --------
    sklearn.decomposition.SparseCoder : CPU sparse coding with coordinate
        descent, LARS or OMP.

    Examples
    --------
    >>> import numpy as np
    >>> from skdict import FISTACoder
    >>> rng = np.random.default_rng(0)
    >>> D = rng.standard_normal((8, 5))
    >>> D /= np.linalg.norm(D, axis=1, keepdims=True)
    >>> X = np.array([[1.0, 0, 0, 0, 0, 0, 0, 0.5]]) @ D
    >>> coder = FISTACoder(dictionary=D, alpha=0.01, positive=True).fit(X)
    >>> codes = coder.transform(X)
    >>> codes.shape
    (1, 8)
    >>> bool(np.abs(coder.inverse_transform(codes) - X).max() < 0.05)
    True
    """

    _parameter_constraints: dict = {
        "dictionary": ["array-like", HasMethods(["fit"]), None],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "positive": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "init": ["array-like", HasMethods(["transform"]), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "device": [str, torch.device],
        "dict_max_iter": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        dictionary=None,
        *,
        n_components=None,
        alpha=0.1,
        positive=False,
        max_iter=1000,
        tol=1e-6,
        init=None,
        batch_size=None,
        device="auto",
        dict_max_iter=100,
        random_state=None,
        verbose=0,
    ):
        self.dictionary = dictionary
        self.n_components = n_components
        self.alpha = alpha
        self.positive = positive
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.batch_size = batch_size
        self.device = device
        self.dict_max_iter = dict_max_iter
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        """Resolve (or learn) the dictionary and code the training data.

        With a given dictionary, fitting resolves the provider and codes ``X``
        once to report ``n_iter_``; :meth:`fit_transform` returns those codes
        at no extra cost.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Training data.
        y : array-like, default=None
            Passed to the dictionary and init estimators' ``fit``.

        Returns
        -------
        self : FISTACoder
            The fitted coder.
        """
        self._fit(X, y)
        return self

    def fit_transform(self, X, y=None):
        """Fit to ``X`` and return its codes (coded once).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Training data.
        y : array-like, default=None
            Passed to the dictionary and init estimators' ``fit``.

        Returns
        -------
        codes : ndarray or torch.Tensor of shape (n_samples, n_components)
            In the array type, device and dtype of ``X``.
        """
        codes = self._fit(X, y)
        # A learned dictionary is known only once learning ends.
        return self.transform(X) if codes is None else codes

    @_fit_context(prefer_skip_nested_validation=False)
    def _fit(self, X, y):
        X_t, origin = validate_input(self, X, reset=True, device=self.device)
        if self.dictionary is None:
            self._learn(X, X_t, y, origin)
            return None
        resolved = resolve_dictionary(
            self.dictionary,
            X,
            y,
            device=X_t.device,
            dtype=X_t.dtype,
            n_features=self.n_features_in_,
        )
        self.dictionary_ = resolved.estimator
        self.init_ = self._fit_init(X, y)
        self.components_ = to_output(resolved.components, origin)
        self.intercept_ = to_output(resolved.intercept, origin)
        result = self._encode(X, X_t, resolved.components, resolved.intercept)
        self.n_iter_ = int(result.n_iter.max())
        return to_output(result.codes, origin)

    def _learn(self, X, X_t, y, origin):
        # dictionary=None: DL-FISTA on X, math in skdict._dictionary (imported
        # here because this module's imports belong to the solver's code).
        from ._dictionary import learn_dictionary, torch_generator

        init = self._starting_dictionary(X, X_t, y)
        result = learn_dictionary(
            X_t,
            self._n_atoms(X_t, init),
            alpha=self.alpha,
            positive=self.positive,
            init=init,
            dict_max_iter=self.dict_max_iter,
            tol=self.tol,
            max_iter=self.max_iter,
            batch_size=self.batch_size,
            generator=torch_generator(self.random_state),
            verbose=self.verbose,
        )
        self._store_learned(result.components, origin)
        self.history_ = result.history
        self.n_iter_ = len(self.history_)
        self._online_statistics = None

    def _starting_dictionary(self, X, X_t, y):
        self.init_ = None
        if self.init is None:
            return None
        resolved = resolve_dictionary(
            self.init,
            X,
            y,
            device=X_t.device,
            dtype=X_t.dtype,
            n_features=self.n_features_in_,
            name="init",
        )
        self.init_ = resolved.estimator
        return resolved.components

    def _n_atoms(self, X_t, init):
        if init is None:
            return self.n_components or X_t.shape[1]
        if self.n_components not in (None, init.shape[0]):
            raise ValueError(
                f"init has {init.shape[0]} atoms but n_components="
                f"{self.n_components}; they must agree."
            )
        return init.shape[0]

    def _store_learned(self, components, origin):
        self.dictionary_ = None
        self.components_ = to_output(components, origin)
        self.intercept_ = to_output(components.new_zeros(components.shape[1]), origin)

    @_fit_context(prefer_skip_nested_validation=False)
    def partial_fit(self, X, y=None):
        """Update a learned dictionary with one mini-batch.

        Online dictionary learning (Mairal et al., 2010): the batch is coded
        with FISTA, its statistics join running sums, and the atoms are
        refreshed by block coordinate descent
        (:func:`skdict._dictionary.online_dictionary_update`), so data larger
        than memory can be streamed. The first call starts from ``init`` or
        from atoms drawn from the batch. With a given ``dictionary`` there is
        nothing to learn: the first call resolves it as :meth:`fit` does,
        without coding, and later calls only check ``X``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            A mini-batch.
        y : array-like, default=None
            Passed to the ``init`` (or ``dictionary``) estimator's ``fit`` on
            the first call.

        Returns
        -------
        self : FISTACoder
            The updated coder.
        """
        from ._dictionary import (
            initial_dictionary,
            online_dictionary_update,
            torch_generator,
        )

        first = not hasattr(self, "components_")
        X_t, origin = validate_input(self, X, reset=first, device=self.device)
        if self.dictionary is not None:
            if first:
                resolved = resolve_dictionary(
                    self.dictionary,
                    X,
                    y,
                    device=X_t.device,
                    dtype=X_t.dtype,
                    n_features=self.n_features_in_,
                )
                self.dictionary_ = resolved.estimator
                self.init_ = self._fit_init(X, y)
                self.components_ = to_output(resolved.components, origin)
                self.intercept_ = to_output(resolved.intercept, origin)
            return self
        generator = torch_generator(self.random_state)
        if first:
            init = self._starting_dictionary(X, X_t, y)
            if init is None:
                init = initial_dictionary(X_t, self._n_atoms(X_t, None), generator)
            else:
                self._n_atoms(X_t, init)
            self.history_ = []
        else:
            if hasattr(self, "_rng_state"):
                generator.set_state(self._rng_state)
            init = self._dictionary_tensors(X_t)[0]
        components, statistics, record = online_dictionary_update(
            X_t,
            init,
            getattr(self, "_online_statistics", None),
            alpha=self.alpha,
            positive=self.positive,
            max_iter=self.max_iter,
            tol=self.tol,
            batch_size=self.batch_size,
            generator=generator,
        )
        self._store_learned(components, origin)
        self._online_statistics = statistics
        self._rng_state = generator.get_state()
        self.history_.append(record)
        self.n_iter_ = len(self.history_)
        return self

    def _fit_init(self, X, y):
        if not is_provider(self.init):
            return None
        if isinstance(self.init, FrozenEstimator):
            return self.init
        return clone(self.init).fit(X, y)

    def _initial_codes(self, X, X_t: torch.Tensor) -> torch.Tensor | None:
        n_components = self._n_features_out
        if self.init is None or self.dictionary is None:
            # When learning, init is the starting dictionary, not codes.
            return None
        if self.init_ is not None:
            init, name = self.init_.transform(X), "init.transform(X)"
        else:
            init, name = self.init, "init"
        codes = as_tensor(init, device=X_t.device, dtype=X_t.dtype, name=name)
        if tuple(codes.shape) != (X_t.shape[0], n_components):
            raise ValueError(
                f"{name} must have shape (n_samples, n_components) = "
                f"({X_t.shape[0]}, {n_components}); got {tuple(codes.shape)}."
            )
        return codes

    def _dictionary_tensors(self, X_t: torch.Tensor):
        D = as_tensor(self.components_, device=X_t.device, dtype=X_t.dtype)
        b = as_tensor(self.intercept_, device=X_t.device, dtype=X_t.dtype, ndim=1)
        return D, b

    def transform(self, X):
        """Sparse-code ``X``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data to code; ``intercept_`` is subtracted first.

        Returns
        -------
        codes : ndarray or torch.Tensor of shape (n_samples, n_components)
            In the array type, device and dtype of ``X``.
        """
        check_is_fitted(self)
        check_same_namespace(X, self, attribute="components_", method="transform")
        X_t, origin = validate_input(self, X, reset=False, device=self.device)
        return to_output(
            self._encode(X, X_t, *self._dictionary_tensors(X_t)).codes, origin
        )

    def _encode(self, X, X_t: torch.Tensor, D: torch.Tensor, b: torch.Tensor):
        result = fista_encode(
            X_t - b,
            D,
            alpha=self.alpha,
            positive=self.positive,
            init=self._initial_codes(X, X_t),
            max_iter=self.max_iter,
            tol=self.tol,
            batch_size=self.batch_size,
            verbose=self.verbose,
        )
        not_converged = int((~result.converged).sum())
        if not_converged:
            warnings.warn(
                f"FISTA did not reach tol={self.tol} within max_iter={self.max_iter} "
                f"iterations for {not_converged} of {X_t.shape[0]} samples; "
                "increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return result

    def inverse_transform(self, X):
        """Reconstruct data from codes: ``X @ components_ + intercept_``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_components)
            Codes.

        Returns
        -------
        X_reconstructed : ndarray or torch.Tensor of shape (n_samples, n_features)
            In the array type, device and dtype of the codes.
        """
        check_is_fitted(self)
        codes, origin = to_tensor(
            X, device=resolve_device(self.device, X), name="codes"
        )
        if codes.shape[1] != self._n_features_out:
            raise ValueError(
                f"codes have {codes.shape[1]} columns, but this FISTACoder has "
                f"{self._n_features_out} components."
            )
        D, b = self._dictionary_tensors(codes)
        return to_output(codes @ D + b, origin)

    def score(self, X, y=None):
        """Negative mean squared reconstruction error of ``X`` (greater is better).

        ``-mean((X - inverse_transform(transform(X))) ** 2)`` over all entries.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        score : float
        """
        check_is_fitted(self)
        check_same_namespace(X, self, attribute="components_", method="score")
        X_t, _ = validate_input(self, X, reset=False, device=self.device)
        D, b = self._dictionary_tensors(X_t)
        codes = self._encode(X, X_t, D, b).codes
        return -float(((X_t - codes @ D - b) ** 2).mean())

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def __getstate__(self):
        return portable_state(super().__getstate__())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
