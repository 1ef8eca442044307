"""FISTA's building blocks, and plain FISTA.

The step size, the proximal step, momentum, duality gaps and the lasso
objective, shared by the working-set solver and the dictionary learners, and
the plain iterations of DL-FISTA's inexact rounds (:func:`_plain_fista`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

# Power iterations between two reads of their estimates (lipschitz_constant).
# On the CPU the same times as reading each (1,000 x 93 atoms: 33-42 ms
# either way; 8,192 x 512: 1.7-2.0 s).
_POWER_READS_EVERY = 16


# Codes with fewer than this fraction of non-zeros enter products as sparse
# tensors on CPU: below it, sparse products beat dense BLAS. One thread,
# 2,500 samples, float64, ``Z^T Z``, ``Z^T X`` and two ``Z D``: with 200 /
# 500 / 1,000 atoms the two break even at 16 / 20 / 15 % non-zeros, and at
# 8 % the sparse path takes 54 / 45 / 55 % of the dense one's time. Other
# devices keep ``_SPARSE_DENSITY_OTHER``, the bound measured on the CPU
# before; no GPU has measured its own.
_SPARSE_DENSITY = 0.12
_SPARSE_DENSITY_OTHER = 0.05


class FISTAResult(NamedTuple):
    """Output of :func:`~skdict._fista.fista_encode`.

    Attributes
    ----------
    codes : torch.Tensor of shape (n_samples, n_components)
        The sparse codes.
    n_iter : torch.Tensor of shape (n_samples,)
        FISTA iterations spent on each sample (summed over working sets).
    converged : torch.Tensor of shape (n_samples,)
        Whether each sample's duality gap reached ``tol``. A sample not
        converged that spent fewer than ``max_iter`` iterations stopped where
        float64 rounding hides its gap (see ``tol`` in
        :func:`~skdict._fista.fista_encode`).
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
        The estimate, inflated by ``10 * tol``. Power iteration approaches
        ``L`` from below and stops on the relative change of its estimate,
        not on its error: with a top eigen-gap of 1e-2 to 1e-3 the result can
        still be a few 1e-6 (relative) below ``L``, and more where
        ``max_iter`` stops it first (5e-5 for 8,192 random atoms in 512
        features). A step that much too long does not stop FISTA from
        converging, and codes are certified by their duality gap, never by
        the step.

    Examples
    --------
    >>> import torch
    >>> from skdict._fista import lipschitz_constant
    >>> D = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> round(lipschitz_constant(D), 4)
    9.0
    """
    A = dictionary.to(torch.float64)
    # Scaled to a largest entry of 1, so that the products of the power
    # iteration neither over- nor underflow (atoms of norm 1e77 overflowed
    # ||A^T A v|| and returned 0); L scales with the square.
    scale = float(A.abs().max()) if A.numel() else 0.0
    if scale == 0.0:
        return 0.0
    A = A / scale
    if A.shape[0] < A.shape[1]:
        A = A.T
    # A^T A is the small side: (min(n_components, n_features),) square.
    generator = torch.Generator(device=A.device).manual_seed(0)
    v = torch.randn(A.shape[1], generator=generator, dtype=A.dtype, device=A.device)
    v /= v.norm()
    # On a GPU each read of the estimate waits for the device (a host sync;
    # read every iteration, they were 90% of a small dictionary-learning
    # round's). Iterations run ahead and their estimates are read in groups,
    # then taken in order as if read one by one: the same result, for at most
    # _POWER_READS_EVERY - 1 products more.
    estimate = 0.0
    pending: list[torch.Tensor] = []
    for iteration in range(max_iter):
        w = A.T @ (A @ v)
        norm = w.norm()
        pending.append(torch.stack([w @ v, norm]))
        v = w / norm
        if len(pending) < _POWER_READS_EVERY and iteration + 1 < max_iter:
            continue
        for new_estimate, new_norm in torch.stack(pending).tolist():
            if new_norm == 0:
                return 0.0
            converged = abs(new_estimate - estimate) <= tol * new_estimate
            estimate = new_estimate
            if converged:
                return estimate * scale**2 * (1.0 + 10 * tol)
        pending.clear()
    return estimate * scale**2 * (1.0 + 10 * tol)


def _gershgorin(gram: torch.Tensor) -> torch.Tensor:
    """Upper bound ``max_i sum_j |G_ij|`` on each ``(w, w)`` Gram's top eigenvalue.

    Gershgorin's circle theorem makes the step ``1 / L`` safe without any
    iteration. For ``w`` unit atoms with small coherence it exceeds the true
    value by a few tens of percent, which costs FISTA only the square root of
    that in iterations; a batched power iteration costs as many Gram products
    as the FISTA iterations it would save.
    """
    return (
        gram.abs()
        .sum(dim=2)
        .amax(dim=1, keepdim=True)
        .clamp_min(torch.finfo(gram.dtype).tiny)
    )


def _prox_l1(v: torch.Tensor, threshold, positive: bool) -> torch.Tensor:
    """Soft thresholding, the proximal operator of ``threshold * ||.||_1``, in place.

    A ``threshold`` of None means it was already subtracted (non-negative
    codes only).
    """
    if positive:
        return (v if threshold is None else v.sub_(threshold)).clamp_min_(0.0)
    if not isinstance(threshold, torch.Tensor):
        # torch.clamp refuses a bound beyond its dtype's range (alpha=1e39 on
        # float32 codes); every |v| is below the dtype's largest value anyway.
        threshold = min(threshold, torch.finfo(v.dtype).max)
    # v - clip(v, -t, t) equals sign(v) max(|v| - t, 0) in two passes.
    return v.sub_(torch.clamp(v, -threshold, threshold))


def _momentum_table(n: int, like: torch.Tensor) -> torch.Tensor:
    """``(k - 1) / (k + 2)`` for ``k = 0 .. n``: FISTA's momentum after ``k`` steps.

    Beck & Teboulle's ``t_k`` sequence with ``t_k = (k + 1) / 2`` in closed
    form (Chambolle & Dossal, 2015, "On the convergence of the iterates of
    FISTA", with a = 2), looked up instead of recomputed every iteration.
    """
    k = torch.arange(n + 1, dtype=like.dtype, device=like.device)
    return ((k - 1.0) / (k + 2.0)).clamp_min_(0.0)


def _extrapolate(
    z_new: torch.Tensor,
    z_prev: torch.Tensor,
    y: torch.Tensor,
    k: torch.Tensor,
    momentum: torch.Tensor,
) -> torch.Tensor:
    """FISTA's extrapolated point, with gradient-based restart, per row.

    ``y = z_new + momentum[k] (z_new - z_prev)`` where ``k`` (integers,
    updated in place) counts the steps since the row's last restart, and
    ``momentum`` is :func:`_momentum_table` (steps past its end keep its last
    value). The momentum is dropped where it
    points uphill, ``(y - z_new) . (z_new - z_prev) > 0`` (O'Donoghue &
    Candès, 2015, "Adaptive restart for accelerated gradient schemes",
    eq. 12). Returns the new ``y``.
    """
    move = z_new - z_prev
    restart = torch.linalg.vecdot(y - z_new, move) > 0
    k.add_(1).masked_fill_(restart, 1).clamp_(max=momentum.shape[0] - 1)
    return torch.addcmul(z_new, momentum.index_select(0, k).unsqueeze(1), move)


def _dual_scaling(corr: torch.Tensor, alpha: float, positive: bool) -> torch.Tensor:
    """``s`` such that ``theta = s r`` is dual feasible, from ``corr = r D^T``."""
    worst = corr.amax(dim=1) if positive else corr.abs().amax(dim=1)
    return _dual_scale(worst, alpha)


def _dual_scale(worst: torch.Tensor, alpha: float) -> torch.Tensor:
    """Return ``min(1, alpha / worst)``: the largest ``s <= 1`` making ``s r`` feasible.

    ``worst`` is ``max_j r.d_j`` (of ``|r.d_j|`` without the sign constraint).
    """
    return torch.clamp(alpha / worst.clamp_min(torch.finfo(worst.dtype).tiny), max=1.0)


def _gap_from_residual(
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
    """Return the rows ``keep`` (a mask or indices) of each tensor, in order.

    A mask is turned into indices once: indexing each tensor by the mask is a
    ``nonzero`` per tensor, and on a GPU each waits for the device (a host
    sync; 2,000 of them a dictionary-learning round with 256 atoms).
    """
    if keep.dtype == torch.bool:
        # As indexing by the mask would: index_select takes rows of longer
        # tensors without a word.
        assert all(t.shape[0] == keep.shape[0] for t in tensors)
        keep = keep.nonzero().squeeze(1)
    return [t.index_select(0, keep) for t in tensors]


def _bmv(
    matrix: torch.Tensor,
    v: torch.Tensor,
    offset: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """Batched ``offset_i + scale M_i v_i`` for symmetric ``M`` ``(n, w, w)``.

    By symmetry ``M v`` is also ``v M``. Which of the two batched products is
    fast depends on ``w`` in CPU BLAS: a column vector for ``w <= 16``, a row
    vector beyond, where it is up to 8 times faster in float32.
    """
    column = matrix.shape[-1] <= 16
    vector = v.unsqueeze(2) if column else v.unsqueeze(1)
    if offset is None:
        out = torch.bmm(matrix, vector) if column else torch.bmm(vector, matrix)
        out = out if scale == 1.0 else out.mul_(scale)
    else:
        shaped = offset.unsqueeze(2) if column else offset.unsqueeze(1)
        out = (
            torch.baddbmm(shaped, matrix, vector, alpha=scale)
            if column
            else torch.baddbmm(shaped, vector, matrix, alpha=scale)
        )
    return out.squeeze(2) if column else out.squeeze(1)


def _take_square(
    matrix: torch.Tensor,
    idx: torch.Tensor,
    base: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sub-matrices ``M[idx_i][:, idx_i]`` for every row ``i`` of ``idx`` ``(n, s)``.

    ``matrix`` is one square matrix ``(m, m)``, or a stack ``(n', m, m)`` of
    which row ``i`` uses the one starting at flat offset ``base[i]``. A single
    ``take`` on flat offsets avoids the broadcast index tensors of 2-D
    advanced indexing, which cost several times more on CPU.
    """
    rows = idx * matrix.shape[-1]
    if base is not None:
        rows += base.unsqueeze(1)
    flat = rows.unsqueeze(2) + idx.unsqueeze(1)
    return matrix.reshape(-1).index_select(0, flat.view(-1)).view(flat.shape)


def _operand(codes: torch.Tensor) -> torch.Tensor:
    """``codes`` as a sparse tensor when mostly zeros, where products cost O(nnz)."""
    bound = _SPARSE_DENSITY if codes.device.type == "cpu" else _SPARSE_DENSITY_OTHER
    # count_nonzero: a third of the time of ``(codes != 0).sum()`` (no mask).
    if int(torch.count_nonzero(codes)) < bound * codes.numel():
        return codes.to_sparse()
    return codes


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


def _plain_fista(
    X: torch.Tensor,
    components: torch.Tensor,
    codes: torch.Tensor,
    alpha: float,
    positive: bool,
    n_iter: int,
) -> torch.Tensor:
    """``n_iter`` iterations of plain FISTA (step ``1 / L``) from ``codes``.

    The paper's inexact codes of a learning round (Beck & Teboulle, 2009): the
    gradient ``(Y D - X) D^T`` goes through the Gram matrix or through ``D``
    twice, whichever is cheaper.
    """
    n_components, n_features = components.shape
    step = 1.0 / lipschitz_constant(components)
    gram = components @ components.T if n_components <= 2 * n_features else None
    # The gradient step y - (y D - X) D^T / L, as ``shift + y - step (y D)
    # D^T`` by one fused GEMM into a reused buffer, then in-place updates:
    # a fresh (n_samples, n_components) tensor per operation cost as much as
    # the products (one CPU thread, n_latents=1000, 10 iterations: 230 ms
    # against 180 ms in float32, 570 ms against 350 ms in float64; the
    # n_latents=100 benchmark fit went from 1.18 s to 0.61 s).
    shift = (X @ components.T).mul_(step)
    z, y = codes.clone(), codes.clone()
    v = torch.empty_like(codes)
    t = 1.0
    for _ in range(n_iter):
        if gram is not None:
            torch.addmm(shift, y, gram, alpha=-step, out=v)
        else:
            torch.addmm(shift, y @ components, components.T, alpha=-step, out=v)
        _prox_l1(v.add_(y), alpha * step, positive)
        t_new = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
        # y = v + (t - 1) / t_new (v - z)
        torch.lerp(v, z, -(t - 1.0) / t_new, out=y)
        z, v, t = v, z, t_new
    return z
