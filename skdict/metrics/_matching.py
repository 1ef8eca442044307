"""Metrics that match recovered codes or atoms one-to-one to the ground truth.

Codes and dictionaries are identifiable only up to a permutation (and, for
atoms, a sign and a scale), so each metric first pairs every true latent or
atom with at most one learned one, maximising the total similarity with the
Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`, which takes
rectangular matrices), then scores the pairs. The similarity matrices are
computed in torch on the inputs' device; the assignment runs on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from numbers import Real
from typing import Any, Literal, NamedTuple, overload

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from .._dictionary import is_provider
from .._params import validate_params
from .._tensor import (
    accumulation_dtype,
    as_tensor,
    ieee_float32_products,
    ignores_autocast,
    is_estimator,
    rows_per_block,
    to_numpy,
)
from .._typing import Bool, Float
from ._inputs import as_matrices, compute_device

__all__ = ["dictionary_similarity", "mcc_score", "support_scores"]


class _Columns(NamedTuple):
    """Column statistics of a dense or sparse COO ``(n, p)`` tensor.

    Each column is first divided by its largest magnitude: Pearson
    correlations do not change, and squares and products stay in range, so
    float32 columns of order 1e20 (whose squares overflow) or 1e-25 (whose
    squares underflow to zero) correlate as well as columns of order one.
    Dense columns are scaled and centred a block of rows at a time
    (:meth:`blocks`), and their sums taken in float64: scaled and centred
    copies of whole float64 matrices held 4x the codes, and a float32 norm of
    a million-row column was off by up to 1 % (MCC 0.9914 for codes equal to
    twice the true ones).

    Attributes
    ----------
    data : torch.Tensor
        Dense columns as given, or a sparse matrix of the scaled columns
        (centring would fill it in).
    centre : torch.Tensor of shape (p,)
        What :meth:`blocks` subtracts from the scaled dense columns, their
        means in the accumulation dtype; zeros for a sparse matrix.
    mean : torch.Tensor of shape (p,)
        The means of the columns that :meth:`blocks` yields, in the
        accumulation dtype: those of the sparse scaled columns, zeros for
        dense (centred) ones.
    sq_norm : torch.Tensor of shape (p,)
        Squared norms of the scaled, centred columns (0 for constant
        columns), in the accumulation dtype.
    constant : torch.Tensor of shape (p,)
        True for constant columns.
    peak : torch.Tensor of shape (p,)
        The largest magnitude of each column (1 for zero columns): the
        unscaled squared norms are ``sq_norm * peak**2``.
    """

    data: torch.Tensor
    centre: torch.Tensor
    mean: torch.Tensor
    sq_norm: torch.Tensor
    constant: torch.Tensor
    peak: torch.Tensor

    def variance_rank(self) -> torch.Tensor:
        """Return the columns by decreasing variance (stable on equal floats)."""
        # In float64 (on the CPU, where it always exists): the unscaled
        # squares of float32 columns may overflow float32.
        variance = self.sq_norm.cpu().double() * self.peak.cpu().double() ** 2
        order = torch.sort(variance, descending=True, stable=True).indices
        return order.to(self.sq_norm.device)

    def blocks(self, step: int, *, wide: bool = False) -> Iterator[torch.Tensor]:
        """Yield the scaled columns ``step`` rows at a time.

        Dense blocks are centred, in the data's dtype (the accumulation
        dtype if ``wide``); sparse blocks are sparse COO matrices, not
        centred.
        """
        if self.data.is_sparse:
            yield from _sparse_row_blocks(self.data, step)
        else:
            yield from _centred_blocks(
                self.data, self.peak, self.centre, step, wide=wide
            )

    @classmethod
    def of(cls, A: torch.Tensor) -> _Columns:
        """Return the statistics of the columns of ``A``."""
        n, p = A.shape
        if A.is_sparse:
            # In float64: sums of many float32 values near a column's mean
            # (an always-active latent) lose the variance, and sparse columns
            # are correlated from uncentred products (_correlation).
            (_, cols), values = A.indices(), _wide(A.values())
            count = torch.bincount(cols, minlength=p)
            high, low = (
                values.new_zeros(p).scatter_reduce(
                    0, cols, values, reduce, include_self=False
                )
                for reduce in ("amax", "amin")
            )
            # Implicit zeros (count < n) take part in the range.
            implicit = count < n
            high = torch.where(implicit, high.clamp_min(0), high)
            low = torch.where(implicit, low.clamp_max(0), low)
            peak = _peaks(high, low)
            values = values / peak[cols]
            mean = values.new_zeros(p).index_add_(0, cols, values).div_(n)
            # Squared deviations of the stored entries plus those of the
            # implicit zeros (each deviating by the mean): no cancellation.
            sq_norm = values.new_zeros(p).index_add_(
                0, cols, (values - mean[cols]) ** 2
            )
            sq_norm += (n - count) * mean**2
            data = _on_pattern(A, values)
            centre = torch.zeros_like(mean)
        else:
            high, low = A.amax(dim=0), A.amin(dim=0)
            peak = _wide(_peaks(high, low))
            # The means summed wide: a float32 sum of values near an
            # always-active column's mean is off by more than its spread,
            # differently with the matrix's width (its reduction order), so
            # that identical columns could centre differently. A block of
            # rows at a time: sum(dtype=...) casts its whole input first.
            step = rows_per_block(p)
            sums = sum(_wide(block).sum(dim=0) for block in A.split(step))
            data, centre = A, sums / peak / n
            mean = torch.zeros_like(sums)
            sq_norm = sum(
                _wide(block).square().sum(dim=0)
                for block in _centred_blocks(A, peak, centre, step, wide=True)
            )
        # An exact test, so that the rounding residue of a constant column's
        # mean does not pass for variance.
        constant = high == low
        sq_norm = torch.where(constant, 0.0, sq_norm)
        return cls(data, centre, mean, sq_norm, constant, peak)

    def subset(self, index: torch.Tensor) -> _Columns:
        """Return the statistics of the columns ``index`` only."""
        return _Columns(
            self.data.index_select(1, index),
            self.centre[index],
            self.mean[index],
            self.sq_norm[index],
            self.constant[index],
            self.peak[index],
        )


def _centred_blocks(
    A: torch.Tensor,
    peak: torch.Tensor,
    centre: torch.Tensor,
    step: int,
    *,
    wide: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield the rows of dense ``A`` in blocks of ``step``, scaled and centred.

    Scaled and centred in ``peak``'s and ``centre``'s (wide) dtype, then
    rounded to ``A``'s unless ``wide``: a centre rounded to float32 is off by
    up to half an ulp of a column's mean, which adds ``n`` times its square
    to every squared norm and product (float32 columns at 1e4 +- 1e-2
    correlated 0.989 where their float64 copies gave 0.994).
    """
    for block in A.split(step):
        centred = block.to(peak.dtype, copy=True)  # in place below: one copy
        centred.div_(peak).sub_(centre)
        yield centred if wide else centred.to(A.dtype)


def _on_pattern(S: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Return coalesced ``S``'s pattern holding other ``values``, as sparse COO."""
    return torch.sparse_coo_tensor(
        S.indices(),
        values,
        S.shape,
        is_coalesced=True,
        check_invariants=False,
        device=values.device,
    )


def _sparse_row_blocks(S: torch.Tensor, step: int) -> Iterator[torch.Tensor]:
    """Yield the rows of sparse COO ``S`` in blocks of ``step``."""
    n, p = S.shape
    S = S.coalesce()  # a column subset is not
    indices, values = S.indices(), S.values()
    # A coalesced tensor's entries are sorted by row.
    firsts = torch.arange(0, n, step, device=indices.device)
    bounds = torch.searchsorted(indices[0].contiguous(), firsts).tolist()
    bounds.append(values.numel())
    for i, start in enumerate(range(0, n, step)):
        lo, hi = bounds[i], bounds[i + 1]
        block_indices = indices[:, lo:hi].clone()
        block_indices[0] -= start
        yield torch.sparse_coo_tensor(
            block_indices,
            values[lo:hi],
            (min(step, n - start), p),
            is_coalesced=True,
            check_invariants=False,
            device=values.device,
        )


def some_latent_varies(Z_true: Any) -> bool:
    """Return True when a column of ``Z_true`` varies, so MCC is defined.

    :func:`mcc_score` matches codes to the true latents with non-zero
    variance, and refuses ``Z_true`` without one (a single sample, or
    constant columns); :func:`support_scores` matches constant latents on
    their supports' overlap.
    """
    return not bool(
        _Columns.of(as_matrices({"Z_true": Z_true})["Z_true"]).constant.all()
    )


def _wide(T: torch.Tensor) -> torch.Tensor:
    """``T`` in float64, or float32 on Apple's MPS, which has no float64."""
    return T.to(accumulation_dtype(T.device, torch.float32))


def _peaks(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Largest magnitude of each column from its range; 1 for zero columns."""
    peak = torch.maximum(high.abs(), low.abs())
    return torch.where(peak > 0, peak, 1.0)


# Products with a side this narrow are taken in float64, from the blocks as
# they are centred (in float64): narrow, they cost little, and MKL's float32
# GEMM on AMD processors sums them row after row (4,096 equal terms off by
# 3e-5; codes twice the true ones scored an MCC of 0.9985 over 300,000 rows),
# where wider ones are blocked (2e-6 at 300,000 rows).
_NARROW_PRODUCT = 16


def _correlation(true: _Columns, codes: _Columns) -> torch.Tensor:
    """Pearson correlation between every true column and every code column.

    Products of a block of rows at a time (in IEEE float32 for float32
    columns, whatever the process's matmul precision, or in float64 when a
    side has at most ``_NARROW_PRODUCT`` columns), summed in float64.
    Dense columns are centred, sparse ones are not (centring would fill them
    in). With one sparse side, the product is centred afterwards, from
    ``sum_i (a_i - m_a)(b_i - m_b) = A^T B - m_a S_b - S_a m_b + n m_a m_b``
    with the column sums ``S`` (``n m`` for the sparse side, about zero for
    the centred one, whose rounding residue this removes too), in float64:
    no digits cancel, as the centred side's sum is about zero. With two
    sparse sides, the same subtraction cancels about ``log10(mean /
    spread)`` digits of each column (MCC 0.973 for identical columns at 1 +-
    1e-6), so where that would leave less than about 1e-10, the stored values
    are centred instead, and the implicit zeros' deviations added from the
    patterns (:func:`_centred_sparse_product`, four products for one).
    Constant columns correlate 0.
    """
    n, p = true.data.shape
    m = codes.data.shape[1]
    work = true.sq_norm.dtype
    cross = true.sq_norm.new_zeros((p, m))
    sum_a, sum_b = true.mean * n, codes.mean * n
    step = rows_per_block(p + m)
    centre_sparse = (
        true.data.is_sparse
        and codes.data.is_sparse
        and _mean_to_spread(true, n) * _mean_to_spread(codes, n) > _MAX_CANCELLATION
    )
    with ieee_float32_products():
        # Narrow products take their blocks wide as centred, no conversion.
        narrow = min(p, m) <= _NARROW_PRODUCT
        blocks = zip(
            true.blocks(step, wide=narrow),
            codes.blocks(step, wide=narrow),
            strict=True,
        )
        for a, b in blocks:
            if not (a.is_sparse or b.is_sparse):
                dtype = work if narrow else torch.promote_types(a.dtype, b.dtype)
                # Added as it is: a float64 copy of each block's product
                # would be one more n x m matrix.
                cross += a.to(dtype).T @ b.to(dtype)
                continue
            a, b = a.to(work), b.to(work)
            if not a.is_sparse:
                sum_a += a.sum(dim=0)
                cross += torch.sparse.mm(b.t(), a).T
            elif not b.is_sparse:
                sum_b += b.sum(dim=0)
                cross += torch.sparse.mm(a.t(), b)
            elif centre_sparse:
                cross += _centred_sparse_product(a, b, true.mean, codes.mean)
            else:
                cross += torch.sparse.mm(a.t(), b).to_dense()
    if (true.data.is_sparse or codes.data.is_sparse) and not centre_sparse:
        cross -= torch.outer(true.mean, sum_b) + torch.outer(sum_a, codes.mean)
        cross += n * torch.outer(true.mean, codes.mean)
    scale = torch.outer(true.sq_norm.sqrt(), codes.sq_norm.sqrt())
    # A constant column correlates with nothing. In place: the quotient, the
    # clamped scale and where()'s result held five n x m float64 matrices at
    # once (623 MiB for one of 122 MiB at 4,000 x 4,000).
    constant = ~(scale > 0)
    corr = cross.div_(scale.clamp_min_(torch.finfo(work).tiny))
    return corr.masked_fill_(constant, 0.0).clamp_(min=-1.0, max=1.0)


# Largest product of the two sides' |mean| / spread ratios for which sparse
# columns are correlated from the uncentred product: it cancels about that
# factor times float64's 1e-16, so 1e-10 at most. Beyond it (an always-active
# latent that barely varies), the four products of _centred_sparse_product:
# 4x the time (50,000 rows, 1,000 x 2,000 columns: 4.0 s against 0.9 s).
_MAX_CANCELLATION = 1e6


def _mean_to_spread(columns: _Columns, n: int) -> float:
    """Largest ``|mean| / standard deviation`` among the varying columns."""
    varying = ~columns.constant
    if not bool(varying.any()):
        return 0.0
    spread = (columns.sq_norm[varying] / n).sqrt()
    return float((columns.mean[varying].abs() / spread).max())


def _centred_sparse_product(
    A: torch.Tensor, B: torch.Tensor, mean_a: torch.Tensor, mean_b: torch.Tensor
) -> torch.Tensor:
    """``sum_i (a_i - mean_a)(b_i - mean_b)^T`` over the rows of sparse COO blocks.

    With ``A~`` the stored values less their column's mean (on ``A``'s
    pattern ``P_A``), the centred matrix is ``A~ - (1 - P_A) diag(mean_a)``,
    so that the product is ``A~^T B~ - (S_A~ - A~^T P_B) mean_b - mean_a
    (S_B~ - P_A^T B~) + mean_a mean_b (n - c_A - c_B + P_A^T P_B)`` with the
    column sums ``S`` of the centred values and the counts ``c`` of stored
    entries: its terms are small where a column barely varies, where the
    uncentred ``A^T B - n mean_a mean_b`` subtracted two large ones. Four
    sparse products, each as cheap as the uncentred one.
    """
    n = A.shape[0]

    def centred(S: torch.Tensor, mean: torch.Tensor):
        cols, values = S.indices()[1], S.values()
        width = S.shape[1]
        deviations = values - mean[cols]
        sums = deviations.new_zeros(width).index_add_(0, cols, deviations)
        counts = torch.bincount(cols, minlength=width).to(values.dtype)
        pattern = _on_pattern(S, torch.ones_like(values))
        return _on_pattern(S, deviations), pattern, sums, counts

    def product(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(X.t(), Y).to_dense()

    A_dev, A_on, sum_a, count_a = centred(A, mean_a)
    B_dev, B_on, sum_b, count_b = centred(B, mean_b)
    cross = product(A_dev, B_dev)
    cross -= (sum_a[:, None] - product(A_dev, B_on)) * mean_b
    cross -= mean_a[:, None] * (sum_b - product(A_on, B_dev))
    implicit = n - count_a[:, None] - count_b + product(A_on, B_on)
    cross += torch.outer(mean_a, mean_b) * implicit
    return cross


def _assign(similarity: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching maximising the total similarity (rows <-> columns)."""
    # SciPy maximises by minimising a negated float64 copy of its input, made
    # after a float64 copy of a float32 one: given the negated float64 matrix
    # it copies nothing (the same matching, ties included). A float64 input
    # is negated in place and restored.
    cost = to_numpy(similarity)
    restore = cost.dtype == np.float64 and cost.flags.writeable
    cost = cost if restore else cost.astype(np.float64)
    np.negative(cost, out=cost)
    try:
        return linear_sum_assignment(cost)
    finally:
        if restore:
            np.negative(cost, out=cost)


# Weight of the support overlap in support_scores' correlation matching: an
# absolute 1e-4, the same for every dtype and format, far above the rounding
# of float32 correlations (about 1e-6) and of the sparse path's float64 ones
# at millions of rows (1e-12), and below any difference in |correlation|
# that tells code dimensions apart in earnest.
_OVERLAP_WEIGHT = 1e-4


def _correlation_matching(
    true: torch.Tensor,
    codes: torch.Tensor,
    *,
    top_variance: bool = False,
    tie_break: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Match true latents to code dimensions on |Pearson| correlation.

    Parameters
    ----------
    true : torch.Tensor of shape (n_samples, n_latents), dense or sparse COO
    codes : torch.Tensor of shape (n_samples, n_components), dense or sparse COO
    top_variance : bool, default=False
        See :func:`mcc_score`.
    tie_break : torch.Tensor of shape (n_latents, n_components), default=None
        Values in [0, 1] added to the |correlations| with a weight of
        ``_OVERLAP_WEIGHT``, to decide between (nearly) equal ones. Constant
        true latents with a non-zero row take part too, matched on it alone
        (they correlate 0 with everything).

    Returns
    -------
    matching : ndarray of shape (n_latents,)
        The code dimension matched to each true latent; -1 for latents left
        over when there are fewer code dimensions, and for constant true
        latents that do not take part.
    correlation : ndarray of shape (n_latents,)
        |Pearson| of each latent with its match (0 where unmatched).
    n_varying : int
        The number of true latents with non-zero variance.
    """
    true_cols, code_cols = _Columns.of(true), _Columns.of(codes)
    varying = torch.nonzero(~true_cols.constant).flatten()
    n_varying = int(varying.numel())
    # The latents matched: with a tie-break (support_scores), also the
    # constant ones it tells about. A latent active in every sample (a
    # concept present throughout a split) would otherwise count as missed in
    # every sample beside an identical code column (F1 0.51 for Z itself).
    latents = varying
    if tie_break is not None:
        latents = torch.nonzero(~true_cols.constant | (tie_break > 0).any(dim=1))
        latents = latents.flatten()
    if n_varying == 0 and tie_break is None:
        raise ValueError(
            "Z_true has no latent with non-zero variance, so no code dimension "
            "can be matched to a latent by correlation: the MCC is undefined "
            "(support_scores also takes an explicit matching=)."
        )
    if latents.numel() == 0:  # no latent active in any sample
        return np.full(true.shape[1], -1), np.zeros(true.shape[1]), 0
    candidates = torch.arange(codes.shape[1], device=codes.device)
    if top_variance and codes.shape[1] > n_varying:
        # The paper's MCC-OOD (arXiv 2603.28744; its evaluation code ranks
        # code dimensions by OOD variance): only the code dimensions with the
        # highest variance on the evaluated data compete.
        candidates = code_cols.variance_rank()[:n_varying]
        code_cols = code_cols.subset(candidates)
    if latents.numel() < true.shape[1]:
        true_cols = true_cols.subset(latents)
    corr = _correlation(true_cols, code_cols).abs_()
    score = corr
    if tie_break is not None:
        if latents.numel() < true.shape[1]:
            tie_break = tie_break[latents]
        if candidates.numel() < codes.shape[1]:
            tie_break = tie_break[:, candidates]
        score = corr.to(accumulation_dtype(corr.device, corr.dtype), copy=True)
        score.add_(tie_break, alpha=_OVERLAP_WEIGHT)
    rows, cols = _assign(score)
    matching = np.full(true.shape[1], -1, dtype=np.int64)
    correlation = np.zeros(true.shape[1])
    matched = to_numpy(latents)[rows]
    matching[matched] = to_numpy(candidates)[cols]
    correlation[matched] = to_numpy(corr)[rows, cols]
    return matching, correlation, n_varying


@validate_params(
    {"Z_true": "no_validation", "codes": "no_validation", "top_variance": ["boolean"]},
    prefer_skip_nested_validation=True,
)
@ignores_autocast
def mcc_score(Z_true: Any, codes: Any, *, top_variance: Bool = False) -> float:
    """Mean correlation coefficient between true latents and learned codes.

    Every column of ``Z_true`` and of ``codes`` is centred and scaled to unit
    norm; each true latent is matched one-to-one to a code dimension by the
    Hungarian algorithm on the absolute Pearson correlations, and the matched
    correlations are averaged over the true latents with non-zero variance. A
    latent left unmatched because there are fewer code dimensions than
    varying latents counts as 0. Without ``top_variance``, the score is
    invariant to permuting and rescaling (with either sign) the code
    dimensions; 1 means every latent is recovered up to an affine map.

    Parameters
    ----------
    Z_true : array-like, torch.Tensor or sparse matrix of shape (n_samples, \
n_latents)
        Ground-truth codes. Latents that are constant on these samples (e.g.
        the ID-pool latents of an OOD set) are left out of the average.
    codes : array-like, torch.Tensor or sparse matrix of shape (n_samples, \
n_components)
        Recovered codes. Sparse codes are not densified.
    top_variance : bool, default=False
        Only let the code dimensions with the highest variance on these
        samples compete, as many as there are varying true latents: the
        paper's MCC-OOD (arXiv 2603.28744), which ignores dimensions that stay
        silent on the evaluated data. Which dimensions compete depends on
        their scales (rescaling one changes its rank); of dimensions whose
        variances are equal in exact arithmetic (binary codes with as many
        ones), on the rounding of their sums, so arbitrarily.

    Returns
    -------
    float
        In [0, 1]; higher is better.

    Raises
    ------
    ValueError
        If the inputs have different numbers of rows, or no true latent
        varies.

    Examples
    --------
    >>> import numpy as np
    >>> from skdict.metrics import mcc_score
    >>> rng = np.random.default_rng(0)
    >>> Z = rng.uniform(size=(100, 3))
    >>> round(mcc_score(Z, -2 * Z[:, [2, 0, 1]]), 12)
    1.0
    >>> round(mcc_score(Z, Z[:, :2]), 6)  # the third latent goes unmatched
    0.666667
    """
    tensors = as_matrices({"Z_true": Z_true, "codes": codes}, promote=False)
    _, correlation, n_varying = _correlation_matching(
        tensors["Z_true"], tensors["codes"], top_variance=top_variance
    )
    return float(correlation.sum() / n_varying)


def refitted_estimator(estimator: Any) -> Any:
    """Return a fitted search's refitted best estimator, anything else as is.

    A search (``GridSearchCV``, a nested one, a frozen one) transforms with
    its ``best_estimator_`` but exposes none of its attributes: scoring a
    search's atoms, as nested cross-validation does, means scoring those.
    """
    while not hasattr(estimator, "components_") and hasattr(
        estimator, "best_estimator_"
    ):
        estimator = estimator.best_estimator_
    return estimator


def _atoms(dictionary: Any, name: str, device: torch.device) -> torch.Tensor:
    dictionary = refitted_estimator(dictionary)
    if is_provider(dictionary):
        if is_estimator(dictionary):  # not a bare holder of components_
            check_is_fitted(dictionary)
        if not hasattr(dictionary, "components_"):
            raise TypeError(
                f"{name} must be an array of atoms or a fitted estimator exposing "
                f"components_; {type(dictionary).__name__} has no components_."
            )
        atoms = as_tensor(
            dictionary.components_, device=device, name=f"{name}.components_"
        )
    else:
        atoms = as_tensor(dictionary, device=device, name=name)
    if atoms.shape[0] == 0:
        raise ValueError(f"{name} has no atoms; at least one row is required.")
    if atoms.shape[1] == 0:
        raise ValueError(f"{name} has atoms of 0 features; at least one is required.")
    return atoms


def _directions(atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the unit rows of ``atoms`` and their norms (zero rows stay zero).

    Each row is divided by its largest magnitude before its norm is taken, so
    that float32 rows of order 1e20 (whose squares overflow) or 1e-25 (whose
    squares underflow to zero) keep their directions.
    """
    peak = _peaks(atoms.amax(dim=1), atoms.amin(dim=1)).unsqueeze(1)
    scaled = atoms / peak
    # Norms summed in float64 (no float64 copy of the atoms): float32 norms
    # of 10^6 features were off by 1.2e-5, and float32 norm ratios of atoms
    # 1e20 and 1e-20 long overflowed.
    wide = accumulation_dtype(atoms.device, torch.float32)
    norm = torch.linalg.vector_norm(scaled, dim=1, keepdim=True, dtype=wide)
    # Zero atoms have no direction: they are similar to nothing.
    directions = scaled / torch.where(norm > 0, norm, 1.0).to(scaled.dtype)
    return directions, (norm * peak.to(wide)).squeeze(1)


def _angles(u: torch.Tensor, v: torch.Tensor) -> np.ndarray:
    """Angles in radians between the lines through unit rows ``u`` and ``v``.

    ``2 arcsin(|u - s v| / 2)`` with ``s`` the sign of ``u . v``: ``arccos``
    of a cosine rounded to 1 - 1e-7 gives 4.5e-4 rad (identical float32
    atoms came out 2e-4 rad apart), while the chord keeps small angles to
    the rounding of the atoms themselves.
    """
    sign = torch.where((u * v).sum(dim=1, keepdim=True) < 0, -1.0, 1.0)
    chord = torch.linalg.vector_norm(u - sign.to(v.dtype) * v, dim=1)
    return to_numpy(2 * torch.arcsin((chord / 2).clamp_(max=1.0))).astype(np.float64)


# The return type follows ``detailed``, for type checkers.
@overload
def dictionary_similarity(
    true_dictionary: Any,
    dictionary: Any,
    *,
    detailed: Literal[False] = ...,
    threshold: Float = ...,
) -> float: ...
@overload
def dictionary_similarity(
    true_dictionary: Any,
    dictionary: Any,
    *,
    detailed: Literal[True],
    threshold: Float = ...,
) -> Bunch: ...
@overload
def dictionary_similarity(
    true_dictionary: Any,
    dictionary: Any,
    *,
    detailed: Bool,
    threshold: Float = ...,
) -> float | Bunch: ...


@validate_params(
    {
        "true_dictionary": "no_validation",
        "dictionary": "no_validation",
        "detailed": ["boolean"],
        "threshold": [Interval(Real, 0, 1, closed="both")],
    },
    prefer_skip_nested_validation=True,
)
@ignores_autocast
def dictionary_similarity(
    true_dictionary: Any,
    dictionary: Any,
    *,
    detailed: Bool = False,
    threshold: Float = 0.9,
) -> float | Bunch:
    """Hungarian-matched absolute cosine similarity between dictionaries.

    Each true atom is paired with at most one learned atom so that the total
    absolute cosine similarity is maximal; the score is the mean matched
    similarity over the true atoms, a true atom left unmatched (fewer learned
    atoms) counting as 0. It is invariant to permuting, rescaling and
    sign-flipping the learned atoms.

    Parameters
    ----------
    true_dictionary : array-like, torch.Tensor or fitted estimator
        Ground-truth atoms as rows, shape ``(n_latents, n_features)``, or an
        estimator exposing them as ``components_``.
    dictionary : array-like, torch.Tensor or fitted estimator
        Learned atoms as rows, shape ``(n_components, n_features)``, or a
        fitted estimator exposing ``components_`` (a skdict coder or
        autoencoder, sklearn's ``DictionaryLearning`` or ``PCA``). A fitted
        search (``GridSearchCV`` refitted) stands for its
        ``best_estimator_``, with which it transforms.
    detailed : bool, default=False
        Return a :class:`~sklearn.utils.Bunch` of per-atom diagnostics instead
        of the mean similarity.
    threshold : float, default=0.9
        Similarity above which a true atom counts as recovered in
        ``fraction_close``.

    Returns
    -------
    float or Bunch
        The mean matched similarity in [0, 1], or, with ``detailed=True``, a
        Bunch with

        mean_cosine : float
            The mean matched similarity (the plain return value).
        cosines : ndarray of shape (n_latents,)
            Absolute cosine similarity of each true atom with its match, 0
            where unmatched.
        matching : ndarray of shape (n_latents,)
            Index of the learned atom matched to each true atom, -1 where
            unmatched: where there are fewer learned atoms, and for zero
            atoms on either side, which have no direction to match. Pass it
            to :func:`support_scores` to score supports under the dictionary
            matching.
        fraction_close : float
            Fraction of true atoms matched with similarity above
            ``threshold``.
        angular_errors : ndarray of shape (n_latents,)
            The angle in radians between each true atom and the line
            through its match, ``arccos(cosines)`` computed stably near 0
            (``pi / 2`` where unmatched).
        mean_angular_error : float
            Mean of ``angular_errors``.
        norm_ratios : ndarray of shape (n_latents,)
            Norm of each matched learned atom over that of its true atom;
            NaN where unmatched or where the true atom is zero.
        mean_norm_ratio : float
            Mean of the finite ``norm_ratios``; NaN when there is none.

    Examples
    --------
    >>> import numpy as np
    >>> from skdict.metrics import dictionary_similarity
    >>> rng = np.random.default_rng(0)
    >>> D = rng.standard_normal((4, 6))
    >>> learned = -3 * D[[2, 0, 3, 1]]
    >>> round(dictionary_similarity(D, learned), 12)
    1.0
    >>> dictionary_similarity(D, learned, detailed=True).matching
    array([1, 3, 0, 2])
    """
    device = compute_device(true_dictionary, dictionary)
    true = _atoms(true_dictionary, "true_dictionary", device)
    learned = _atoms(dictionary, "dictionary", device)
    if true.shape[1] != learned.shape[1]:
        raise ValueError(
            f"true_dictionary has atoms of dimension {true.shape[1]} but "
            f"dictionary has atoms of dimension {learned.shape[1]}."
        )
    dtype = torch.promote_types(true.dtype, learned.dtype)
    (true, true_norm), (learned, learned_norm) = (
        _directions(atoms.to(dtype)) for atoms in (true, learned)
    )
    if min(true.shape[0], learned.shape[0]) <= _NARROW_PRODUCT:
        # Summed over the features row after row, see _NARROW_PRODUCT:
        # identical float32 atoms of 10^6 features scored 0.99997.
        true, learned = _wide(true), _wide(learned)
    # bfloat16 products put identical float32 atoms 1 degree apart.
    with ieee_float32_products():
        cos = (true @ learned.T).abs_().clamp_(max=1.0)
    rows, cols = _assign(cos)
    true_norm, learned_norm = to_numpy(true_norm), to_numpy(learned_norm)
    # A zero atom has no direction: the assignment may pair it, at cosine 0,
    # but it matches nothing.
    paired = (true_norm[rows] > 0) & (learned_norm[cols] > 0)
    rows, cols = rows[paired], cols[paired]
    cosines = np.zeros(true.shape[0])
    cosines[rows] = to_numpy(cos)[rows, cols]
    mean_cosine = float(cosines.mean())
    if not detailed:
        return mean_cosine
    matching = np.full(true.shape[0], -1, dtype=np.int64)
    matching[rows] = cols
    norm_ratios = np.full(true.shape[0], np.nan)
    norm_ratios[rows] = learned_norm[cols] / true_norm[rows]
    angular_errors = np.full(true.shape[0], np.pi / 2)
    angular_errors[rows] = _angles(true[rows], learned[cols])
    finite = np.isfinite(norm_ratios)
    return Bunch(
        mean_cosine=mean_cosine,
        cosines=cosines,
        matching=matching,
        fraction_close=float((cosines > threshold).mean()),
        angular_errors=angular_errors,
        mean_angular_error=float(angular_errors.mean()),
        norm_ratios=norm_ratios,
        mean_norm_ratio=float(norm_ratios[finite].mean()) if finite.any() else np.nan,
    )


@validate_params(
    {
        "Z_true": "no_validation",
        "codes": "no_validation",
        "threshold": [Interval(Real, 0, None, closed="left")],
        "matching": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
@ignores_autocast
def support_scores(
    Z_true: Any,
    codes: Any,
    *,
    threshold: Float = 1e-4,
    matching: Any = None,
) -> dict[str, float]:
    """Per-sample precision, recall and F1 of the recovered active sets.

    A latent is active in a sample where its absolute value exceeds
    ``threshold``. Code dimensions are identified with true latents through
    ``matching``; a code dimension active in a sample is a true positive when
    its matched latent is active there too. Active code dimensions without a
    match are false positives, and active true latents without a match false
    negatives. Precision, recall and F1 are computed per sample and averaged
    over samples. Where one is undefined (no active code dimension, or no
    active true latent), it is 1 if both sets are empty (the support is
    recovered exactly) and 0 otherwise.

    Parameters
    ----------
    Z_true : array-like, torch.Tensor or sparse matrix of shape (n_samples, \
n_latents)
        Ground-truth codes.
    codes : array-like, torch.Tensor or sparse matrix of shape (n_samples, \
n_components)
        Recovered codes. Sparse codes are not densified.
    threshold : float, default=1e-4
        Activity threshold on absolute values, for both code matrices.
    matching : array-like of shape (n_latents,), default=None
        The code dimension of each true latent (-1 for none), one-to-one. None
        matches by absolute correlation as :func:`mcc_score` does, plus 1e-4
        times the fraction of samples in which both are active, which
        decides between (nearly) equal correlations: complementary latents,
        such as the one-hot codes of two classes, correlate equally with
        each other's columns. A latent active in every sample (constant,
        so without a correlation) is matched on that fraction alone. The
        ``matching`` of :func:`dictionary_similarity`
        with ``detailed=True`` matches by dictionary atoms instead (the
        paper's choice).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (means over samples), ``l0_true``
        and ``l0_pred`` (mean numbers of active true latents and code
        dimensions per sample).

    Examples
    --------
    >>> import numpy as np
    >>> from skdict.metrics import support_scores
    >>> Z = np.array([[1.0, 0, 2], [0, 3, 0], [4, 0, 0]])
    >>> codes = np.array([[0, 1.0, 1.0], [0, 0, 0], [0, 5, 5]])
    >>> scores = support_scores(Z, codes, matching=[2, 0, 1])
    >>> {name: round(value, 3) for name, value in scores.items()}
    {'precision': 0.5, 'recall': 0.667, 'f1': 0.556, 'l0_true': 1.333, \
'l0_pred': 1.333}
    """
    tensors = as_matrices({"Z_true": Z_true, "codes": codes}, promote=False)
    true, pred = tensors["Z_true"], tensors["codes"]
    n_samples, n_latents = true.shape
    if matching is None:
        # Complementary latents (the one-hot codes of two classes) correlate
        # +1 and -1 with each of the two columns, and rounding decided the
        # tie: identical or negated codes could match each latent to the
        # other's column (F1 0 instead of 1). Near-ties go to the column
        # whose support overlaps the latent's most.
        overlap = _support_overlap(true, pred, threshold)
        matching = _correlation_matching(true, pred, tie_break=overlap)[0]
    else:
        matching = _check_matching(matching, n_latents, pred.shape[1])
    # Per-sample rates in float64 (float32 on Apple's MPS, which has none).
    wide = accumulation_dtype(pred.device, torch.float32)
    rows, cols = _active_entries(true, threshold)
    l0_true = torch.bincount(rows, minlength=n_samples).to(wide)
    matched = torch.as_tensor(matching, device=pred.device)[cols]
    hit = matched >= 0
    rows, matched = rows[hit], matched[hit]
    if pred.is_sparse:
        # Membership of (sample, matched dimension) among the active entries,
        # by flat index: no (n_samples, n_components) mask.
        pred_rows, pred_cols = _active_entries(pred, threshold)
        l0_pred = torch.bincount(pred_rows, minlength=n_samples).to(wide)
        width = pred.shape[1]
        found = torch.isin(rows * width + matched, pred_rows * width + pred_cols)
    else:
        # A block of rows at a time: torch sums a boolean mask as int64, 8
        # bytes an entry (2.1 GB beside 0.8 GB of float32 codes).
        l0_pred = torch.cat(
            [mask.sum(dim=1) for _, mask in _active_blocks(pred, threshold)]
        ).to(wide)
        found = _active(pred[rows, matched], threshold)
    tp = torch.zeros(n_samples, dtype=wide, device=pred.device)
    tp.index_add_(0, rows, found.to(wide))
    # A sample with no active latent whose codes have none either has its
    # support recovered exactly: 1, not 0 (identical codes scored below 1).
    agree_empty = ((l0_pred == 0) & (l0_true == 0)).to(wide)
    precision = torch.where(l0_pred > 0, tp / l0_pred.clamp_min(1), agree_empty)
    recall = torch.where(l0_true > 0, tp / l0_true.clamp_min(1), agree_empty)
    total = precision + recall
    f1 = torch.where(total > 0, 2 * precision * recall / total.clamp_min(1e-300), 0.0)
    return {
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
        "l0_true": float(l0_true.mean()),
        "l0_pred": float(l0_pred.mean()),
    }


def _support_overlap(
    true: torch.Tensor, pred: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Fraction of samples in which each latent and each code dimension are active.

    The true latents' activity as a SciPy CSR matrix (on the host: true codes
    are sparse by construction), times the codes' activity: as a CSR matrix
    too when the codes are sparse (0.08 s against torch's COO product's
    0.34 s at 50,000 x 4,000 codes), else in dense blocks of rows, whose
    work is in the true codes' non-zeros (the linear probe's dense codes at
    10,000 latents: 3.8 s against 13-15 s for dense products of both sides).
    Counts are exact in float32 below 2**24 samples.
    """
    n_samples = true.shape[0]
    true_ind = _csr_indicator(*_active_entries(true, threshold), true.shape)
    if pred.is_sparse:
        pred_ind = _csr_indicator(*_active_entries(pred, threshold), pred.shape)
        both = (true_ind.T @ pred_ind).toarray()
    else:
        dtype = np.float32 if n_samples < 2**24 else np.float64
        both = np.zeros((true.shape[1], pred.shape[1]), dtype=dtype)
        for start, mask in _active_blocks(pred, threshold):
            block = to_numpy(mask).astype(np.float32)
            both += true_ind[start : start + len(block)].T @ block
    return torch.from_numpy(both).to(pred.device) / n_samples


def _csr_indicator(
    rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int]
) -> sp.csr_matrix:
    """SciPy CSR matrix of ones at ``(rows, cols)``, in host memory."""
    ones = np.ones(rows.numel(), dtype=np.float32)
    return sp.csr_matrix((ones, (to_numpy(rows), to_numpy(cols))), shape=shape)


def _active_entries(
    codes: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of the entries of ``codes`` above ``threshold`` in magnitude."""
    if codes.is_sparse:
        keep = _active(codes.values(), threshold)
        rows, cols = codes.indices()[:, keep]
        return rows, cols
    rows, cols = [], []
    for start, mask in _active_blocks(codes, threshold):
        block_rows, block_cols = torch.nonzero(mask, as_tuple=True)
        rows.append(block_rows + start)
        cols.append(block_cols)
    return torch.cat(rows), torch.cat(cols)


def _active_blocks(
    codes: torch.Tensor, threshold: float
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield each block of rows' first row and where the block is active.

    The masks of dense ``codes`` are made a block of rows at a time, in two
    buffers kept from block to block: all rows at once took three bytes an
    entry, and a fresh mask for every block left the allocator holding the
    freed ones: the active entries of 100,000 x 2,048 float32 codes (1 %
    active) peaked 586 / 364 / 91 MiB above the start, and a whole
    :func:`support_scores` call 671 MiB before, 300 MiB now
    (``benchmarks/bench_memory.py --scale``). A mask is overwritten by the
    next one.
    """
    step = rows_per_block(codes.shape[1])
    high = torch.empty(
        (min(step, codes.shape[0]), codes.shape[1]),
        dtype=torch.bool,
        device=codes.device,
    )
    low = torch.empty_like(high)
    for start in range(0, codes.shape[0], step):
        block = codes[start : start + step]
        yield (
            start,
            _active(block, threshold, out=(high[: len(block)], low[: len(block)])),
        )


def _active(
    codes: torch.Tensor,
    threshold: float,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Where ``|codes| > threshold``, without a float copy (``abs()`` takes one).

    Exactly, whatever the codes' dtype: torch compares in the codes' dtype,
    where ``threshold`` rounds (float32 codes equal to ``float32(0.1)``,
    above 0.1, counted as inactive at ``threshold=0.1`` while their float64
    copies counted as active). A threshold that rounds up is the smallest
    value of the dtype above it, so ``>=`` it is exact. ``out``: two boolean
    tensors of the codes' shape to compare into; the first is returned.
    """
    rounded = torch.tensor(threshold, dtype=codes.dtype, device="cpu").item()
    above, below = (torch.ge, torch.le) if rounded > threshold else (torch.gt, torch.lt)
    bound = rounded if rounded > threshold else threshold
    if out is None:
        return above(codes, bound) | below(codes, -bound)
    high, low = out
    above(codes, bound, out=high)
    return high.bitwise_or_(below(codes, -bound, out=low))


def _check_matching(matching: Any, n_latents: int, n_components: int) -> np.ndarray:
    matching = to_numpy(matching)
    if matching.shape != (n_latents,) or not np.issubdtype(matching.dtype, np.integer):
        raise ValueError(
            f"matching must be an integer array of shape ({n_latents},), one code "
            f"dimension (or -1) per true latent; got {matching.dtype} of shape "
            f"{matching.shape}."
        )
    used = matching[matching >= 0]
    if (matching < -1).any() or (used >= n_components).any():
        raise ValueError(
            f"matching entries must lie in [-1, {n_components - 1}]; got "
            f"[{matching.min()}, {matching.max()}]."
        )
    if np.unique(used).size != used.size:
        raise ValueError("matching must pair each code dimension with one latent.")
    return matching.astype(np.int64)
