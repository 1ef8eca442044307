r"""Per-sample sparse inference with FISTA, batched on torch, and :class:`FISTACoder`.

Each sample ``x`` (a row of ``X``) is coded independently by solving the lasso

.. math:: \min_z \; P(z) = \tfrac12 \lVert x - z D \rVert_2^2
          + \alpha \lVert z \rVert_1 \quad (\text{optionally } z \ge 0),

the objective of :func:`sklearn.decomposition.sparse_encode`, with ``D`` of shape
``(n_components, n_features)``. The solver is FISTA (Beck & Teboulle, 2009) with
gradient-based adaptive restart (O'Donoghue & Candès, 2015) inside a per-sample
working-set loop (as in Celer, Massias et al., 2018):

1. each sample keeps a small working set ``W`` of atoms: its current support plus
   half as many of the atoms whose optimality conditions are most violated (at
   least 4; 8 atoms to start with, chosen by correlation), taken as the best
   atoms of the best groups of a few atoms (``topk`` runs on the group
   maxima, not on all atoms). Sizes are chosen per
   sample and samples are grouped by size, so one sample with a large support
   does not make every other sample pay for it;
2. FISTA solves the lasso restricted to ``W`` using the ``|W| x |W|`` Gram matrix
   of those atoms (gathered from the full Gram matrix when it fits in memory),
   with the step ``1 / L_W`` from the Gershgorin bound on that Gram matrix,
   written as one batched product per iteration with the iteration matrix
   ``I - G_W / L_W``. Each sample stops at its own working-set duality gap;
3. every few iterations, a sample whose support has not changed over the last
   iteration takes an exact Newton step on that support (a Cholesky solve of
   ``G_SS z_S = b_S - alpha sign(z_S)``), which ends most samples as soon as
   FISTA has identified their support. Samples still running after 20
   iterations (ill-conditioned or degenerate ones, typically with a small
   ``alpha``) also shrink supports on which the Newton step fails --
   up to the first zero crossing, or along a null vector of ``G_SS`` when the
   support has more atoms than dimensions or nearly dependent ones, the way
   the objective decreases -- and try again: an active-set
   method that FISTA feeds with new atoms. Where supports nearly fill the
   feature space (data the dictionary does not code sparsely), those
   Cholesky solves, one per atom that leaves, dominated the time; samples
   whose support reaches three quarters of the features instead start (and,
   once stalled, finish) each working set with a primal active-set method
   (Lawson & Hanson, 1974; the feature-sign search of Lee et al., 2007) that
   keeps the inverse of ``G_SS`` up to date by rank-one updates as atoms
   enter and leave;
4. the duality gap of the *full* problem certifies each sample; samples whose
   gap is below ``tol * P(z)`` leave the batch (they stop costing compute), the
   others build a new working set from the correlations of their residual and
   go back to step 2 (ranked in float32; a sample whose last round did not
   lower its objective ranks them in float64, since float32 cannot tell atoms
   apart that violate the optimality conditions by less than about 1e-7).

The duality gap uses the dual point ``theta = s r`` with ``r = x - zD`` the
residual and ``s = min(1, alpha / max_j r.d_j)`` (``max_j |r.d_j|`` without the
sign constraint), so ``P(z) - P* <= gap``: ``tol`` bounds the relative
suboptimality of every returned code. The residual of a sparse code is a sum
of a few atoms (an ``embedding_bag``, in float64), so a certificate costs one
dense product ``r D^T``, which runs in float32 whatever the data's dtype: it
only has to find the largest correlation. A rounding bound on those float32
correlations bounds each gap from above and below; the upper bound is itself
a certificate (its dual point is feasible whatever the rounding), and only
samples whose two bounds straddle the tolerance get their largest correlation
from float64 dot products with the few atoms the bound cannot rule out
(float32 rounding alone can exceed the tolerance when supports are large).

On a CPU with several torch threads, each batch is split into one share per
thread, solved side by side by worker threads running one intra-op thread
each: the solver's kernels are too small for intra-op parallelism, and
samples are independent (on the paper's oracle task with 2 threads, 0.26 s
instead of 0.37 s in float64, see ``benchmarks/RESULTS.md``).

Samples whose working set would cover half of the atoms (dense solutions,
e.g. a small ``alpha`` on a small dictionary) are solved on all atoms directly,
with the gradient in whichever of the Gram form ``z G - c`` (``G = D D^T``) and
the residual form ``-(x - zD) D^T`` is cheaper, and with the same Newton and
active-set steps. No ``(n_components, n_components)`` matrix is formed beyond
``_MAX_GRAM_ELEMENTS`` entries, every array of a batch holds
``O(batch_size * max(n_components, n_features))`` entries, and the per-sample
working-set systems (``O(w^2)`` each) are solved in chunks of
``_SYSTEM_ELEMENTS``.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import nullcontext
from numbers import Integral, Real
from typing import Any, NamedTuple, Self

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import (
    BaseEstimator,
    TransformerMixin,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.utils import _safe_indexing
from sklearn.utils._array_api import check_same_namespace
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._dictionary import (
    CODING_ESTIMATOR,
    EXPOSES_COMPONENTS,
    PROVIDER_CONSTRAINT,
    ConceptNamesOutMixin,
    _normalize_atoms,
    _sample_objective,
    batch_statistics,
    check_frozen_fitted,
    check_n_components,
    check_provider_features,
    concept_names_of,
    fit_provider,
    fits_on_data,
    initial_dictionary,
    is_provider,
    is_same_given,
    learn_dictionary,
    online_dictionary_update,
    provider_input,
    record_given,
    resolve_dictionary,
    sparse_atoms_slip,
    store_in_batch_type,
    take_providers_tags,
    torch_generator,
)
from ._fitting import forget_fit_on_failure
from ._params import (
    StrictParamsMixin,
    check_holdable,
    count_from,
    fit_context,
    is_count,
)
from ._tensor import (
    DEVICE_CONSTRAINT,
    DetachedCloneMixin,
    as_tensor,
    ieee_float32_products,
    ignores_autocast,
    is_estimator,
    is_tensor,
    one_thread_for_small_work,
    outside_inference_mode,
    portable_state,
    rows_per_block,
    set_own_thread_count,
    sum_of_squares,
    to_fitted,
    to_output,
    validate_codes,
    validate_input,
    warn_if_all_zero,
)
from ._typing import ArrayLike, Bool, Device, Float, Int, Seed
from ._warnings import warn

__all__ = ["FISTACoder", "FISTAResult", "fista_encode", "lipschitz_constant"]

# Elements per (n_samples, n_components)- or (n_samples, n_features)-shaped
# work array in one batch when ``batch_size=None``: 2**24 float32 values are
# 64 MiB, which keeps the peak of one batch (codes, correlations, residual
# correlations, atom scores; the float64 copies of the rows and their
# residuals) near 256 MiB in float32, beside the codes returned (270 MiB for
# 40,000 rows on 1,000 atoms; 630-740 MiB for 131,072 rows of 64 features on
# 128 atoms, where a batch holds more rows and their per-row work arrays).
# Sized by atoms alone, a batch of wide rows on few atoms took all rows at
# once: 100,000 rows of 1,024 features on 16 atoms peaked at 7 times the data.
_AUTO_BATCH_ELEMENTS = 2**24
# Entries of the rows in each worker thread's share of an automatic batch: the
# solver keeps several float64 (rows, n_features) arrays of a share alive, and
# at 2**24 / n_features rows they were 128 MiB each, far beyond the caches.
# Shares of 2**20 (8 MiB a float64 array; at least _MIN_SHARE_ROWS rows, so
# that a batch still splits between threads) coded 8 known directions on 768
# / 4,096 features in 0.50x / 0.49x the time, and 128-512 atoms on 1,024
# features in 0.46x-0.63x (one thread); with more atoms than features, as
# fast as before (benchmarks/bench_batch_size.py, RESULTS.md "Automatic
# batches of wide rows").
_AUTO_SHARE_ELEMENTS = 2**20
# Elements per (rows, w, w)-shaped array of the per-sample working-set Gram
# matrices and Newton systems, processed in chunks of rows: about five such
# arrays are alive at once (the gathered Gram matrices and their int64 index,
# the system, its Cholesky factor and magnitudes), in float64, so 2**21
# elements each (16 MiB) add about 80 MiB to a batch. At 2**24 elements they
# added about 700 MiB (a 2,000-atom batch of 8,388 rows peaked at +956 MB).
_SYSTEM_ELEMENTS = 2**21
# Float32 dictionaries of at most this many entries get a float64 copy for
# the certificates; larger ones gather the atoms a code uses, in float64.
_FLOAT64_COPY_ELEMENTS = 2**22
# Eigenvalues of a singular Newton system at most this fraction of its largest
# one, times its size, count as zero: float64 eigh leaves exact null
# directions at about eps times the largest eigenvalue.
_NULL_EIGENVALUE = 64 * torch.finfo(torch.float64).eps
# With a progress bar and batch_size=None, batches are cut to about a 20th of
# the samples (at least 4,096 rows), so that the bar moves: one automatic
# batch held 2**24 / max(n_components, n_features) rows, 168k samples at 100
# atoms, which left the bar at 0 % for the whole run. Not below 4,096 rows:
# each batch runs the solver's iterations with their fixed costs, and a bar
# of 1,024-row batches made coding 10,000-40,000 rows 1.3x-1.7x slower (256
# rows: 5,000 rows took 0.53 s against 0.22 s in one batch).
_PROGRESS_STEPS = 20
_MIN_PROGRESS_ROWS = 4096
# Largest full Gram matrix (n_components ** 2 elements) precomputed and reused.
_MAX_GRAM_ELEMENTS = 2**24
# Fewest rows per atom coded in one call for which the full Gram matrix pays
# for itself; fewer gather their working sets' products from the atoms. At
# one row in eight, a stream coded in chunks of 512 rows on 4,096 atoms took
# 1.8x the time of gathering (benchmarks/bench_chunks.py); the break-even is
# near one row in two.
_MIN_GRAM_ROWS_PER_ATOM = 1 / 2
# A working set holds the support plus half as many other atoms, at least
# _WORKING_SET_STEP, rounded up to a multiple of the step and at least twice
# the step in all (8 atoms for a cold start). Small sets make every iteration
# and Newton step cheap (batched LAPACK factorisations on CPU cost about 1 us
# per matrix up to 16 x 16 and several times more beyond; the paper's task has
# about 10 active atoms per sample); the geometric growth keeps the number of
# rounds logarithmic for large supports (Celer doubles them).
_WORKING_SET_STEP = 4
# FISTA iterations between two checks (working-set gap and Newton attempts).
_CHECK_EVERY = 5
# Iterations after which a working-set solve is deemed stalled: Newton steps
# are then tried on every sample, and also shrink supports they cannot solve.
_STALLED = 20
# Working sets of up to this many atoms take Newton steps on the whole set,
# inactive atoms padded: a batched Cholesky of 32 x 32 matrices costs a few
# microseconds per matrix, less than extracting and grouping supports by size.
_WHOLE_NEWTON = 32
# Working-set solves whose warm start has at least this many atoms, and this
# fraction of the number of features, start with the active-set method
# (_active_set), which may take up to _ACTIVE_SET_STEPS times the working
# set's size in steps. On moderate supports FISTA's own Newton steps are
# cheaper: with 32 atoms alone as the bound, a 5-round dictionary fit at
# n_latents=1,000 took 1.11 s instead of 0.87 s (benchmarks/RESULTS.md).
_ACTIVE_SET_SUPPORT = 32
_ACTIVE_SET_FRACTION = 0.75
_ACTIVE_SET_STEPS = 4
# Steps between two Newton points of _active_set computed afresh from its
# inverse (in between, rank-one updates).
_ACTIVE_SET_REFRESH = 8
# The all-atoms solver takes Newton steps (and their support reductions) on
# supports of up to max(2 * n_features, this many) atoms: a support larger
# than n_features is singular, and the null-vector moves that shrink it are
# what converges it. Capped at 2 * n_features alone, one feature and three
# near-duplicate atoms ran 1,000 iterations to a gap of 6e-4; with the
# reductions, 20 iterations to the optimum.
_MIN_POLISH_SUPPORT = 32
# A working-set gap is computed from Gram quantities, ``r.r = x.x - 2 z.b +
# z G z``, which loses about eps * x.x to cancellation; below this many eps
# times x.x the gap is not measurable, and a row asked for less would spin
# to its budget in its first working set (tol=1e-13, 200 atoms: 38 of 300
# rows ended at relative gaps up to 0.9). The certificate that decides
# convergence uses exact residuals.
_EXPANSION_ROUNDING = 16
# The certificate's gap, from float64 residuals ``x - zD`` (each entry off by
# about eps ||x||), is not measurable below a few eps * x.x either: rows at
# their optimum to 1e-18 (checked with mpmath: alpha=1e-10 beside rows of norm
# 1) kept gaps of 1-5 eps x.x, above tol times their objective (about alpha
# ||z||_1), and spun to max_iter. A row whose certified gap is at most this
# many eps times x.x leaves, unconverged, instead.
_CERTIFICATE_ROUNDING = 16
# Working-set groups of fewer rows join the next wider group (_merge_widths).
_MIN_GROUP_ROWS = 256
# Finished samples are dropped from a working-set solve once they make up this
# fraction of it: copying the per-sample Gram matrices for one sample is waste.
_COMPACT_FRACTION = 1 / 8
# Power iterations between two reads of their estimates (lipschitz_constant).
# On the CPU the same times as reading each (1,000 x 93 atoms: 33-42 ms
# either way; 8,192 x 512: 1.7-2.0 s).
_POWER_READS_EVERY = 16
# Codes with fewer than one non-zero in ``_SPARSE_SUPPORT`` entries have
# their supports listed by ``torch.nonzero`` (O(nnz) scatters) rather than by
# cumulative sums over every entry (see _support_indices). One thread,
# scatters against sums: 2,500 x 1,000 at 5% non-zeros 18 ms against 64 ms,
# at 30% 62 against 59 ms; 400 x 186 at 5% 0.47 against 0.57 ms, at 20%
# 0.81 against 0.54 ms.
_SPARSE_SUPPORT = 8
# Samples are independent, so on a CPU with several torch threads a batch is
# split into one share per thread, solved side by side by worker threads that
# each run one intra-op thread: the solver's kernels are small (a few hundred
# rows by a few dozen atoms), too small for intra-op parallelism, and spend
# most of their time outside the GIL (oracle task, 5,000 samples, 2 cores:
# 2 intra-op threads were no faster than 1, 2 shares take 0.70x the time of
# one thread in float64 and 0.63x in float32). Shares below this many rows are
# not worth a thread (per-call overheads dominate them).
_MIN_SHARE_ROWS = 512
# Iterations after which float32 samples not yet certified are finished in
# float64 (see fista_encode); certified samples take 24 on average on the
# oracle task. alpha=0.01 there (1,000 samples of make_compositional, 100 to
# 1,000 atoms, one thread): 0.21-0.26 s with 50, 0.71-0.96 s with 200, and
# 3.4-4.5 s for float32 alone, which runs to max_iter; alpha=0.1 unchanged.
_FLOAT32_ITERATIONS = 50
# Length of the momentum table: beyond it steps keep its last momentum,
# 0.99927 instead of creeping on towards 1, so that memory does not grow
# with max_iter (10**8 iterations took a 3.3 GB table).
_MOMENTUM_STEPS = 4096


# Worker threads solving the shares of one call share a stop flag. An
# exception in the calling thread (Ctrl-C's KeyboardInterrupt) sets it, and
# each worker leaves its share at its next check instead of finishing it:
# the pool's exit waits for running workers, and Ctrl-C during a stream's
# partial_fit on 2 threads took 20 s to return.
_worker = threading.local()


class _Stopped(Exception):
    """A worker's share abandoned because its call is ending."""


def _stop_if_requested() -> None:
    """Raise :class:`_Stopped` in a worker thread whose call is ending."""
    stop = getattr(_worker, "stop", None)
    if stop is not None and stop.is_set():
        raise _Stopped


class FISTAResult(NamedTuple):
    """Output of :func:`fista_encode`.

    Attributes
    ----------
    codes : torch.Tensor of shape (n_samples, n_components)
        The sparse codes.
    n_iter : torch.Tensor of shape (n_samples,)
        FISTA iterations spent on each sample (summed over working sets).
    converged : torch.Tensor of shape (n_samples,)
        Whether each sample's duality gap reached ``tol``. A sample not
        converged that spent fewer than ``max_iter`` iterations stopped where
        float64 rounding hides its gap (see :func:`fista_encode`'s ``tol``).
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


def _working_set_gap(gz, b, z, x_sq, alpha, positive):
    """Primal value and duality gap of the lasso restricted to a working set.

    From Gram quantities, with ``gz = G z``: ``r.r = x.x - 2 z.b + z G z``,
    ``x.r = x.x - z.b`` and ``r.d_j = b_j - (G z)_j``.
    """
    z_dot_b = torch.linalg.vecdot(z, b)
    r_sq = (x_sq - 2.0 * z_dot_b + torch.linalg.vecdot(z, gz)).clamp_min(0.0)
    scale = _dual_scaling(b - gz, alpha, positive)
    return _gap_from_residual(x_sq - z_dot_b, r_sq, z.abs().sum(dim=1), scale, alpha)


def _support_indices(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of each row's non-zeros, padded to the largest support.

    Returns ``idx`` ``(n, s)``, each row's support positions (in order)
    followed by positions of zeros, all distinct, and ``valid`` ``(n, s)``,
    false on the padding.
    """
    n, m = z.shape
    count = torch.count_nonzero(z, dim=1)
    s = int(count.max()) if z.numel() else 0
    if _SPARSE_SUPPORT * int(count.sum()) < z.numel():
        # Mostly zeros (the warm start of a learning round: n_components=1000,
        # 1.5% non-zeros, 11 ms against 57 ms by the cumulative sums below):
        # scatter the non-zeros, then pad each row with its first ``s -
        # count`` zeros, which lie among its first ``s`` positions.
        rows, cols = torch.nonzero(z, as_tuple=True)
        first = count.cumsum(dim=0) - count
        slot = torch.arange(rows.numel(), device=z.device) - first[rows]
        idx = torch.empty(n, s, dtype=torch.long, device=z.device)
        idx[rows, slot] = cols
        zero = z[:, :s] == 0
        destination = zero.cumsum(dim=1).add_(count[:, None] - 1)
        rows, cols = torch.nonzero(zero & (destination < s), as_tuple=True)
        idx[rows, destination[rows, cols]] = cols
    else:
        # Destination of every position: support first, in order, then the
        # rest, from cumulative sums (``torch.topk`` costs several times more
        # on CPU).
        support = z != 0
        destination = torch.where(
            support, support.cumsum(dim=1), count[:, None] + (~support).cumsum(dim=1)
        ).sub_(1)
        positions = torch.arange(m, device=z.device).expand_as(destination)
        idx = torch.empty_like(destination).scatter_(1, destination, positions)[:, :s]
    return idx, torch.arange(s, device=z.device) < count[:, None]


def _first_zero(z, direction, moving):
    """Move ``z`` along ``direction`` until its first ``moving`` entry reaches 0.

    Rows with no such entry take the full step. The entry that reaches zero
    is set to exactly zero, so the support shrinks by one.
    """
    hit = torch.where(moving, -z / direction, torch.inf)
    fraction, first = hit.min(dim=1, keepdim=True)
    fraction = fraction.clamp(max=1.0)
    moved = z + fraction * direction
    return moved.scatter_(
        1, first, torch.where(fraction < 1.0, 0.0, moved.gather(1, first))
    )


def _newton_on_support(system, target, current, valid, partial):
    """Newton step on the face of the current support and signs.

    With the support ``S`` and the signs ``s`` of ``current`` (``z_S``) fixed,
    the lasso is the quadratic ``phi(u) = u G_SS u / 2 - (b_S - alpha s).u``
    whose minimiser solves ``G_SS u = b_S - alpha s``; ``system`` is
    ``c G_SS`` and ``target`` is ``c (b_S - alpha s)`` for a positive scale
    ``c`` per row, all padded, ``valid`` marking the real entries. ``G_SS`` is
    positive definite when the support atoms are linearly independent, so a
    Cholesky factorisation suffices; it runs in float64 because supports can
    be ill-conditioned and the systems are tiny.

    When the solution keeps the signs, it is the exact optimum on the face:
    the optimum of the lasso as soon as the atoms outside ``S`` satisfy the
    optimality conditions, which the gap check decides. With ``partial``, two
    more moves shrink the support of rows where that fails (the feature-sign
    search of Lee et al., 2007, "Efficient sparse coding algorithms", and the
    support reduction in the proof of Tibshirani, 2013, "The lasso problem
    and uniqueness", Lemma 14):

    * signs flip: step towards the solution until the first coefficient
      reaches zero; ``phi`` is convex along the segment with its minimum at
      the far end, so it decreases;
    * ``G_SS`` singular (more atoms than ``n_features``, or dependent ones):
      move along a null vector ``d`` of ``G_SS``, oriented so that ``phi``
      does not increase to first order, until the first coefficient
      reaches zero. For an exact null vector the residual ``x - zD`` does
      not change and this orientation is ``s.d <= 0``: the L1 norm does not
      grow. Then the same along each other null vector, the zeroed
      coordinates eliminated from it first, so that the support falls to
      the rank of ``G_SS`` with one eigendecomposition
      (:func:`_null_moves`).

    Every move is kept only if ``phi`` does not increase (computed exactly
    from ``system``). Returns the new coefficients ``(k, s)`` (zero on the
    padding), which rows took the exact step and which took another move.
    """
    s = system.shape[-1]
    pair = valid.unsqueeze(2) & valid.unsqueeze(1)
    eye = torch.eye(s, dtype=torch.float64, device=system.device)
    A = torch.where(pair, system.double(), eye)
    t = torch.where(valid, target.double(), 0.0)
    z = current.double()
    sign = torch.sign(z)
    factor, info = torch.linalg.cholesky_ex(A)
    solution = torch.cholesky_solve(t.unsqueeze(2), factor).squeeze(2)
    solved = (info == 0) & torch.isfinite(solution).all(dim=1)
    exact = solved & ((solution * sign > 0) | ~valid).all(dim=1)
    if not partial:
        return solution, exact, torch.zeros_like(exact)
    direction = solution - z
    moved = _first_zero(z, direction, valid & (solution * sign <= 0))
    singular = torch.nonzero(~solved).flatten()
    reduced = None
    if singular.numel():
        eigenvalues, vectors = torch.linalg.eigh(A[singular])
        z_s, sign_s, valid_s = z[singular], sign[singular], valid[singular]
        A_s, t_s = A[singular], t[singular]
        moved[singular], first, step = _null_move(
            z_s, sign_s, valid_s, vectors[..., 0], A_s, t_s
        )
        # Every other eigenvector at rounding level spans the null space
        # too (more atoms than features: at least s - n_features of them).
        # Moving along each in turn, with the coordinates already zeroed
        # eliminated from the rest, shrinks the support to the rank with one
        # eigendecomposition instead of one per atom (64 features, 256
        # atoms, alpha=0.02: eigh took half of the coding time).
        flat = eigenvalues[:, 1:] <= eigenvalues[:, -1:] * s * _NULL_EIGENVALUE
        if bool(flat.any()):
            reduced = moved.clone()
            reduced[singular] = _null_moves(
                moved[singular],
                sign_s,
                valid_s,
                vectors[..., 1:],
                flat,
                first,
                step,
                A_s,
                t_s,
            )
    if reduced is None:
        moves = ~exact & _no_increase(A, t, z, moved)
    else:
        # The chained moves are kept where phi has not increased (rounding
        # in the eliminations), else the single move.
        moves = ~exact & _no_increase(A, t, z, reduced)
        moved = torch.where(moves.unsqueeze(1), reduced, moved)
        rest = torch.nonzero(~exact & ~moves).flatten()
        moves[rest] = _no_increase(A[rest], t[rest], z[rest], moved[rest])
    return torch.where(exact.unsqueeze(1), solution, moved), exact, moves


def _no_increase(A, t, z, moved):
    """Whether ``phi`` of each row does not increase from ``z`` to ``moved``.

    ``phi(moved) - phi(z) = (A z - t).d + d A d / 2`` with ``d = moved - z``,
    and rows that do not move count as no move.
    """
    d = moved - z
    change = torch.linalg.vecdot(_bmv(A, z) - t, d) + 0.5 * torch.linalg.vecdot(
        d, _bmv(A, d)
    )
    # Moves along a flat direction (duplicate or negated atoms: any split of
    # a coefficient between the two is optimal) change phi by 0 exactly, which
    # the sum above computes as +-rounding: refused half the time, they left
    # such rows to plain FISTA (200 atoms, half of them negated copies: 3 of
    # 10 rows past 1,000 iterations; accepted, all within 250). A change
    # within the sum's rounding bound counts as no increase.
    absolute = A.abs()
    rounding = torch.linalg.vecdot(_bmv(absolute, z.abs()) + t.abs(), d.abs())
    rounding += torch.linalg.vecdot(d.abs(), _bmv(absolute, d.abs()))
    slack = A.shape[-1] * torch.finfo(torch.float64).eps * rounding
    return (change <= slack) & (d != 0).any(dim=1)


def _null_move(z, sign, valid, null, A, t):
    """Move ``z`` along the null vector ``null`` until an entry reaches zero.

    The vector is oriented so that ``slope.null <= 0``, ``slope = A z - t``
    being the gradient of ``phi`` at ``z`` (see :func:`_newton_on_support`), and
    scaled so that the step ends at the first zero. Returns the moved rows,
    the index of the entry set to zero per row, and the step taken (zero for
    rows with no entry moving towards zero).
    """
    null = torch.where(valid, null, 0.0)
    # Along an exact null vector phi changes by alpha s.null, so orienting by
    # the L1 norm would do. A numerical one is not exact: two atoms at an
    # angle of 1e-8 give an eigenvalue of 1e-16, along which a coefficient
    # shared by the pair moves from one atom to the other with s.null = 0
    # to rounding, and the residual's change decides whether phi rises.
    # Oriented by s alone, half of such moves went uphill and were refused;
    # the rows spun in their working set to max_iter, up to 175x above the
    # optimum (tests/test_fista.py, near-duplicate atoms).
    slope = _bmv(A, z) - t
    null = torch.where((slope * null).sum(1, keepdim=True) > 0, -null, null)
    moving = valid & (sign * null < 0)
    hit = torch.where(moving, -z / null, torch.inf)
    reach, first = hit.min(dim=1, keepdim=True)
    step = null * torch.where(torch.isfinite(reach), reach, 0.0)
    moved = z + step
    moved = moved.scatter_(
        1, first, torch.where(torch.isfinite(reach), 0.0, moved.gather(1, first))
    )
    return moved, first, step


def _null_moves(z, sign, valid, basis, flat, first, step, A, t):
    """Null moves along each flat column of ``basis`` in turn (see above).

    Before each move, the coordinate zeroed by the previous step is removed
    from the remaining null vectors by subtracting a multiple of that step
    (still a null vector), so that zeroed entries stay zero.
    """
    basis = torch.where(flat.unsqueeze(1), basis, 0.0)
    for j in range(int(flat.sum(dim=1).max())):
        pivot = step.gather(1, first)
        usable = pivot != 0
        rest = basis[:, :, j:]
        ratio = rest.gather(1, first.unsqueeze(2).expand(-1, 1, rest.shape[2]))
        ratio = torch.where(usable.unsqueeze(2), ratio / pivot.unsqueeze(2), 0.0)
        rest -= step.unsqueeze(2) * ratio
        valid = valid & (z != 0)
        z, first, step = _null_move(z, sign, valid, basis[:, :, j], A, t)
    return z


def _polish(
    z: torch.Tensor,
    b: torch.Tensor,
    alpha: float,
    scaled_gram: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    scale: torch.Tensor | None = None,
    partial: bool = False,
    whole: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Newton steps on the supports of the rows of ``z`` ``(k, w)``.

    ``b`` ``(k, w)`` is the linear term of each row's problem and
    ``scaled_gram(rows, idx)`` returns ``scale[rows] G_SS``, the Gram matrices
    ``(len(rows), s, s)`` of the atoms at positions ``idx`` for those rows of
    ``z``, times a positive per-row ``scale`` (1 when None). With ``partial``,
    rows whose Newton step fails shrink their support as in
    :func:`_newton_on_support` and try again, until a Newton step keeps the
    signs (an active-set method on the current support). Rows are grouped
    by support size, so that each group's systems are padded to its own size
    (LAPACK's batched Cholesky costs grow fast with it), in chunks of at most
    ``_SYSTEM_ELEMENTS`` values. With ``whole`` (small ``w``), every
    system is instead the ``w x w`` one, inactive atoms padded (``idx`` is
    None: all positions): one factorisation call, no support to extract.
    Returns the new codes and which rows may use them.
    """
    z = z.clone()
    usable = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    pending = torch.arange(z.shape[0], device=z.device)
    # Each failed step removes one atom: a support of s atoms needs at most s.
    for _ in range(z.shape[1] if partial else 1):
        zp = z[pending]
        if whole:
            target = b[pending] - alpha * torch.sign(zp)
            if scale is not None:
                target *= scale[pending].unsqueeze(1)
            # Inactive atoms are padding: their solution entries are zero.
            solution, exact, moved = _newton_on_support(
                scaled_gram(pending, None), target, zp, zp != 0, partial
            )
            rows, solution_step = _compact(exact | moved, [pending, solution])
            z[rows] = solution_step.to(z.dtype)
        else:
            # Rows sorted by support size: each size group is a contiguous slice.
            size = ((zp != 0).sum(dim=1) + 7) // 8 * 8
            order = torch.argsort(size)
            pending, size, zp = pending[order], size[order], zp[order]
            idx, valid = _support_indices(zp)
            current = zp.gather(1, idx)
            target = b[pending].gather(1, idx) - alpha * torch.sign(current)
            if scale is not None:
                target *= scale[pending].unsqueeze(1)
            solution = torch.zeros_like(target, dtype=torch.float64)
            exact = torch.zeros(pending.numel(), dtype=torch.bool, device=z.device)
            moved = torch.zeros_like(exact)
            sizes, counts = torch.unique_consecutive(size, return_counts=True)
            start = 0
            for s, count in zip(sizes.tolist(), counts.tolist(), strict=True):
                s = min(s, idx.shape[1])
                if s == 0:
                    # Support reduction left nothing: zero is the optimum on
                    # the empty face, reached with phi decreasing.
                    exact[start : start + count] = True
                    start += count
                    continue
                chunk = max(1, _SYSTEM_ELEMENTS // (s * s))
                for lo in range(start, start + count, chunk):
                    part = slice(lo, min(lo + chunk, start + count))
                    solution[part, :s], exact[part], moved[part] = _newton_on_support(
                        scaled_gram(pending[part], idx[part, :s]),
                        target[part, :s],
                        current[part, :s],
                        valid[part, :s],
                        partial,
                    )
                start += count
            # Padding entries of the solution are zero and land on zeros of z.
            rows, zp_step, idx_step, solution_step = _compact(
                exact | moved, [pending, zp, idx, solution]
            )
            z[rows] = torch.zeros_like(zp_step).scatter_(
                1, idx_step, solution_step.to(z.dtype)
            )
        usable[rows] = True
        pending = pending[moved & ~exact]
        if not pending.numel():
            break
    return z, usable


def _lasso_value(A, c, a, z):
    """``z A z / 2 - c.z + a |z|_1`` per row, and a bound on its terms' sizes."""
    quadratic = 0.5 * torch.linalg.vecdot(_bmv(A, z), z)
    linear = torch.linalg.vecdot(c, z)
    l1 = a.squeeze(1) * z.abs().sum(dim=1)
    return quadratic - linear + l1, quadratic.abs() + linear.abs() + l1


def _active_set(
    A: torch.Tensor,
    c: torch.Tensor,
    a: torch.Tensor,
    z: torch.Tensor,
    positive: bool,
    max_steps: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Active-set solve of ``min_z z A z / 2 - c.z + a |z|_1`` from ``z``, per row.

    ``A`` ``(k, w, w)`` (positive semi-definite), ``c`` ``(k, w)`` and ``a``
    ``(k, 1)`` (positive) in float64 (``z >= 0`` when ``positive``). The
    primal active-set method of Lawson & Hanson (1974) for NNLS, or the
    feature-sign search of Lee et al. (2007, "Efficient sparse coding
    algorithms") with the lasso's signs: on the face of the current support
    ``F`` and signs ``s``, the Newton point ``u = A_FF^-1 (c_F - a s_F)``;
    where ``u`` keeps the signs, the row moves there (the face's optimum) and
    adds the atom that violates its optimality conditions most, ``|c_j - (A
    u)_j| > a``, with the sign of its correlation; otherwise it moves towards
    ``u`` up to the first coordinate that reaches zero, and drops that one.
    Each move lowers the objective (``phi`` is convex along the segment and
    least at ``u``; an atom added at a face's optimum moves towards its sign,
    by ``(A_FF^-1)_jj`` times its violation), so no face repeats.

    One atom enters or leaves per step, so the inverse ``M = A_FF^-1``
    (zero outside ``F``) is updated in ``O(w^2)`` per row and step by the
    bordering formula (adding) or its Schur complement (dropping), instead of
    refactorised in ``O(|F|^3)``: with supports near the feature space's
    dimension, the faces change by a few dozen atoms per working set, and
    one Cholesky factorisation per change made the working-set solves cost
    several times sklearn's coordinate descent (see ``benchmarks/RESULTS.md``).
    The Newton point is updated alongside in ``O(w)``, and recomputed from
    ``M`` with one step of iterative refinement against ``A`` (Higham, 2002,
    ch. 12) every ``_ACTIVE_SET_REFRESH`` steps, so that the updates'
    rounding does not build up; the caller's duality gaps certify the codes
    anyway, and a row whose objective rose (rounding) keeps its start.

    An atom within rounding of the span of the face's atoms (``A_FF``
    singular with it) cannot enter; its row stops there, as it does after
    ``max_steps`` ``(k,)`` steps of its own (each costs about one FISTA
    iteration; every move lowers the objective, so a row stopped early is
    still better off). Returns the codes and the rows on which the method
    ran (the others' initial supports were singular, and they keep ``z``),
    and the steps taken per row.
    """
    k, w = z.shape
    eps = torch.finfo(torch.float64).eps
    A0, c0, a0, z0 = A, c, a, z
    s = torch.sign(z)
    face = s != 0
    eye = torch.eye(w, dtype=A.dtype, device=A.device)
    pair = face.unsqueeze(2) & face.unsqueeze(1)
    factor, info = torch.linalg.cholesky_ex(torch.where(pair, A, eye))
    diagonal = torch.diagonal(A, dim1=1, dim2=2)
    # Pivots as small as those refused to entering atoms (below): a support
    # with more atoms than features can factorise with rounding-level ones.
    pivots = torch.diagonal(factor, dim1=1, dim2=2) ** 2
    ran = (info == 0) & ((pivots > 1e-10 * diagonal) | ~face).all(dim=1)
    # (Failed factors replaced: cholesky_inverse raises on zero pivots.)
    factor = torch.where(ran.view(-1, 1, 1), factor, eye)
    M = torch.where(pair, torch.cholesky_inverse(factor), 0.0)
    out = z.clone()
    rows = torch.nonzero(ran).flatten()
    A, c, a, z, s, M, diagonal = _compact(rows, [A, c, a, z, s, M, diagonal])
    last = torch.full_like(rows, -1)  # the atom each row added last
    taken = torch.zeros(k, dtype=torch.long, device=z.device)
    running = torch.ones_like(rows, dtype=torch.bool)
    position = torch.arange(rows.numel(), device=z.device)
    u = None
    for step in range(int(max_steps.max()) if k else 0):
        if not rows.numel():
            break
        taken[rows[running]] += 1
        face = s != 0
        if step % _ACTIVE_SET_REFRESH == 0:
            # Newton points from M, refined against A; in between, updated
            # with M's rank-one updates (below).
            t = torch.where(face, c - a * s, 0.0)
            u = _bmv(M, t)
            u += _bmv(M, torch.where(face, t - _bmv(A, u), 0.0))
        wrong = face & (u * s <= 0)
        moving = wrong.any(dim=1) & running
        # Rows with a coordinate crossing zero: to the first zero, dropped.
        hit = torch.where(wrong, z / (z - u), torch.inf)
        fraction, drop = hit.min(dim=1)
        fraction = torch.where(moving, fraction.clamp(0.0, 1.0), 1.0)
        z = torch.where(running.unsqueeze(1), z + fraction.unsqueeze(1) * (u - z), z)
        # Rows at their face's optimum (z = u): the most violated atom enters.
        product = _bmv(A, u)
        corr = c - product
        score = corr if positive else corr.abs()
        slack = w * eps * (c.abs() + product.abs()) + eps**0.5 * a
        violation = torch.where(face, -torch.inf, score - a - slack)
        worst, enter = violation.max(dim=1)
        column = A.gather(2, enter.view(-1, 1, 1).expand(-1, w, 1)).squeeze(2)
        column = torch.where(face, column, 0.0)
        v = _bmv(M, column)
        pivot = diagonal.gather(1, enter.unsqueeze(1)).squeeze(1)
        schur = pivot - torch.linalg.vecdot(column, v)
        # A new atom (numerically) in the span of the face cannot enter.
        adding = running & ~moving & (worst > 0) & (schur > 1e-10 * pivot)
        # Rank-one updates of M = A_FF^-1 and of the Newton point u: dropping
        # j, M - m m^T / m_jj with m = M_:j, and u - m u_j / m_jj; adding j,
        # the bordered inverse [[M + v v^T / sc, -v / sc], [-v^T / sc, 1 / sc]]
        # with v = M A_Fj and sc = A_jj - A_jF v, the Schur complement, and
        # u_F - g v, u_j = g with g = (c_j - a s_j - A_jF u_F) / sc.
        m = M.gather(2, drop.view(-1, 1, 1).expand(-1, w, 1)).squeeze(2)
        m_jj = m.gather(1, drop.unsqueeze(1))
        sc = schur.clamp_min(eps).unsqueeze(1)
        vector = torch.where(
            moving.unsqueeze(1),
            m / m_jj.abs().sqrt(),
            torch.where(adding.unsqueeze(1), v, 0.0) / sc.sqrt(),
        )
        sign = torch.where(moving, -1.0, 1.0).to(M.dtype).view(-1, 1, 1)
        M.baddbmm_(vector.unsqueeze(2) * sign, vector.unsqueeze(1))
        entering = torch.sign(corr.gather(1, enter.unsqueeze(1)))
        gain = (corr.gather(1, enter.unsqueeze(1)) - a * entering) / sc
        u = torch.where(
            moving.unsqueeze(1),
            u - m * (u.gather(1, drop.unsqueeze(1)) / m_jj),
            torch.where(adding.unsqueeze(1), u - gain * v, u),
        )
        dropped, atom = _compact(moving, [position, drop])
        z[dropped, atom] = u[dropped, atom] = s[dropped, atom] = 0.0
        M[dropped, atom, :] = 0.0
        M[dropped, :, atom] = 0.0
        added, atom, v_added, sc_added, schur_added, sign_added, gain_added = _compact(
            adding, [position, enter, v, sc, schur, entering, gain]
        )
        border = -v_added / sc_added
        M[added, atom, :] = border
        M[added, :, atom] = border
        M[added, atom, atom] = 1.0 / schur_added
        s[added, atom] = sign_added.squeeze(1)
        u[added, atom] = gain_added.squeeze(1)
        # Rows with no move and no atom to add are at their optimum (or
        # stopped by a dependent atom). A row whose new atom heads the wrong
        # way (rounding: a violation near the slack) drops it without
        # moving, and would add it again: it stops too.
        done = running & (
            (~moving & ~adding)
            | (moving & (fraction == 0) & (drop == last))
            | (taken[rows] >= max_steps[rows])
        )
        last = torch.where(adding, enter, torch.where(moving, -1, last))
        if bool(done.any()):
            done_rows, done_z = _compact(done, [rows, z])
            out[done_rows] = done_z
            running &= ~done
            # Finished rows are dropped from the arrays once they are a
            # quarter of them (copying the (w, w) matrices costs).
            if 4 * int((~running).sum()) >= rows.numel():
                rows, A, c, a, z, s, M, diagonal, last, u = _compact(
                    running, [rows, A, c, a, z, s, M, diagonal, last, u]
                )
                running = running[running]
                position = position[: rows.numel()]
    out[rows[running]] = z[running]
    # Each move lowers the objective in exact arithmetic; rows where rounding
    # made it rise keep their start (and are not reported as run).
    (start, size), (end, _) = (_lasso_value(A0, c0, a0, v) for v in (z0, out))
    ran &= end <= start + w * eps * size
    return torch.where(ran.unsqueeze(1), out, z0), ran, taken


def _polish_candidates(z, last_support, finished, max_support, stalled):
    """Return the rows worth a Newton step, and the support mask of ``z``.

    Rows qualify when non-empty, small enough and with an unchanged support;
    once ``stalled``, whether or not their support changed.
    """
    support = z != 0
    count = support.sum(dim=1)
    candidate = (count > 0) & (count <= max_support) & ~finished
    if not stalled:
        candidate &= (support == last_support).all(dim=1)
    return torch.nonzero(candidate).flatten(), support


def _fista_working_set(
    gram: torch.Tensor,
    b: torch.Tensor,
    z: torch.Tensor,
    x_sq: torch.Tensor,
    alpha: float,
    positive: bool,
    tol: float,
    max_iter: torch.Tensor,
    large_support: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FISTA with restart on per-sample problems ``0.5 zGz - b.z + alpha |z|_1``.

    ``gram`` is ``(n, w, w)`` (overwritten). Every ``_CHECK_EVERY``
    iterations, a sample whose support has not changed over the last
    iteration takes the exact Newton step on its support (:func:`_polish`),
    which typically ends it at once; after ``_STALLED`` iterations every
    sample tries, with the active-set moves. Samples whose warm start, or
    once stalled whose support, holds at least ``large_support`` atoms run
    :func:`_active_set` instead, its steps counted as iterations. Then each
    sample's working-set gap is checked. A sample stops when its gap is at
    most ``tol * P`` (or below what rounding lets a gap measure, a few
    epsilons of ``x.x``), when its codes did not change since the last
    check (a fixed point), or at its own iteration budget ``max_iter``.
    Returns the codes and the iterations spent per sample.
    """
    n, w = z.shape
    out = z.clone()
    spent = torch.zeros(n, dtype=torch.long, device=z.device)
    rows = torch.arange(n, device=z.device)
    step = 1.0 / _gershgorin(gram)
    # The gradient step y - step (G y - b) is (y + step b) - (step G) y: one
    # batched product per iteration with the scaled Gram matrix step G, which
    # keeps G to working precision (I - step G would lose digits in float32
    # when the step is small).
    Gs = gram.mul_(step.unsqueeze(2))
    if positive:
        # prox(v) = max(v - step alpha, 0): the threshold joins the offset.
        offset, threshold = step * (b - alpha), None
    else:
        offset, threshold = step * b, alpha * step
    y, z_prev = z.clone(), z.clone()
    k = torch.ones(n, dtype=torch.long, device=z.device)
    momentum = _momentum_table(min(int(max_iter.max()), _MOMENTUM_STEPS) + 1, z)
    budget = max_iter
    # Finished rows keep iterating (harmlessly) until they are numerous
    # enough to be worth compacting away.
    finished = torch.zeros(n, dtype=torch.bool, device=z.device)
    next_stop = int(budget.min())
    # Active-set steps, counted as iterations (each costs about one).
    extra = torch.zeros(n, dtype=torch.long, device=z.device)
    # Each row's codes at the previous check: a row whose codes have not
    # moved since is at a fixed point of the iteration (the extrapolation
    # then vanishes, so every later step returns the same codes), that is at
    # its working set's optimum to working precision. Where rounding keeps
    # that optimum's gap just above tol (tol=1e-11, 63 atoms filling 63
    # features: a gap of 17.5 eps x.x against a floor of 16), the row leaves
    # instead of spinning to its budget in one working set.
    at_check = torch.full_like(z, math.nan)

    def active_set(candidates, z, it):
        # Its steps count as iterations: none takes a row past its budget.
        left = budget[candidates] - it - extra[candidates]
        rest = candidates[left <= 0]
        candidates, left = candidates[left > 0], left[left > 0]
        polished, ran, taken = _active_set(
            Gs.index_select(0, candidates),
            (step * b)[candidates],
            alpha * step[candidates],
            z[candidates],
            positive,
            left.clamp(max=_ACTIVE_SET_STEPS * w),
        )
        extra[candidates] += taken
        # The budget check that follows FISTA's iterations comes sooner.
        nonlocal next_stop
        next_stop = int((budget - extra)[~finished].min())
        return candidates[ran], polished[ran], torch.cat([candidates[~ran], rest])

    # Warm starts with large supports (the optimum of the previous working
    # set, where supports fill the feature space) start with the active-set
    # method: FISTA, ill-conditioned on such supports, would take dozens of
    # iterations and Newton steps to find what a few dozen steps of it do.
    z_new = z
    presolve = torch.nonzero((z != 0).sum(dim=1) >= large_support).flatten()
    if presolve.numel():
        z_new = z.clone()
        better, polished, _ = active_set(presolve, z, 0)
        z_new[better] = y[better] = z_prev[better] = polished
    last_support = z_new != 0
    it = 0
    first = bool(presolve.numel())  # a pass straight to the gap check
    while True:
        if not first:
            z_new = _prox_l1(_bmv(Gs, y, y + offset, scale=-1.0), threshold, positive)
            y = _extrapolate(z_new, z_prev, y, k, momentum)
            z_prev = z_new
            it += 1
            if (it + 1) % _CHECK_EVERY == 0:
                last_support = z_new != 0
            if it % _CHECK_EVERY and it < next_stop:
                continue
        _stop_if_requested()
        stalled = it >= _STALLED
        candidates, last_support = _polish_candidates(
            z_new, last_support, finished, w, stalled
        )
        if first:
            # Straight after the active-set start: its rows are at their
            # working set's optimum, and the others have not moved.
            candidates = candidates[:0]
        if candidates.numel() and stalled:
            # Stalled rows with large supports finish on the working set by
            # the active-set method (those whose support is singular shrink
            # it first, below).
            large = (z_new[candidates] != 0).sum(dim=1) >= large_support
            if bool(large.any()):
                better, polished, rest = active_set(candidates[large], z_new, it)
                z_new[better] = y[better] = polished
                k[better] = 1
                candidates = torch.cat([candidates[~large], rest])
        if candidates.numel():

            def scaled_gram(part, idx, candidates=candidates, Gs=Gs):
                # step G_SS, the whole step G_W when idx is None.
                if idx is None:
                    return Gs.index_select(0, candidates[part])
                return _take_square(Gs, idx, candidates[part] * (w * w))

            polished, usable = _polish(
                z_new[candidates],
                b[candidates],
                alpha,
                scaled_gram,
                step[candidates].squeeze(1),
                partial=stalled,
                whole=w <= _WHOLE_NEWTON,
            )
            better = candidates[usable]
            z_new[better] = y[better] = polished[usable]
            k[better] = 1
        gz = _bmv(Gs, z_new) / step
        primal, gap = _working_set_gap(gz, b, z_new, x_sq, alpha, positive)
        measurable = _EXPANSION_ROUNDING * torch.finfo(gz.dtype).eps * x_sq
        reached = gap <= torch.maximum(tol * primal, measurable)
        fixed = (z_new == at_check).all(dim=1)
        at_check = z_new.clone()
        done = ~finished & (reached | fixed | (it + extra >= budget))
        if first:
            # A row the active-set start did not move (its face singular) has
            # spent nothing yet: leaving now on a working-set gap that the
            # full certificate then rejects, it would come back to the same
            # working set with the same budget, forever. It iterates.
            done &= extra > 0
        first = False
        if not bool(done.any()):
            continue
        done_rows, done_z, done_extra = _compact(done, [rows, z_new, extra])
        out[done_rows] = done_z
        spent[done_rows] = it + done_extra
        finished |= done
        n_finished = int(finished.sum())
        if n_finished == finished.numel():
            break
        if n_finished >= _COMPACT_FRACTION * finished.numel():
            keep = (~finished).nonzero().squeeze(1)  # one index for all
            (rows, Gs, b, y, z_prev, k, step, offset) = _compact(
                keep, [rows, Gs, b, y, z_prev, k, step, offset]
            )
            (x_sq, budget, last_support, finished, extra, at_check) = _compact(
                keep, [x_sq, budget, last_support, finished, extra, at_check]
            )
            if not positive:
                threshold = threshold.index_select(0, keep)
        next_stop = int((budget - extra)[~finished].min())
    return out, spent


def _group_size(m: int) -> int:
    """Atoms per group of :func:`_group_maxima` for ``m`` atoms.

    Up to 32, keeping at least 100 groups to rank (working sets take at most
    one atom per group, see :func:`_next_working_sets`); 1 when no such size
    divides ``m``.
    """
    return next((g for g in (32, 16, 8, 4, 2) if m % g == 0 and m >= 100 * g), 1)


def _group_maxima(scores: torch.Tensor, size: int) -> torch.Tensor:
    """Largest entry of each group of ``size`` adjacent columns, ``(n, m // size)``.

    Group ``g`` holds the columns ``g * size`` to ``(g + 1) * size - 1``.
    ``max_pool1d`` computes this about twice as fast as ``amax`` over a
    ``(n, m // size, size)`` view on CPU (``torch.max`` with indices is ten
    times slower), and the members of a group share a cache line when
    :func:`_next_working_sets` looks them up. Returns ``scores`` itself when
    ``size`` is 1.
    """
    if size == 1:
        return scores
    return F.max_pool1d(scores.unsqueeze(1), size).squeeze(1)


class _Problem:
    """One batch of lasso problems sharing a dictionary, with cached products.

    Certificates hold in float64 whatever the data's dtype, but their bulk,
    the product ``r D^T`` of the residuals with every atom, runs in float32 in
    both precisions (it only has to find the largest correlation, and float32
    products cost half as much as float64 ones): the residual ``r = x - zD``
    is computed in float64 from the code's few atoms, so the primal value and
    ``x.r`` are exact, and only ``max_j r.d_j`` (the dual scaling) is
    approximate, within a rounding bound. Each gap is replaced by an upper
    bound that holds whatever the rounding (:meth:`_bounded_gap`); the samples
    for which that bound and the matching lower bound straddle ``tol`` (a
    relative gap) get the exact maximum from float64 dot products with the
    few atoms that the rounding bound cannot rule out (:meth:`_exact_worst`).
    ``D64`` is the dictionary in float64: a float64 dictionary itself, a
    float64 copy of a float32 one when it is small, None otherwise (the atoms
    of a code are then converted as needed, so memory stays ``O(batch_size *
    max(n_components, n_features))`` plus the dictionary itself); ``D32`` is
    a float32 copy of a float64 one.

    The correlations ``c = X D^T`` are the linear terms of the working-set
    problems and are kept in the data's dtype. The scores that rank atoms
    (correlations, absolute values without the sign constraint) are
    summarised by the maxima of groups of ``group`` atoms
    (:func:`_group_maxima`), which serve both the certificate and the choice
    of working sets.
    """

    def __init__(self, X, D, *, gram, alpha, positive, D64, tol, max_norm, D32=None):
        self.X, self.D, self.gram, self.D64 = X, D, gram, D64
        self.D32 = D.float() if D32 is None else D32
        self.alpha, self.positive, self.tol = alpha, positive, tol
        self.max_norm = max_norm  # an upper bound on max_j ||d_j||
        # Relative error of the float32 copy of a float64 dictionary.
        unit = torch.finfo(torch.float32).eps / 2
        self.rounding = unit if D.dtype == torch.float64 else 0.0
        self.X64 = X.double()
        self.x_sq = (self.X64**2).sum(dim=1)
        # Gaps at most this are rounding (see _CERTIFICATE_ROUNDING).
        self.gap_floor = (
            _CERTIFICATE_ROUNDING * torch.finfo(torch.float64).eps * self.x_sq
        )
        self.c = X @ D.T  # correlations x.d_j, the linear term of the lasso
        self.group = _group_size(D.shape[0])
        self.n_groups = D.shape[0] // self.group

    def _blocks64(self):
        """Float64 blocks ``(start, D[start:stop])`` of the dictionary."""
        if self.D64 is not None:
            yield 0, self.D64
            return
        m, n_features = self.D.shape
        step = rows_per_block(4 * n_features, _AUTO_BATCH_ELEMENTS)
        for start in range(0, m, step):
            yield start, self.D[start : start + step].double()

    def objective(self, rows, z):
        """Float64 lasso objectives of the codes ``z`` of ``rows``."""
        residual = self._residual64(rows, z)
        l1 = z.double().abs().sum(dim=1)
        return 0.5 * torch.linalg.vecdot(residual, residual) + self.alpha * l1

    def _atoms64(self, atoms):
        """Float64 atoms ``D[atoms]``.

        ``embedding`` gathers rows about twice as fast as indexing on CPU.
        """
        if self.D64 is not None:
            return F.embedding(atoms, self.D64)
        return F.embedding(atoms, self.D).double()

    def _sparse_reconstruction(self, atoms, values64):
        """Float64 ``sum_j values64[:, j] * D[atoms[:, j]]``, a block of rows at a time.

        The gathered atoms, ``(rows, working set, n_features)`` in float64,
        are bounded by ``_SYSTEM_ELEMENTS`` a block: gathered for a whole
        batch at once, 4,096 rows of 4,096 features on 4,096 atoms took 4 GB
        of scratch for 64 MiB of codes (and the page faults of those fresh
        allocations a fifth of the time). The same sums, block by block.
        """
        n, width = atoms.shape
        approx = values64.new_empty((n, self.D.shape[1]))
        step = max(1, _SYSTEM_ELEMENTS // max(1, width * self.D.shape[1]))
        for start in range(0, n, step):
            block = slice(start, start + step)
            torch.bmm(
                values64[block].unsqueeze(1),
                self._atoms64(atoms[block]),
                out=approx[block].unsqueeze(1),
            )
        return approx

    def _residual64(self, rows, z):
        """Float64 residual ``x - zD`` of ``rows``."""
        approx = 0.0
        for start, block in self._blocks64():
            approx = approx + z[:, start : start + block.shape[0]].double() @ block
        return self.X64[rows] - approx

    def _exact_products(self, rows, z):
        """Float64 residual ``x - zD`` of ``rows`` and its correlations ``r D^T``."""
        residual = self._residual64(rows, z)
        corr = torch.empty(
            rows.numel(), self.D.shape[0], dtype=torch.float64, device=self.D.device
        )
        for start, block in self._blocks64():
            torch.mm(residual, block.T, out=corr[:, start : start + block.shape[0]])
        return residual, corr

    def exact_scores(self, rows, atoms, values):
        """Float64 scores of codes stored sparsely, ``(len(rows), n_components)``.

        The correlations ``r.d_j`` of each row's residual with every atom
        (absolute values without the sign constraint), as the float32 scores
        of :meth:`certify_sparse` but exact.
        """
        z = values.new_zeros(rows.numel(), self.D.shape[0], dtype=torch.float64)
        # scatter_add: positions past a working set repeat atoms with zeros.
        z.scatter_add_(1, atoms, values.double())
        corr = self._exact_products(rows, z)[1]
        return corr if self.positive else corr.abs_()

    def _gap_terms(self, values64, x, residual):
        """``x.r``, ``r.r`` and ``|z|_1`` of rows ``x`` of ``X64``, in float64."""
        return (
            torch.linalg.vecdot(x, residual),
            torch.linalg.vecdot(residual, residual),
            values64.abs().sum(dim=1),
        )

    def _gap(self, terms, worst):
        """Primal and gap from :meth:`_gap_terms` and ``max_j r.d_j``.

        ``max_j |r.d_j|`` without the sign constraint; see :func:`_dual_scaling`.
        """
        return _gap_from_residual(
            *terms, _dual_scale(worst.double(), self.alpha), self.alpha
        )

    def certify(self, z: torch.Tensor, rows: torch.Tensor):
        """Primal and gap of dense codes ``z`` of ``rows``, all in float64."""
        residual, corr = self._exact_products(rows, z)
        worst = corr.amax(dim=1) if self.positive else corr.abs().amax(dim=1)
        terms = self._gap_terms(z.double(), self.X64[rows], residual)
        return self._gap(terms, worst)

    def group_maxima(self, scores):
        """:func:`_group_maxima` of ``scores`` for this dictionary's groups."""
        return _group_maxima(scores, self.group)

    def certify_sparse(self, atoms, values, rows, out=None):
        """Primal, gap, scores and group maxima of codes stored sparsely.

        The code of sample ``rows[i]`` is ``values[i]`` on the atoms
        ``atoms[i]``, so its reconstruction is a weighted sum of a few atoms
        (an ``embedding_bag``, in float64) instead of a dense product. ``out``
        optionally holds float32 buffers for the scores ``(n, n_components)``
        and the group maxima ``(n, n_groups)``.
        """
        values64 = values.double()
        if self.D64 is not None:
            approx = F.embedding_bag(
                atoms, self.D64, per_sample_weights=values64, mode="sum"
            )
        else:
            approx = self._sparse_reconstruction(atoms, values64)
        x = self.X64.index_select(0, rows)
        residual = x - approx
        low = residual.float()
        scores = torch.mm(low, self.D32.T, out=None if out is None else out[0])
        if not self.positive:
            scores.abs_()
        group_max = self.group_maxima(scores)
        if out is not None and out[1] is not None:
            group_max = out[1].copy_(group_max)
        primal, gap = self.certify_scores(values64, x, residual, low, scores, group_max)
        return primal, gap, scores, group_max

    def certify_scores(self, values64, x, residual, low, scores, group_max):
        """Primal and gap of codes with float64 residual ``residual``.

        ``x`` holds the rows of ``X64`` coded, ``scores`` the correlations
        ``low D^T`` of the float32 rounding ``low`` of the residual with all
        atoms (absolute without the sign constraint) and ``group_max`` their
        group maxima; float64 ``scores`` are taken as exact.

        With float32 ``scores`` a gap only has to decide ``gap <= tol *
        primal``: the gaps returned are upper bounds that hold whatever the
        float32 rounding, exact for the rows those bounds leave undecided
        (:meth:`_bounded_gap`).
        """
        top = group_max.amax(dim=1)
        terms = self._gap_terms(values64, x, residual)
        if scores.dtype == torch.float64:
            return self._gap(terms, top)
        error = self._score_error(residual, low)
        primal, gap, near = self._bounded_gap(terms, top.double(), error)
        if near.numel():
            worst = self._exact_worst(
                near, residual[near], scores, group_max, top[near], error[near]
            )
            primal[near], gap[near] = self._gap([t[near] for t in terms], worst)
        return primal, gap

    def _score_error(self, residual, low):
        """Bound ``e`` on the error of each row's float32 scores.

        The float32 scores of the float32 roundings ``low`` of the float64
        residuals ``residual`` differ from the exact ``r.d_j`` by at most ``e
        = max_j ||d_j|| (||low - r|| + gamma_n ||low|| + u ||r||)``, with
        ``gamma_n = n u / (1 - n u)`` for the float32 product (Higham, 2002,
        "Accuracy and Stability of Numerical Algorithms", eq. 3.5) and ``u
        ||r||`` for the rounding of a float64 dictionary to float32.
        """
        n = self.D.shape[1]
        unit = torch.finfo(torch.float32).eps / 2
        gamma = n * unit / (1 - n * unit)
        low64 = low.double()
        return self.max_norm * (
            (low64 - residual).norm(dim=1)
            + gamma * low64.norm(dim=1)
            + self.rounding * residual.norm(dim=1)
        )

    def _bounded_gap(self, terms, top, error):
        """Primal, certified gap and the rows whose decision needs exact scores.

        The exact ``max_j r.d_j`` lies within ``error`` of the float32 maximum
        ``top``. The dual scaling ``s`` from ``top + error`` is feasible
        whatever the exact maximum, so its gap bounds the suboptimality: a
        certificate. The gap is convex in ``s`` (a quadratic, see
        :func:`_gap_from_residual`), so its least value over the scalings of
        ``[top - error, top + error]`` bounds the exact gap from below. Only
        the rows where ``tol * primal`` falls between the two bounds need the
        exact maximum; in a learning round's loose tolerance, hardly any.
        """
        tiny = torch.finfo(torch.float64).tiny
        safe = _dual_scale(top + error, self.alpha)
        bold = _dual_scale(top - error, self.alpha)
        x_dot_r, r_sq, _ = terms
        vertex = torch.where(r_sq > 0, x_dot_r / r_sq.clamp_min(tiny), safe)
        primal, gap = _gap_from_residual(*terms, safe, self.alpha)
        least = _gap_from_residual(
            *terms, torch.clamp(vertex, min=safe, max=bold), self.alpha
        )[1]
        bound = self.tol * primal
        return primal, gap, torch.nonzero((gap > bound) & (least <= bound)).flatten()

    def _exact_worst(self, near, residual, scores, group_max, top, error):
        """Exact ``max_j r.d_j`` of the rows ``near`` of ``scores``.

        (``max_j |r.d_j|`` without the sign constraint.) ``residual`` holds
        those rows' float64 residuals and ``error`` the bounds of
        :meth:`_score_error` on their float32 scores. So the exact maximum is
        attained among the atoms within ``2 e`` of the float32 maximum ``top``
        -- at the optimum, the support and a few more -- found through the
        groups whose maximum is that high, and only their dot products are
        computed in float64.
        """
        n = self.D.shape[1]
        threshold = top.double() - 2 * error
        row, group = torch.nonzero(
            group_max[near] >= threshold.unsqueeze(1), as_tuple=True
        )
        m = scores.shape[1]
        members = group.unsqueeze(1) * self.group + torch.arange(
            self.group, device=group.device
        )
        inside = scores.take(near[row].unsqueeze(1) * m + members) >= threshold[
            row
        ].unsqueeze(1)
        pair, member = torch.nonzero(inside, as_tuple=True)
        row, atom = row[pair], members[pair, member]
        # In chunks: gathered arrays of a few MiB stay in cache, and large
        # temporaries cost page faults on every call.
        dots = torch.empty(row.numel(), dtype=torch.float64, device=row.device)
        chunk = max(1, 2**18 // n)
        for lo in range(0, row.numel(), chunk):
            part = slice(lo, lo + chunk)
            torch.linalg.vecdot(
                self._atoms64(atom[part]),
                F.embedding(row[part], residual),
                out=dots[part],
            )
        return torch.full_like(threshold, -torch.inf).scatter_reduce_(
            0, row, dots if self.positive else dots.abs(), reduce="amax"
        )

    def linear_term(self, rows, atoms):
        """``c[rows[i], atoms[i]]``, the correlations of working-set atoms."""
        m = self.c.shape[1]
        return self.c.take(rows.unsqueeze(1) * m + atoms)

    def sub_gram(self, atoms: torch.Tensor) -> torch.Tensor:
        """Per-sample Gram ``(n, w, w)`` of the atoms indexed by ``atoms``."""
        if self.gram is not None:
            return _take_square(self.gram, atoms)
        D_w = self.D[atoms]
        return torch.bmm(D_w, D_w.transpose(1, 2))

    def gram_chunk(self, width: int) -> int:
        """Rows whose ``width``-atom Gram matrices fit ``_SYSTEM_ELEMENTS``."""
        # Without the full Gram, each row also gathers its (width, n_features)
        # atoms.
        n_features = self.D.shape[1]
        per_row = width * (width if self.gram is not None else max(width, n_features))
        return max(1, _SYSTEM_ELEMENTS // per_row)


def _solve_working_sets(
    problem: _Problem,
    rows: torch.Tensor,
    atoms: torch.Tensor,
    z_w: torch.Tensor,
    tol: float,
    budget: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve each row's lasso restricted to the atoms ``atoms`` ``(k, w)``.

    Rows are processed in chunks so that the per-sample Gram matrices hold at
    most ``_SYSTEM_ELEMENTS`` values. The solves run in float64 whatever
    the data's dtype: the problems are tiny, so float32 saves no time, and
    float32 working-set gaps could not resolve float32's tolerance when
    supports are large. Returns the codes in ``z_w``'s dtype.
    """
    new_z = torch.empty_like(z_w)
    spent = torch.empty(rows.numel(), dtype=torch.long, device=z_w.device)
    chunk = problem.gram_chunk(atoms.shape[1])
    n_features = problem.X.shape[1]
    large_support = max(
        _ACTIVE_SET_SUPPORT, math.ceil(_ACTIVE_SET_FRACTION * n_features)
    )
    for start in range(0, rows.numel(), chunk):
        part = slice(start, start + chunk)
        new_z[part], spent[part] = _fista_working_set(
            problem.sub_gram(atoms[part]).double(),
            problem.linear_term(rows[part], atoms[part]).double(),
            z_w[part].double(),
            problem.x_sq[rows[part]],
            problem.alpha,
            problem.positive,
            tol,
            budget[part],
            large_support,
        )
    return new_z, spent


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


def _fista_all_atoms(
    problem: _Problem,
    rows: torch.Tensor,
    z: torch.Tensor,
    lipschitz: float,
    tol: float,
    max_iter: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FISTA with restart and Newton steps on all atoms, for the samples ``rows``.

    The gradient ``z G - c`` uses the Gram form or the residual form
    ``(z D) D^T``, whichever is cheaper; the step is ``1 / ||D||_2^2``. Returns
    codes, iterations and convergence flags per sample.
    """
    D, G = problem.D, problem.gram
    m, n_features = D.shape
    alpha, positive = problem.alpha, problem.positive
    # The Gram form costs m^2 per sample and iteration, the residual form
    # 2 m n_features.
    if G is not None and m <= 2 * n_features:

        def apply_gram(v):
            return v @ G
    else:

        def apply_gram(v):
            return (v @ D) @ D.T

    n = z.shape[0]
    out = z.clone()
    spent = max_iter.clone()
    converged = torch.zeros(n, dtype=torch.bool, device=z.device)
    local = torch.arange(n, device=z.device)
    c = problem.c[rows]
    step = 1.0 / lipschitz
    threshold = alpha * step
    y, z_prev = z.clone(), z.clone()
    k = torch.ones(n, dtype=torch.long, device=z.device)
    momentum = _momentum_table(min(int(max_iter.max()), _MOMENTUM_STEPS) + 1, z)
    budget = max_iter
    last_support = z != 0
    no_row = torch.zeros(n, dtype=torch.bool, device=z.device)
    next_stop = int(budget.min())
    it = 0
    while True:
        z_new = _prox_l1(y - step * (apply_gram(y) - c), threshold, positive)
        y = _extrapolate(z_new, z_prev, y, k, momentum)
        z_prev = z_new
        it += 1
        if it % _CHECK_EVERY and it < next_stop:
            continue
        _stop_if_requested()
        stalled = it >= _STALLED
        candidates, last_support = _polish_candidates(
            z_new,
            last_support,
            no_row[: z_new.shape[0]],
            max(2 * n_features, _MIN_POLISH_SUPPORT),
            stalled,
        )
        if candidates.numel():
            polished, usable = _polish(
                z_new[candidates],
                c[candidates],
                alpha,
                lambda part, idx: problem.sub_gram(idx),
                partial=stalled,
            )
            better = candidates[usable]
            z_new[better] = y[better] = polished[usable]
            k[better] = 1
        primal, gap = problem.certify(z_new, rows)
        reached = gap <= tol * primal
        floor = gap <= problem.gap_floor[rows]
        done = reached | floor | (it >= budget)
        if not bool(done.any()):
            continue
        done_local, done_z = _compact(done, [local, z_new])
        out[done_local] = done_z
        # Masks applied by torch.where: no host sync (see _compact).
        spent[local] = torch.where(reached | floor, it, spent[local])
        converged[local] |= reached
        keep = ~done
        (local, rows, c, y, z_prev, k, budget, last_support) = _compact(
            keep, [local, rows, c, y, z_prev, k, budget, last_support]
        )
        if not local.numel():
            break
        next_stop = int(budget.min())
    return out, spent, converged


def _working_set_width(support: torch.Tensor, cap: int) -> torch.Tensor:
    """Working-set sizes: the support plus ``max(step, support / 2)`` atoms.

    Rounded up to a multiple of ``_WORKING_SET_STEP`` so that few distinct
    sizes occur, at least twice the step, at most ``cap``.
    """
    step = _WORKING_SET_STEP
    extra = torch.clamp(support // 2, min=step)
    width = (support + extra + step - 1) // step * step
    return torch.clamp(width, min=2 * step, max=cap)


def _merge_widths(width: torch.Tensor) -> tuple[list[int], list[int]]:
    """Distinct widths of sorted ``width`` and their row counts, small ones merged.

    A group of fewer than ``_MIN_GROUP_ROWS`` rows joins the next wider one
    (``width`` is raised in place): every working-set solve and certificate
    costs a few milliseconds of per-call overhead whatever its size, while a
    wider working set only holds a few more candidate atoms.
    """
    widths, counts = torch.unique_consecutive(width, return_counts=True)
    merged_widths, merged_counts = [], []
    carried = 0
    last = len(widths) - 1
    for i, (w, count) in enumerate(zip(widths.tolist(), counts.tolist(), strict=True)):
        carried += count
        if carried >= _MIN_GROUP_ROWS or i == last:
            merged_widths.append(w)
            merged_counts.append(carried)
            carried = 0
    start = 0
    for w, count in zip(merged_widths, merged_counts, strict=True):
        width[start : start + count] = w
        start += count
    return merged_widths, merged_counts


def _next_working_sets(atoms, values, scores, keep, group_max, widths):
    """Each row's support on ``atoms`` followed by the best-scored other atoms.

    ``atoms`` and ``values`` ``(k, p)`` hold the current codes sparsely
    (distinct atoms per row). ``scores`` ``(n, m)`` ranks all atoms, row
    ``keep[i]`` for row ``i``, and ``group_max`` ``(k, n_groups)`` holds each
    row's group maxima (:func:`_group_maxima`; it is overwritten), with
    ``n_groups >= widths.max()``. The other atoms are the maxima of the best
    groups, leaving out groups whose maximum is a support atom: ``torch.topk``
    costs several nanoseconds per entry on CPU, so it runs on the group
    maxima only, and the rest costs a few entries per chosen group. This is
    the exact top of the scores unless two of them share a group; and since a
    support atom scores ``alpha`` at the working set's optimum, a group whose
    maximum is a support atom holds no violated atom (up to the working set's
    tolerance).
    Row ``i`` of the result starts with ``widths[i]`` distinct atoms (the
    rest, up to ``widths.max()``, is padding for the caller to cut off).
    Returns the new atoms and the current codes on them.
    """
    n_groups = group_max.shape[1]
    m = scores.shape[1]
    width = int(widths.max())
    idx, valid = _support_indices(values)
    count = valid.sum(dim=1, keepdim=True)
    support, on_support = atoms.gather(1, idx), values.gather(1, idx)
    offset = keep.unsqueeze(1) * m
    size = m // n_groups
    group = support // size
    on_max = valid & (scores.take(offset + support) == group_max.gather(1, group))
    # amin, not a plain scatter: two support atoms may share a group.
    mask = torch.full_like(group, torch.inf, dtype=group_max.dtype)
    group_max.scatter_reduce_(1, group, mask.masked_fill_(on_max, -torch.inf), "amin")
    # Row i needs widths[i] - count_i others, masked groups (at most count_i)
    # never among them; positions past widths[i] are cut off by the caller.
    need = widths.unsqueeze(1) - count
    extra = torch.topk(group_max, int(need.max()), dim=1).indices
    if size > 1:
        members = extra.unsqueeze(2) * size + torch.arange(size, device=atoms.device)
        inner = scores.take(offset.unsqueeze(2) + members).argmax(dim=2, keepdim=True)
        extra = members.gather(2, inner).squeeze(2)
    # Row i takes its count_i support atoms, then its best others.
    position = torch.arange(width, device=atoms.device).expand(atoms.shape[0], -1)
    others = idx.shape[1] + torch.minimum(position - count, need - 1)
    take = torch.where(position < count, position, others)
    new_atoms = torch.cat([support, extra], dim=1).gather(1, take)
    new_values = torch.cat([on_support, values.new_zeros(extra.shape)], dim=1)
    return new_atoms, new_values.gather(1, take)


def _choose_working_sets(
    problem, rows, atoms, values, scores, keep, ranked, widths, stuck
):
    """Next working sets: :func:`_next_working_sets`, exactly for ``stuck`` rows.

    Working sets are chosen by float32 scores ``scores`` summarised by
    ``ranked`` (group maxima, or ``scores`` itself), whose rounding, about
    1e-7 of a correlation, cannot tell an atom violating the optimality
    conditions by less from one that does not. At a ``tol`` that asks for
    such violations to go (pairs of atoms at an angle of 1e-8, ``tol=1e-8``),
    a row could be offered the same working set round after round until
    ``max_iter``, the violated atom tied with others or hidden in a group
    whose maximum is a support atom. Rows whose last round did not lower
    their objective (``stuck``, or None) rank every atom by its float64
    correlation (:meth:`_Problem.exact_scores`) instead.
    """
    if stuck is None or not bool(stuck.any()):
        return _next_working_sets(
            atoms, values, scores, keep, ranked.index_select(0, keep), widths
        )
    width = int(widths.max())
    new_atoms = atoms.new_zeros(atoms.shape[0], width)
    new_values = values.new_zeros(values.shape[0], width)

    def place(part, chosen, on_chosen):
        new_atoms[part, : chosen.shape[1]] = chosen
        new_values[part, : chosen.shape[1]] = on_chosen

    usual = torch.nonzero(~stuck).flatten()
    if usual.numel():
        place(
            usual,
            *_next_working_sets(
                atoms[usual],
                values[usual],
                scores,
                keep[usual],
                ranked.index_select(0, keep[usual]),
                widths[usual],
            ),
        )
    stuck = torch.nonzero(stuck).flatten()
    chunk = max(1, _SYSTEM_ELEMENTS // scores.shape[1])
    for part in stuck.split(chunk):
        exact = problem.exact_scores(rows[part], atoms[part], values[part])
        everyone = torch.arange(part.numel(), device=part.device)
        place(
            part,
            *_next_working_sets(
                atoms[part], values[part], exact, everyone, exact.clone(), widths[part]
            ),
        )
    return new_atoms, new_values


def _write_sparse(z, rows, atoms, values, clear):
    """Write the codes ``values`` on ``atoms`` into the ``rows`` of ``z``.

    ``clear`` zeroes those rows first (they may hold other codes).
    """
    if clear:
        z.index_fill_(0, rows, 0.0)
    nonzero = values != 0
    flat = rows.unsqueeze(1) * z.shape[1] + atoms
    z.view(-1)[flat[nonzero]] = values[nonzero]


def _encode_batch(
    problem: _Problem,
    z: torch.Tensor,
    tol: float,
    max_iter: int,
    lipschitz: Callable[[], float],
    has_init: bool,
) -> FISTAResult:
    """Solve one batch of lasso problems by per-sample working sets.

    Each round certifies every running row on all atoms (:meth:`_Problem.
    certify_sparse`), retires the rows whose relative gap is at most ``tol``
    or whose budget of ``max_iter`` iterations is spent, and gives the others
    their next working sets (:func:`_next_working_sets`), solved group by
    group of equal width (:func:`_solve_working_sets`). Rows whose working
    set would hold half the atoms, or whose support reaches twice the
    features, go to the all-atoms solver (:func:`_fista_all_atoms`) at the
    end.

    Parameters
    ----------
    problem : _Problem
        The batch's data and dictionary products.
    z : torch.Tensor of shape (n_samples, n_components)
        The warm start when ``has_init`` (zeros otherwise); overwritten with
        the codes, which never cost more than a warm start.
    tol : float
        Relative duality gap to reach.
    max_iter : int
        Iterations per sample, over all rounds.
    lipschitz : callable
        Returns the dictionary's Lipschitz constant (computed once, on the
        first call: only the all-atoms solver needs it).
    has_init : bool
        Whether ``z`` holds a warm start.

    Returns
    -------
    FISTAResult
        ``z``, the iterations spent and the certified rows.
    """
    n, m = z.shape
    n_features = problem.D.shape[1]
    device = z.device
    spent = torch.zeros(n, dtype=torch.long, device=device)
    converged = torch.zeros(n, dtype=torch.bool, device=device)
    rows = torch.arange(n, device=device)
    # Some lasso solution has at most n_features non-zeros (Tibshirani, 2013,
    # "The lasso problem and uniqueness", Lemma 14), so working sets beyond
    # 2 * n_features buy nothing: past that, all atoms are used at once.
    w_cap = min(m, max(2 * _WORKING_SET_STEP, 2 * n_features))
    dense = []  # rows handed over to the all-atoms solver

    # Between rounds the codes of the running rows live sparsely, as values on
    # atoms (no pass over (n, n_components) arrays); ``z`` receives them when
    # a row leaves.
    warm = has_init and bool((z != 0).any())
    if warm:
        atoms, _ = _support_indices(z)
        values = z.gather(1, atoms)
    else:
        atoms = torch.zeros(n, 0, dtype=torch.long, device=device)
        values = z[:, :0]

    def store(leaving, rows, atoms, values, primal):
        """Write the codes of the ``leaving`` rows into ``z``."""
        if warm:
            # A row whose codes cost more than its warm start keeps the warm
            # start, which ``z`` still holds: rows that run out of max_iter
            # came back up to 0.1 % above the init they were given (float32,
            # 9 rows in 3 features). A certified row may too, when the warm
            # start was already within tol: then so is the warm start.
            leaving = leaving & (primal <= start_primal[rows])
        _write_sparse(z, rows[leaving], atoms[leaving], values[leaving], warm)

    # The float32 scores of residual correlations and their group maxima live
    # in buffers allocated once per batch: fresh (n, n_components) arrays
    # every round cost page faults on CPU.
    score_buffer = torch.empty(n, m, dtype=torch.float32, device=device)
    group_buffer = (
        torch.empty(n, problem.n_groups, dtype=torch.float32, device=device)
        if problem.group > 1
        else None
    )
    if warm:
        primal, gap, scores, group_max = problem.certify_sparse(
            atoms, values, rows, (score_buffer, group_buffer)
        )
        # Each row's objective at its warm start, and the warm start itself
        # (rounds work on compacted copies, never on these).
        start_primal, start_atoms, start_values = primal, atoms, values
        # A warm start on w_cap atoms or more, where w_cap < m (twice the
        # features: far from any solution of minimal support), would send
        # its row to the all-atoms solver, whose Newton steps stop at that
        # size: such rows start from zero on working sets instead, unless
        # their warm start is already certified, and still never leave worse
        # than it. Dense ReLU SAE codes (n_latents=1000, 93 features, L0
        # about 250) coded on the SAE's atoms took 11.9 s against 6.3 s from
        # zero, now 6.7 s; on the true atoms 7.0 s, now 0.7 s. Keeping each
        # row's 10 largest codes instead: 6.6 s and 0.8 s. Where w_cap = m
        # (n_components <= 2 * n_features), "overfull" means every atom, and
        # the all-atoms solver is the right one: restarting such rows took
        # twice as long (100 atoms in 60 features). So does a cold start
        # when its working set, 2 * _WORKING_SET_STEP atoms, holds half of
        # them.
        overfull = ((values != 0).sum(dim=1) >= w_cap) & (gap > tol * primal)
        if 4 * _WORKING_SET_STEP < m and w_cap < m and bool(overfull.any()):
            values = values.clone()
            values[overfull] = 0.0
            primal, gap, scores, group_max = problem.certify_sparse(
                atoms, values, rows, (score_buffer, group_buffer)
            )
    else:
        # At z = 0 the residual is x and its correlations are cached.
        scores = problem.c if problem.positive else problem.c.abs()
        group_max = problem.group_maxima(scores)
        primal, gap = problem.certify_scores(
            values.double(),
            problem.X64,
            problem.X64,
            problem.X,
            scores,
            group_max,
        )
    # Rows whose last round left their objective where it was: they rank
    # atoms by exact correlations for their next working set (see
    # _choose_working_sets).
    stuck = None
    while True:
        _stop_if_requested()
        done = gap <= tol * primal
        converged[rows] |= done
        floor = gap <= problem.gap_floor[rows]
        leaving = done | floor | (spent[rows] >= max_iter)
        support = (values != 0).sum(dim=1)
        width = _working_set_width(support, w_cap)
        to_dense = ~leaving & ((2 * width >= m) | (support >= w_cap))
        if bool(to_dense.any()):
            dense.append(rows[to_dense])
        store(leaving | to_dense, rows, atoms, values, primal)
        keep = torch.nonzero(~leaving & ~to_dense).flatten()
        if not keep.numel():
            break
        # Rows sorted by working-set width: each width is one contiguous group.
        keep = keep[torch.argsort(width[keep])]
        rows, atoms, values, width = _compact(keep, [rows, atoms, values, width])
        before = primal[keep]
        widths, counts = _merge_widths(width)
        # Too few groups for the widest working set: rank single atoms.
        ranked = scores if int(width.max()) > group_max.shape[1] else group_max
        atoms, values = _choose_working_sets(
            problem,
            rows,
            atoms,
            values,
            scores,
            keep,
            ranked,
            width,
            None if stuck is None else stuck[keep],
        )
        primal = torch.empty(rows.numel(), dtype=torch.float64, device=device)
        gap = torch.empty_like(primal)
        start = 0
        for w, count in zip(widths, counts, strict=True):
            part = slice(start, start + count)
            start += count
            z_w, it = _solve_working_sets(
                problem,
                rows[part],
                atoms[part, :w],
                values[part, :w],
                tol,
                max_iter - spent[rows[part]],
            )
            # Every round counts as at least one iteration, so that rounds end
            # within max_iter whatever a working-set solve reports.
            spent[rows[part]] += it.clamp_min(1)
            values[part, :w] = z_w
            values[part, w:] = 0.0
            primal[part], gap[part], _, _ = problem.certify_sparse(
                atoms[part, :w],
                z_w,
                rows[part],
                (
                    score_buffer[part],
                    None if group_buffer is None else group_buffer[part],
                ),
            )
        scores = score_buffer[: rows.numel()]
        group_max = scores if group_buffer is None else group_buffer[: rows.numel()]
        stuck = primal >= before

    if dense:
        rows = torch.cat(dense)
        rows = rows[spent[rows] < max_iter]
    if dense and rows.numel():
        z[rows], it, converged[rows] = _fista_all_atoms(
            problem, rows, z[rows], lipschitz(), tol, max_iter - spent[rows]
        )
        spent[rows] += it
        if warm:
            # As in ``store``: no row leaves costing more than its warm start.
            worse = rows[problem.objective(rows, z[rows]) > start_primal[rows]]
            _write_sparse(z, worse, start_atoms[worse], start_values[worse], True)
    return FISTAResult(z, spent, converged)


def _effective_tol(tol: float, dtype: torch.dtype) -> float:
    # A relative gap below 100 machine epsilons is not measurable.
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
    float64_finish: bool = True,
    offset: torch.Tensor | None = None,
    warn_overflow: bool = True,
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
        Warm start; zeros when None. No sample comes back with codes that
        cost more than its warm start (up to the float32 rounding of
        samples finished in float64).
    max_iter : int, default=1000
        Maximum number of FISTA iterations per sample (the active-set steps
        taken on supports that fill the feature space count as iterations).
    tol : float, default=1e-6
        Stop a sample when its duality gap is at most ``tol`` times its
        objective (floored at 100 machine epsilons of the dtype). With
        ``max_iter`` above 50, float32 rows whose rounding, ``eps * ||x||``
        times the longest atom's norm, exceeds the floored ``tol`` times
        ``alpha`` are coded in float64 from the start, other float32 samples
        not certified after 50 iterations are finished in float64, and both
        are rounded back, with a certificate that covers the rounding. A
        ``tol`` close to machine precision may not be reachable: rounding
        can keep even the optimum's gap above it, and such samples run to
        ``max_iter``, unconverged, with codes at their optimum to working
        precision. Nor can a gap be measured below about ``16 * eps *
        ||x||**2`` (float64 residuals), which is above ``tol`` times the
        objective when ``alpha`` is tiny beside the data (1e-10 with
        ``||x||`` near 1, at ``tol=1e-6``): samples whose gap reaches that
        floor stop there, unconverged, after fewer than ``max_iter``
        iterations.
    batch_size : int, default=None
        Samples coded at once; bounds peak memory to ``O(batch_size *
        max(n_components, n_features))``. None picks a batch of at most
        ``2**24 / max(n_components, n_features)`` rows and ``2**20 /
        n_features`` (at least 512) per torch thread (with ``verbose``, at most
        a 20th of the samples and at least 4,096, so that the progress bar
        moves; other batches round the products differently, so codes may
        then differ from those without ``verbose`` by rounding).
    verbose : int, default=0
        Show a progress bar over batches when positive (one that does not
        move for a call of one batch: it says that the call runs, and at its
        end how long it took).
    float64_finish : bool, default=True
        Code in float64 the float32 rows that float32 rounding keeps from a
        certificate (see ``tol``); False codes in float32 throughout.
    offset : torch.Tensor of shape (n_features,), default=None
        Coded rows are ``X - offset`` (a provider's intercept), centred batch
        by batch rather than in a copy of all of ``X``.
    warn_overflow : bool, default=True
        Warn when codes of rescaled data leave their dtype's range; False
        in the calls on groups of rows, which are warned about together
        with the rows' own indices.

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
    tensor([[0.9000, 0.0000, 0.4000]], dtype=torch.float64)
    """
    # Python floats: a NumPy float16 or float32 hyper-parameter keeps its
    # type in products (np.float16(alpha) * step overflowed at 65504, and
    # every code came back zero).
    alpha, tol = float(alpha), float(tol)
    refuse_mps(X.device)
    # Each row's largest |entry|, read once for the grouping and the scale.
    maxima = _row_maxima(X, offset)
    groups = _scale_groups(X, offset, maxima)
    if groups is not None:
        # Rows of very different scales are coded group by group, each at
        # its own power of two (each row's lasso is its own problem): one
        # scale for all shrank the rows of 1 beside a row of 1e121 to 1e-121,
        # and their codes came back wrong by half their size.
        codes, n_iter, converged = _unsolved(X, dictionary.shape[0])
        # One bar over the groups' rows, not a bar per group.
        with tqdm(
            total=X.shape[0], disable=verbose <= 0, desc="FISTA", unit="sample"
        ) as progress:
            for rows in groups:
                part = fista_encode(
                    X[rows],
                    dictionary,
                    alpha=alpha,
                    positive=positive,
                    init=None if init is None else init[rows],
                    max_iter=max_iter,
                    tol=tol,
                    batch_size=batch_size,
                    verbose=0,
                    float64_finish=float64_finish,
                    offset=offset,
                    warn_overflow=False,
                )
                codes[rows], n_iter[rows], converged[rows] = part
                progress.update(len(rows))
        if warn_overflow:
            _warn_overflowed_codes(codes)
        return FISTAResult(codes, n_iter, converged)
    largest = float(maxima.max()) if maxima.numel() else 0.0
    scale = _certifiable_scale(X, offset, largest=largest)
    if scale != 1.0:
        # Certificates square the rows' norms (float64 even for float32
        # data): rows of norm 1e155 squared to infinity and every sample ran
        # to max_iter, reported unconverged with codes at their optimum.
        # The lasso scales exactly: codes of (s X, s alpha) are s times those
        # of (X, alpha), and a power of two s multiplies without rounding.
        result = fista_encode(
            X * scale,
            dictionary,
            alpha=alpha * scale,
            positive=positive,
            init=None if init is None else _scaled_init(init, scale),
            max_iter=max_iter,
            tol=tol,
            batch_size=batch_size,
            verbose=verbose,
            float64_finish=float64_finish,
            offset=None if offset is None else offset * scale,
        )
        codes = result.codes.div_(scale)
        if warn_overflow:
            _warn_overflowed_codes(codes)
        return result._replace(codes=codes)
    # The certificates bound float32 products by IEEE rounding (see
    # _Problem._score_error); TF32 products (torch's "high" matmul precision,
    # common in GPU training scripts) round inputs to 10 mantissa bits, so
    # that gaps are misread: 978 of 1,000 float64 rows ran to max_iter, and
    # float32 codes stopped 300 times above tol.
    with ieee_float32_products():
        if (
            not float64_finish
            or X.dtype != torch.float32
            or max_iter <= _FLOAT32_ITERATIONS
        ):
            return _encode(
                X,
                dictionary,
                alpha=alpha,
                positive=positive,
                init=init,
                max_iter=max_iter,
                tol=tol,
                batch_size=batch_size,
                verbose=verbose,
                offset=offset,
            )
        # With a small alpha (relative to the data's scale), rounding even the
        # optimal codes to float32 moves max_j r.d_j past alpha enough that their
        # gap stays above float32's tolerance floor (alpha=0.01 on the oracle
        # task: relative gaps of 6e-5 to 1.7e-4 against 1.2e-5), and float32
        # iterations run to max_iter. Rows where one rounding of the
        # residual's correlations, eps ||x|| max_j ||d_j||, is more than
        # tol32 of alpha are coded in float64 from the start; the others the
        # float32 iterations have not certified after _FLOAT32_ITERATIONS are
        # finished in float64, from their codes.
        tol32 = _effective_tol(tol, torch.float32)
        in_float64 = _float32_floor_rows(
            X,
            dictionary,
            offset,
            alpha=alpha,
            tol=tol32,
            step=batch_size or _auto_batch_size(*dictionary.shape),
        )
        rows64 = torch.nonzero(in_float64).flatten()
        rows32 = torch.nonzero(~in_float64).flatten()
        # One bar over both parts, as over the scale groups above.
        with tqdm(
            total=X.shape[0], disable=verbose <= 0, desc="FISTA", unit="sample"
        ) as progress:
            result = _encode_rows(
                X,
                dictionary,
                rows32 if rows64.numel() else None,
                alpha=alpha,
                positive=positive,
                init=init,
                tol=tol,
                tol32=tol32,
                max_iter=max_iter,
                batch_size=batch_size,
                verbose=verbose,
                offset=offset,
                progress=progress,
            )
            if rows64.numel():
                _encode_in_float64(
                    X,
                    dictionary,
                    rows64,
                    result,
                    init=init,
                    alpha=alpha,
                    positive=positive,
                    max_iter=max_iter,
                    tol=tol32,
                    batch_size=batch_size,
                    progress=progress,
                    offset=offset,
                )
        return result


def _encode_rows(
    X: torch.Tensor,
    dictionary: torch.Tensor,
    rows: torch.Tensor | None,
    *,
    alpha: float,
    positive: bool,
    init: torch.Tensor | None,
    tol: float,
    tol32: float,
    max_iter: int,
    batch_size: int | None,
    verbose: int,
    offset: torch.Tensor | None,
    progress: tqdm,
) -> FISTAResult:
    """Code float32 ``X[rows]``: 50 float32 iterations, then a float64 finish.

    ``rows=None`` codes every row, in place, without gathering them; the
    results keep ``X``'s rows.
    """
    if rows is not None and not rows.numel():
        return _unsolved(X, dictionary.shape[0])
    result = _encode(
        X,
        dictionary,
        alpha=alpha,
        positive=positive,
        init=init,
        max_iter=_FLOAT32_ITERATIONS,
        tol=tol,
        batch_size=batch_size,
        verbose=verbose,
        offset=offset,
        rows=rows,
        progress=progress,
    )
    unconverged = ~result.converged
    stalled = (
        torch.nonzero(unconverged).flatten()
        if rows is None
        else rows[unconverged[rows]]
    )
    if stalled.numel():
        # Counted on the bar by their float32 iterations.
        _encode_in_float64(
            X,
            dictionary,
            stalled,
            result,
            init=result.codes,
            alpha=alpha,
            positive=positive,
            max_iter=max_iter - _FLOAT32_ITERATIONS,
            tol=tol32,
            batch_size=batch_size,
            progress=None,
            offset=offset,
        )
    return result


def _unconverged_counts(result: FISTAResult, max_iter: int) -> tuple[int, int]:
    """Count the samples of ``result`` not converged, and those stopped early.

    An unconverged sample that spent fewer than ``max_iter`` iterations
    stopped at the rounding floor of its gap (see :class:`FISTAResult`).
    """
    unconverged = ~result.converged
    early = unconverged & (result.n_iter < max_iter)
    return int(unconverged.sum()), int(early.sum())


def _unsolved(X: torch.Tensor, n_components: int) -> FISTAResult:
    """Zero codes, iterations and convergence flags for every row of ``X``."""
    return FISTAResult(
        X.new_zeros(X.shape[0], n_components),
        torch.zeros(X.shape[0], dtype=torch.long, device=X.device),
        torch.zeros(X.shape[0], dtype=torch.bool, device=X.device),
    )


def _float32_floor_rows(
    X: torch.Tensor,
    dictionary: torch.Tensor,
    offset: torch.Tensor | None,
    *,
    alpha: float,
    tol: float,
    step: int,
) -> torch.Tensor:
    """Rows whose float32 rounding alone may keep their gap above ``tol``.

    At the optimum, max_j |r.d_j| = alpha; a float32 residual's correlation
    with atom j is off by about eps ||x|| ||d_j||, and a dual point rescaled
    by alpha / (alpha + delta) loses delta ||z||_1 of the gap, a relative
    delta ||z||_1 / P <= delta / alpha of it (P >= alpha ||z||_1). Rows with
    eps ||x|| max_j ||d_j|| > tol alpha cannot count on a float32
    certificate.
    """
    eps = torch.finfo(torch.float32).eps
    # In the dictionary's own dtype: a float64 copy of a large dictionary
    # took 126 MiB and doubled the time of a call of 8 rows. A norm beyond
    # float32's range routes every row to float64.
    atom_norm = float(torch.linalg.vector_norm(dictionary, dim=1).max())
    bound = tol * alpha / (eps * atom_norm) if atom_norm else math.inf
    norms = X.new_empty(X.shape[0], dtype=torch.float64)
    # Chunks of rows: centring all of X at once would copy it.
    for start in range(0, X.shape[0], step):
        block = _centred(X[start : start + step], offset).double()
        norms[start : start + step] = torch.linalg.vector_norm(block, dim=1)
    return norms > bound


def _encode_in_float64(
    X: torch.Tensor,
    dictionary: torch.Tensor,
    rows: torch.Tensor,
    result: FISTAResult,
    *,
    init: torch.Tensor | None,
    alpha: float,
    positive: bool,
    max_iter: int,
    tol: float,
    batch_size: int | None,
    progress: tqdm | None,
    offset: torch.Tensor | None,
) -> None:
    """Code float32 ``X[rows]`` in float64 into ``result``, rounded back.

    Starts from ``init[rows]`` (zeros when None), adds the iterations to
    ``result.n_iter[rows]`` and sets ``result.codes[rows]`` and
    ``result.converged[rows]``. The float64 codes are certified to half of
    ``tol``; the other half is left to their rounding, which the
    certificate covers.
    """
    D64 = dictionary.double()
    # A batch of rows at a time: their float64 copies must stay within
    # batch_size's memory bound, however many rows there are.
    step = batch_size or _auto_batch_size(*dictionary.shape)
    for part in rows.split(step):
        X64 = _centred(X[part], offset).double()
        solved = _encode(
            X64,
            D64,
            alpha=alpha,
            positive=positive,
            init=None if init is None else init[part].double(),
            max_iter=max_iter,
            tol=tol / 2,
            batch_size=batch_size,
            verbose=0,
            offset=None,  # X64 is centred
        )
        rounded = solved.codes.to(X.dtype)
        # Any dual point bounds the optimum, so the float64 codes'
        # certificate holds for the rounded ones up to the difference of
        # their objectives: P(rounded) - P* <= gap64 + P(rounded) - P(codes64).
        exact = _sample_objective(X64, solved.codes, D64, alpha)[0]
        kept = _sample_objective(X64, rounded.double(), D64, alpha)[0]
        result.codes[part] = rounded
        result.n_iter[part] += solved.n_iter
        result.converged[part] = solved.converged & (
            tol / 2 * exact + (kept - exact) <= tol * kept
        )
        if progress is not None:
            progress.update(part.numel())


# Data whose largest entry is within 2**+-_CERTIFIABLE_EXPONENT are coded as
# they are; others are scaled by a power of two to a largest entry near 1.
# float32 data are solved in float32: squares of entries beyond 2**+-50,
# summed over features, leave its range (entries of 1.8e38 gave NaN codes
# where the float64 answer fits float32). float64 data are held to the same
# bound: the residuals' correlations with every atom run in float32 in both
# precisions (see _Problem), and data of 1e40 or 1e-60 overflowed or
# underflowed there (codes off by 0.19-0.92 of their largest, with only a
# ConvergenceWarning; 2**+-400, the bound of float64's own squares, let them
# through).
_CERTIFIABLE_EXPONENT = {torch.float64: 50, torch.float32: 50}


def _warn_overflowed_codes(codes: torch.Tensor) -> None:
    """Warn when codes scaled back to the data's size leave their dtype's range.

    Data near the top of float32's range (entries of 1e38) can have lasso
    codes beyond it; they came back as inf, or NaN, with nothing but a
    ConvergenceWarning, and ``score`` was NaN.
    """
    overflowed = torch.nonzero(~torch.isfinite(codes).all(dim=1)).flatten()
    if overflowed.numel():
        remedy = (
            "scale these rows down"
            if codes.dtype == torch.float64
            else "code these rows in float64"
        )
        warn(
            f"The codes of {overflowed.numel()} rows (rows "
            f"{overflowed[:10].tolist()}) lie beyond the range of "
            f"{str(codes.dtype).removeprefix('torch.')} and are returned as "
            f"inf or NaN; {remedy}.",
            RuntimeWarning,
        )


def _scaled_init(init: torch.Tensor, scale: float) -> torch.Tensor:
    """``init * scale``, rows that leave the dtype's range starting from zero."""
    scaled = init * scale
    # A warm start far off the data's scale (1e3 for data of 1e-37) overflowed
    # in float32 and made its row's codes NaN.
    scaled[~torch.isfinite(scaled).all(dim=1)] = 0.0
    return scaled


def refuse_mps(device: torch.device) -> None:
    """Raise the error naming Apple's MPS backend, which FISTA cannot run on.

    The solver certifies codes in float64 (step sizes, duality gaps, the
    finish of float32 samples), which MPS does not have: torch failed inside
    the first conversion.
    """
    if device.type == "mps":
        raise ValueError(
            "FISTA certifies its codes in float64, which Apple's MPS backend "
            "does not have; compute on the CPU with device='cpu'."
        )


def _row_maxima(X: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    """Return each row's largest ``|X - offset|``, block by block (no copy of X)."""
    step = _auto_batch_size(1, X.shape[1])
    return torch.cat(
        [
            torch.linalg.vector_norm(_centred(block, offset), ord=math.inf, dim=1)
            for block in X.split(step)
        ]
    )


def _scale_groups(
    X: torch.Tensor,
    offset: torch.Tensor | None,
    maxima: torch.Tensor | None = None,
) -> list[torch.Tensor] | None:
    """Return the row indices of ``X`` by scale, or None when one scale fits all.

    Rows are grouped by the binary exponent of their largest entry (of
    ``X - offset``), counted down from the largest row's in windows of
    ``2 * _CERTIFIABLE_EXPONENT + 1`` binary orders: a group scaled to bring
    its largest entry near 1 keeps entries of at least ``2**-101``, which
    float32 correlations hold. Counted from the largest row, the windows do
    not move when a group is rescaled, so that its own call finds one group.
    Rows of zeros, whose codes are zero at any scale, join the first group.
    ``maxima``, when given, are :func:`_row_maxima` of ``X``.
    """
    if not X.numel():
        return None
    width = 2 * _CERTIFIABLE_EXPONENT.get(X.dtype, 50) + 1
    largest = _row_maxima(X, offset) if maxima is None else maxima
    # One transfer (no boolean indexing, another synchronisation on a GPU);
    # the rows' own exponents travel to the host only when the rows span
    # more than one window.
    smallest = torch.where(largest > 0, largest, math.inf).min()
    top, bottom = torch.stack([largest.max(), smallest]).tolist()
    if top == 0:  # rows of zeros only
        return None
    top_exponent = math.frexp(top)[1]
    if top_exponent - math.frexp(bottom)[1] < width:
        return None
    largest = largest.cpu()
    window = torch.div(
        top_exponent - torch.frexp(largest).exponent, width, rounding_mode="floor"
    )
    window[largest == 0] = 0
    return [
        torch.nonzero(window == key).flatten().to(X.device)
        for key in torch.unique(window)
    ]


def _certifiable_scale(
    X: torch.Tensor,
    offset: torch.Tensor | None = None,
    bound: int | None = None,
    *,
    largest: float | None = None,
) -> float:
    """Return a power of two bringing ``X - offset``'s largest entry near 1, or 1.0.

    1.0 when that entry lies within ``2**+-bound`` (by default the dtype's
    ``_CERTIFIABLE_EXPONENT``). ``largest``, when given, is that entry's
    magnitude, already read.
    """
    if not X.numel():
        return 1.0
    if largest is None:
        # Reductions over row blocks rather than X.abs() (or X - offset), a
        # temporary the size of all of X.
        step = None if offset is None else _auto_batch_size(1, X.shape[1])
        largest = 0.0
        for block in (X,) if step is None else X.split(step):
            low, high = torch.aminmax(_centred(block, offset))
            largest = max(largest, -float(low), float(high))
    if largest == 0.0:
        return 1.0
    exponent = math.frexp(largest)[1]
    if bound is None:
        bound = _CERTIFIABLE_EXPONENT.get(X.dtype, 50)
    if abs(exponent) <= bound:
        return 1.0
    # The scaled X and offset must stay finite in X's dtype: subnormal data
    # (a largest entry of 5e-324, or 1e-40 in float32) would ask for a power
    # of two beyond its range, and with an offset X's own entries can be far
    # larger than the centred ones.
    room = math.frexp(torch.finfo(X.dtype).max)[1] - 1
    if offset is not None:
        low, high = torch.aminmax(X)
        raw = max(-float(low), float(high), float(offset.abs().max()))
        room = min(room, room - math.frexp(raw)[1])
    return math.ldexp(1.0, min(-exponent, room))


# Automatic batches per step of FISTACoder.score (see there).
_SCORE_STEP_BATCHES = 4


def _auto_batch_size(n_components: int, n_features: int) -> int:
    """Rows per batch when ``batch_size`` is None.

    At most ``_AUTO_BATCH_ELEMENTS`` entries of the wider of atoms and
    features per row, and, for wide rows, shares of ``_AUTO_SHARE_ELEMENTS``
    features for each thread that a batch is split between.
    """
    by_width = rows_per_block(max(n_components, n_features), _AUTO_BATCH_ELEMENTS)
    share = max(rows_per_block(n_features, _AUTO_SHARE_ELEMENTS), _MIN_SHARE_ROWS)
    return min(by_width, share * max(1, torch.get_num_threads()))


def _warn_if_no_code(
    X: torch.Tensor, components: torch.Tensor, alpha: float, positive: bool
) -> None:
    """Warn when ``alpha`` leaves every code of ``X`` on the atoms zero.

    Otherwise silent: learning stops once every atom stays unused, and
    returns rows of X as atoms that no code uses. Every lasso code is zero
    exactly when no correlation ``<x, d>`` exceeds ``alpha`` (no positive one,
    for non-negative codes).
    """
    atoms = components.to(X.dtype)
    largest = 0.0
    for block in X.split(_auto_batch_size(*components.shape)):
        correlations = block @ atoms.T
        if not positive:
            correlations = correlations.abs()
        largest = max(largest, float(correlations.max()))
    if largest > alpha:
        return
    warn(
        f"No sample uses any learned atom: alpha={alpha} is above every "
        f"correlation of a sample with the atoms (at most {largest:.3g}), so "
        "every code is zero. alpha is in the units of X: lower it, or rescale X.",
        UserWarning,
    )


def _centred(X: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    return X if offset is None else X - offset


def _encode(
    X: torch.Tensor,
    dictionary: torch.Tensor,
    *,
    alpha: float,
    positive: bool,
    init: torch.Tensor | None,
    max_iter: int,
    tol: float,
    batch_size: int | None,
    verbose: int,
    offset: torch.Tensor | None,
    rows: torch.Tensor | None = None,
    progress: tqdm | None = None,
) -> FISTAResult:
    """:func:`fista_encode` in ``X``'s own dtype.

    With ``rows``, only ``X[rows]`` is coded, each share's rows gathered in
    turn (not a copy of all of them); the results keep ``X``'s rows, zero
    and unconverged elsewhere. A given ``progress`` bar is moved (and left
    open) instead of one of its own.
    """
    n_components = dictionary.shape[0]
    n_samples = X.shape[0] if rows is None else rows.numel()
    dtype, device = X.dtype, X.device
    tol = _effective_tol(tol, dtype)
    if batch_size is None:
        batch_size = _auto_batch_size(n_components, X.shape[1])
        if verbose > 0:
            steps = -(-n_samples // _PROGRESS_STEPS)
            batch_size = min(batch_size, max(_MIN_PROGRESS_ROWS, steps))
    gram = None
    # The Gram matrix serves every sample's working sets; a few samples (the
    # float64 finish of fista_encode, a small transform) gather their atoms'
    # products instead of paying for all n_components**2.
    if (
        n_components**2 <= _MAX_GRAM_ELEMENTS
        and n_samples >= n_components * _MIN_GRAM_ROWS_PER_ATOM
    ):
        gram = dictionary @ dictionary.T
    L_cache: list[float] = []
    L_lock = threading.Lock()  # worker threads may ask at the same time

    def lipschitz() -> float:
        with L_lock:
            if not L_cache:
                L_cache.append(lipschitz_constant(dictionary))
            return L_cache[0]

    # A float64 copy of a small float32 dictionary, for exact certificates.
    small = n_components * X.shape[1] <= _FLOAT64_COPY_ELEMENTS
    D64 = dictionary.double() if small else None
    if dtype == torch.float64:
        D64 = dictionary
    # Certificates multiply residuals with a float32 dictionary (see _Problem).
    D32 = dictionary.float()
    # Inflated by a few roundings of the norms themselves.
    max_norm = float(dictionary.norm(dim=1).max()) * (1 + 1e-5)
    codes, n_iter, converged = _unsolved(X, n_components)

    def solve(share: slice) -> None:
        # Inference mode, whatever the caller's (worker threads start without
        # it): the solver's many small operations skip autograd's version
        # counting, 0.79x-0.88x the time of one to 64 rows. Its own tensors
        # stay inside; it writes in place into ``codes``, ``n_iter`` and
        # ``converged``, which inference mode allows whether or not they are
        # inference tensors.
        with torch.inference_mode():
            solve_in_place(share)

    def solve_in_place(share: slice) -> None:
        # Solved in place in the share's slice of ``codes``.
        at = share if rows is None else rows[share]
        z0 = codes[share] if rows is None else codes.new_zeros(len(at), n_components)
        if init is not None:
            z0.copy_(init[at])
            if positive:
                z0.clamp_(min=0.0)
        problem = _Problem(
            _centred(X[at], offset),
            dictionary,
            gram=gram,
            alpha=alpha,
            positive=positive,
            D64=D64,
            tol=tol,
            max_norm=max_norm,
            D32=D32,
        )
        result = _encode_batch(
            problem, z0, tol, max_iter, lipschitz, has_init=init is not None
        )
        if rows is not None:
            codes[at] = z0
        n_iter[at] = result.n_iter
        converged[at] = result.converged

    n_workers = _share_count(min(batch_size, n_samples), device)
    batches = [
        slice(start, min(start + batch_size, n_samples))
        for start in range(0, n_samples, batch_size)
    ]
    # A bar for one batch too: it does not move, but says that a call runs
    # and, at its end, how long it took (600 rows at a small alpha ran 15 s
    # without a word).
    own = progress is None
    if own:
        progress = tqdm(
            total=n_samples, disable=verbose <= 0, desc="FISTA", unit="sample"
        )
    with progress if own else nullcontext():
        if device.type == "cpu" and torch.get_num_threads() > 1:
            # Even a batch too small to split runs in a worker thread of one
            # intra-op thread. On a quiet 2-core machine a second intra-op
            # thread gains up to 1.3x on the benchmark's oracle atoms and
            # 1.7x on 4,096 atoms, but where other processes keep the cores
            # busy, every parallel kernel waits at an OpenMP barrier for a
            # descheduled thread: 200 to 1,000 samples took 1.2x to 42x as
            # long as on one thread (benchmarks/RESULTS.md, "Threads"). Even
            # a single row goes to a worker: its start adds 0.5 ms to 7.5 ms
            # on a quiet machine, while the calling thread's team took it
            # from 6.5 ms to 40 ms beside a test run.
            _solve_in_shares(solve, batches, n_workers, device, progress)
        else:
            for batch in batches:
                solve(batch)
                progress.update(batch.stop - batch.start)
    return FISTAResult(codes, n_iter, converged)


def _solve_in_shares(solve, batches, n_workers, device, progress) -> None:
    """Solve each batch in shares side by side, one worker thread per share."""
    threads = torch.get_num_threads()
    stop = threading.Event()
    failed: list[BaseException] = []

    def start() -> None:
        # One intra-op thread per worker, without changing the count of
        # threads started later (the user's: see set_own_thread_count). The
        # calling thread's count stays as it is: torch.set_num_threads there
        # would also pin its MKL thread count, after which threadpoolctl's
        # limits in that thread no longer reach MKL's products (a 2000 x 2000
        # GEMM under threadpool_limits(1) then ran on two cores).
        try:
            set_own_thread_count(1, default=threads)
        except BaseException as error:
            failed.append(error)  # the pool only logs it
            raise
        _worker.stop = stop

    with ThreadPoolExecutor(n_workers, initializer=start) as pool:
        try:
            _start_every_worker(pool, n_workers, failed)
            for batch in batches:
                size = batch.stop - batch.start
                # The last batch may be too small for every worker.
                shares = _share_count(size, device)
                bounds = [batch.start + size * i // shares for i in range(shares + 1)]
                shares = itertools.starmap(slice, itertools.pairwise(bounds))
                _run_shares(pool, solve, list(shares), stop)
                progress.update(size)
        except BaseException:
            stop.set()  # before the pool's exit waits for its workers
            raise


def _start_every_worker(
    pool: ThreadPoolExecutor, n_workers: int, failed: list[BaseException]
) -> None:
    """Start all of ``pool``'s workers before any of them solves.

    A worker's start lowers torch's default thread count for a moment (see
    set_own_thread_count): started together, before the first share, the
    workers cannot hand one thread to a thread that another worker's solve
    (or a torch callback in it) starts. Each waits for the others, so that
    no worker is idle and the pool starts a new one for every task. A worker
    that fails to start (``failed`` holds its error) releases the others.
    """
    everyone = threading.Barrier(n_workers)

    def meet() -> None:
        try:
            everyone.wait()
        except threading.BrokenBarrierError:
            pass  # released: a worker failed to start, or the call stopped

    try:
        futures = [pool.submit(meet) for _ in range(n_workers)]
        # The pool fails the tasks a failed worker leaves, at once.
        wait(futures, return_when=FIRST_EXCEPTION)
        if failed:
            raise failed[0]
        for future in futures:
            future.result()
    except BaseException:
        everyone.abort()  # an interruption: the started workers stop waiting
        raise


def _run_shares(pool, solve, shares: list[slice], stop: threading.Event) -> None:
    """Solve ``shares`` in ``pool``; the first share to fail stops the others.

    Results collected in order would wait for every share before the failed
    one (3 s for an error raised at once beside a 3-second share).
    """
    futures = [pool.submit(solve, share) for share in shares]
    pending = wait(futures, return_when=FIRST_EXCEPTION).not_done
    if pending:  # a share failed
        stop.set()
        for future in pending:
            future.cancel()
    for future in futures:
        if future.cancelled():
            continue
        error = future.exception()
        if error is not None and not isinstance(error, _Stopped):
            raise error


def _share_count(batch_rows: int, device: torch.device) -> int:
    """Worker threads a batch of ``batch_rows`` rows is split between."""
    if device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), batch_rows // _MIN_SHARE_ROWS))


class FISTACoder(
    StrictParamsMixin,
    ConceptNamesOutMixin,
    TransformerMixin,
    DetachedCloneMixin,
    BaseEstimator,
):
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
    dictionary : array-like, torch.Tensor, estimator or object, default=None
        The atoms, shape ``(n_components, n_features)``, or a *dictionary
        provider*: an estimator exposing ``components_`` (and optionally
        ``intercept_``, or ``mean_`` for scikit-learn's PCA family), cloned and
        fitted on ``X, y`` in :meth:`fit`, or a fitted one wrapped in
        :class:`sklearn.frozen.FrozenEstimator`, or any other object exposing
        ``components_`` (see :ref:`dictionaries`); the last two are used as
        they are. Samples are coded
        after subtracting the provider's intercept. ``None`` learns the atoms
        from ``X`` with DL-FISTA: rounds of FISTA codes alternate with the
        closed-form least-squares dictionary update, atoms kept at unit norm
        (see :ref:`dictionary-learning`); :meth:`partial_fit`
        learns them online from mini-batches instead.
    n_components : int, default=None
        Number of atoms to learn when ``dictionary`` is None; None takes the
        number of atoms of ``init``, else ``n_features``. With a given
        ``dictionary`` its atoms set the number of components, and a different
        ``n_components`` is an error.
    alpha : float, default=0.1
        Weight of the L1 penalty; positive. In the data's units: the default
        suits rows of norm about 1, and activations ten times longer need
        ``alpha`` ten times larger, or to be divided by their norm (see the
        user guide, :ref:`own-activations`). It also makes the stopping rule
        measurable: at ``alpha=0`` no dual point certifies a code (the duality
        gap is the whole objective), so every sample would run to ``max_iter``.
    positive : bool, default=False
        Constrain the codes to be non-negative.
    max_iter : int, default=1000
        Maximum number of FISTA iterations per sample (the active-set steps
        taken on supports that fill the feature space count as iterations).
    tol : float in [0, 1), default=1e-6
        A sample is coded once its duality gap is at most ``tol`` times its
        objective; this bounds the relative suboptimality of its code. The
        tolerance is floored at ``100 * eps`` of the data's dtype (about
        ``1.2e-5`` in float32), below which the gap is not measurable. With a
        small ``alpha``, rounding even the optimal codes to float32 can leave
        a larger gap: with ``max_iter`` above 50, float32 rows whose
        rounding, ``eps * ||x||`` times the longest atom's norm, exceeds the
        floored ``tol`` times ``alpha`` are therefore coded in float64 from
        the start, other float32 samples not certified after 50 iterations
        are finished in float64, and both are rounded back with a
        certificate covering the rounding. Rounding can
        keep even the optimum's gap above a ``tol`` close to machine
        precision; such samples run to ``max_iter`` and are reported
        unconverged. Nor can a gap be measured below about ``16 * eps *
        ||x||**2`` (float64 residuals), above ``tol`` times the objective
        when ``alpha`` is tiny beside the data (1e-10 with ``||x||`` near 1,
        at ``tol=1e-6``): such samples stop at that floor, reported
        unconverged by a warning that says so. When learning, also the
        relative change of the dictionary between two rounds,
        ``||D_new - D||_F / ||D||_F``, at which learning stops
        (leaving out atoms that no sample used in either round: they are
        re-drawn from residuals every round, see ``history_``). Without
        ``init``, momentum and the resampling of near-duplicate atoms keep the
        dictionary moving for many rounds (by 5-20 % a round after 25-35
        rounds on the paper's benchmark, often by 20 % or more to the end on
        small problems), and a search that settles still moves its atoms by
        more than the default ``tol`` (1e-5 to 1e-4 a round after 50 rounds
        at 100 latents), so learning usually runs all ``dict_max_iter``
        rounds; to refine a
        learned dictionary until it settles, pass it as ``init`` to a second
        fit (see :ref:`dictionary-learning`).
    init : array-like, torch.Tensor, estimator or object, default=None
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
        from the data. An estimator's warm-start codes are computed for all
        of ``X`` before :meth:`transform` codes it, beside the codes
        returned: twice their memory, whatever ``batch_size`` (:meth:`score`
        takes them a step at a time); code very large ``X`` in chunks.
    batch_size : int, default=None
        Number of samples coded at once; peak memory grows as ``batch_size *
        max(n_components, n_features)``, besides the codes returned. None
        picks at most ``2**24 / max(n_components, n_features)`` rows, and
        ``2**20 / n_features`` (at least 512) for each torch thread a batch is
        split between: the solver keeps several float64 copies of a batch's
        rows, and kept this small they stay in the caches (wide rows on few
        atoms code in about half the time of larger batches). Its memory,
        codes returned included, peaked at 140-340 MiB above the start for
        100,000 rows of 1,024 float32 features on 128-512 atoms, 190 MiB for
        131,072 rows of 64 features on 128 atoms and 300 MiB for 2,048 rows of
        4,096 features on 4,096 atoms (one thread;
        ``benchmarks/bench_memory.py``).
        Each batch also has a fixed cost (the solver's per-call work, a few
        milliseconds or more), so batches of a few samples are slow: on the
        CPU, 100 samples over 200 atoms took about 28 times as long one at
        a time as in one batch. Lower it to fit memory, not below. Other
        batch sizes (and torch thread counts, which split batches between
        threads) round products differently: codes move by rounding, and
        dictionary learning, a search, may end at other atoms of the same
        quality.
    device : str or torch.device, default="auto"
        Where to compute. ``"auto"`` uses a tensor input's own device, else
        CUDA when available, else the CPU. Outputs always come back in the
        input's array type, device and dtype.
    dict_max_iter : int, default=50
        Maximum number of dictionary-learning rounds when ``dictionary`` is None.
        Dictionaries with more than 3 atoms per feature learned without
        ``init`` code the first half of the rounds at ``1.5 * alpha``; given
        at least 110 rounds (and no more atoms than samples) they code the
        first 60 at ``1.5 * alpha`` and make the rounds between them and the
        last 30 the paper's inexact alternation, which very overcomplete
        dictionaries need (see the user guide, :ref:`inference`). Learning
        without ``init`` computes in float32 whatever the data's dtype (a
        search, solved to loose tolerances), unless the data's squared norms
        leave float32's range (then in float64); data whose largest entry
        lies beyond 2**+-50 (in float32 and float64) are first
        scaled by a power of two, as the lasso allows exactly. The atoms come
        back in the data's dtype.
    random_state : int, RandomState instance or None, default=None
        Seed for dictionary learning: the atoms drawn from the data at the
        start and those re-initialised during learning. None draws the seed
        from NumPy's global random state, as scikit-learn's estimators do
        (``np.random.seed`` sets it; ``torch.manual_seed`` does not). A
        :meth:`partial_fit` stream draws it once, at its first call. An
        unfitted estimator passed as ``dictionary`` or ``init`` is fitted
        with its own ``random_state``: set it too for a reproducible fit.
        On CUDA, fits repeat bit for bit only in torch's deterministic mode
        (``torch.use_deterministic_algorithms(True)``; see :ref:`reproduce`).
    verbose : int, default=0
        Show progress bars when positive; in :meth:`partial_fit`, whose calls
        code one chunk each, when at least 2 (a stream of chunks would
        otherwise draw one bar per chunk). With ``batch_size=None``, coding
        then runs in smaller batches, so that the bar moves: codes may differ
        by rounding from those coded without it.

    Attributes
    ----------
    components_ : ndarray or torch.Tensor of shape (n_components, n_features)
        The dictionary atoms, in the array type of the data last given to
        :meth:`fit` or :meth:`partial_fit`, and in the precision of the data
        given to :meth:`fit` or to the first :meth:`partial_fit` (float32
        data: float32 atoms, from a float64 dictionary too).
    intercept_ : ndarray or torch.Tensor of shape (n_features,)
        Offset the data is reconstructed around: ``X ≈ codes @ components_ +
        intercept_`` (zero for a plain array dictionary).
    dictionary_ : estimator, object or None
        The fitted dictionary provider, when ``dictionary`` is an estimator
        (a frozen one as given); the object itself when it exposes
        ``components_`` without being an estimator; None for atoms given as
        an array and for a learned dictionary.
    init_ : estimator or None
        The fitted warm-start estimator, when ``init`` is an estimator.
    n_iter_ : int
        With a given dictionary, the largest number of FISTA iterations any
        training sample needed in :meth:`fit_transform` (0 after :meth:`fit`
        and :meth:`partial_fit`, which code nothing). When learning, the
        number of rounds :meth:`fit` ran plus the :meth:`partial_fit` calls
        since (``len(history_)`` unless the history was trimmed).
    history_ : list of dict
        When learning, one record per round of :meth:`fit` (or per
        :meth:`partial_fit` call): ``objective`` (mean over the samples of
        ``0.5 * ||x - z @ D||^2 + alpha * ||z||_1`` after the round's coding,
        on that round's atoms; while exploring, the codes are rough and the
        objective can rise and lie far above the returned atoms'),
        ``dictionary_change`` (relative Frobenius change of the atoms),
        ``n_unused`` (atoms no sample used: re-initialised in every round of
        :meth:`fit`, and by :meth:`partial_fit` only while exploring) and
        ``n_resampled`` (other near-duplicate atoms replaced; the two never
        add up to more than the atoms); :meth:`fit` also
        records ``alpha``, ``exploring``, ``inexact``,
        ``coding_tol`` and ``fista_iter``
        (see :ref:`dictionary-learning`). A stream adds a record (about 0.4 KB)
        per call for as long as it runs; learning never reads them, so a
        long stream may trim the list, e.g. ``del coder.history_[:-1000]``.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.

    See Also
    --------
    sklearn.decomposition.SparseCoder : CPU sparse coding with coordinate
        descent, LARS or OMP.

    Notes
    -----
    Unlike :class:`sklearn.decomposition.SparseCoder`, a coder with given
    atoms is fitted before it codes: :meth:`fit` checks the atoms against
    ``X`` and fits the providers (``dictionary``, ``init``), as any
    scikit-learn transformer does; ``FISTACoder(D).fit(X).transform(X)``, or
    :meth:`fit_transform`.

    :meth:`transform` reads ``alpha``, ``positive``, ``max_iter``, ``tol``,
    ``batch_size`` and ``device`` as they are when it is called:
    ``coder.set_params(alpha=0.05)`` after learning codes on the learned
    atoms at another penalty, without learning them again (scikit-learn's
    dictionary learners have ``transform_alpha`` for this).

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

    Without a dictionary, the coder learns one (DL-FISTA), keeping one
    record per round in ``history_``:

    >>> from skdict.datasets import make_compositional
    >>> from skdict.metrics import dictionary_similarity
    >>> data = make_compositional(n_latents=20, n_active=3, n_samples=400,
    ...                           random_state=0)
    >>> learner = FISTACoder(n_components=20, positive=True, dict_max_iter=50,
    ...                      random_state=0).fit(data.X_train)
    >>> bool(dictionary_similarity(data.dictionary, learner) > 0.95)
    True
    >>> len(learner.history_) == learner.n_iter_ == 50
    True

    or streams mini-batches through :meth:`partial_fit`:

    >>> stream = FISTACoder(n_components=20, positive=True, random_state=0)
    >>> for start in range(0, 200, 50):
    ...     stream = stream.partial_fit(data.X_train[start : start + 50])
    >>> stream.components_.shape, stream.n_iter_
    ((20, 12), 4)
    """

    _slips = (
        (
            "dictionary",
            is_count,
            "The 'dictionary' parameter of FISTACoder takes atoms (an array, or "
            "an estimator exposing components_); got {value!r}, a number. To "
            "learn a dictionary of {value} atoms from X, pass "
            "n_components={value}: FISTACoder(n_components={value}).",
        ),
        sparse_atoms_slip("dictionary", "FISTACoder"),
        sparse_atoms_slip("init", "FISTACoder"),
    )

    _parameter_constraints: dict = {
        "dictionary": PROVIDER_CONSTRAINT,
        "n_components": [count_from(1), None],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "positive": ["boolean"],
        "max_iter": [count_from(1)],
        # At tol >= 1 zero codes always pass: their gap is at most their
        # objective (tol=1.0 returned all-zero codes).
        "tol": [Interval(Real, 0, 1, closed="left")],
        "init": ["array-like", CODING_ESTIMATOR, EXPOSES_COMPONENTS, None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "device": DEVICE_CONSTRAINT,
        "dict_max_iter": [count_from(0)],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        dictionary: ArrayLike = None,
        *,
        n_components: Int | None = None,
        alpha: Float = 0.1,
        positive: Bool = False,
        max_iter: Int = 1000,
        tol: Float = 1e-6,
        init: ArrayLike = None,
        batch_size: Int | None = None,
        device: Device = "auto",
        dict_max_iter: Int = 50,
        random_state: Seed = None,
        verbose: Int | Bool = 0,
    ) -> None:
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

    @ignores_autocast
    @outside_inference_mode
    def fit(self, X: ArrayLike, y: ArrayLike = None) -> Self:
        """Resolve (or learn) the dictionary.

        With a given dictionary, fitting resolves the provider (fitting a
        clone of an estimator, and of an ``init`` estimator) and codes
        nothing, as :class:`~sklearn.decomposition.SparseCoder` and
        :class:`~skdict.OracleDictionary` code only in ``transform``;
        :meth:`fit_transform` codes ``X`` once and reports ``n_iter_``.

        An invalid hyper-parameter is refused before the fit starts, and a
        fit interrupted with Ctrl-C (``KeyboardInterrupt``), both leave the
        estimator as it was before the call; a fit that raises any other
        error leaves it unfitted.

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
        self._fit(X, y, code=False)
        return self

    @ignores_autocast
    @outside_inference_mode
    def fit_transform(self, X: ArrayLike, y: ArrayLike = None) -> Any:
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
            In the array type, device and dtype of ``X`` (float64 for
            integer and NumPy float16 input, as in scikit-learn).
        """
        codes = self._fit(X, y)
        # A learned dictionary is known only once learning ends.
        return self.transform(X) if codes is None else codes

    @fit_context(prefer_skip_nested_validation=False)
    def _fit(self, X, y, code=True):
        with forget_fit_on_failure(self):
            self._forget_stream()
            X_t, origin = validate_input(self, X, reset=True, device=self.device)
            if self.dictionary is None:
                self._learn(X, X_t, y, origin)
                return None
            resolved = self._resolve_given(X, X_t, y, origin)
            if not code:
                self.n_iter_ = 0
                return None
            result = self._encode(X, X_t, resolved.components, resolved.intercept)
            self.n_iter_ = int(result.n_iter.max())
            return to_output(result.codes, origin, self)

    def _resolve_given(self, X, X_t, y, origin):
        # A given dictionary (array or provider) and the init estimator.
        resolved = resolve_dictionary(
            self.dictionary,
            X,
            y,
            device=X_t.device,
            dtype=X_t.dtype,
            n_features=self.n_features_in_,
        )
        check_n_components(
            self.n_components, resolved.components.shape[0], "the dictionary"
        )
        self.dictionary_ = resolved.estimator
        # Read now: the provider may be refitted on other concepts later.
        self._concept_names = concept_names_of(resolved.estimator)
        # What partial_fit checks the parameter against; None for a learned
        # dictionary.
        self._dictionary_param = record_given(self.dictionary)
        self.init_ = self._fit_init(X, y, resolved.components.shape[0])
        self.components_ = to_fitted(resolved.components, origin)
        self.intercept_ = to_fitted(resolved.intercept, origin)
        return resolved

    def _learn(self, X, X_t, y, origin):
        # dictionary=None: DL-FISTA on X (skdict._dictionary.learn_dictionary).
        warn_if_all_zero(X_t, "the learned atoms are random")
        init = self._starting_dictionary(X, X_t, y)
        n_atoms = self._n_atoms(X_t, init)
        # A round's products: samples x atoms x features multiply-adds.
        macs = X_t.shape[0] * n_atoms * X_t.shape[1]
        # In IEEE float32 whatever the process's matmul precision, as coding:
        # learning from drawn atoms computes in float32 even for float64 data.
        with one_thread_for_small_work(macs, X_t.device), ieee_float32_products():
            result = learn_dictionary(
                X_t,
                n_atoms,
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
        # All-zero data was warned about above.
        if result.history and bool(X_t.any()) and not bool(result.codes.any()):
            _warn_if_no_code(X_t, result.components, self.alpha, self.positive)
        self._store_learned(result.components, origin)
        self.history_ = result.history
        self.n_iter_ = len(self.history_)
        # partial_fit continues from here, as from one long stream: the
        # statistics of the final codes, and atoms that are refined, not
        # explored (so no generator is needed).
        self._online_statistics = batch_statistics(result.codes, X_t)
        self._stream_explores = False

    def _forget_stream(self):
        # What an earlier fit or stream left for partial_fit to continue.
        for name in (
            "history_",
            "_online_statistics",
            "_rng_state",
            "_stream_explores",
        ):
            if hasattr(self, name):
                delattr(self, name)

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
        if init is not None:
            return check_n_components(self.n_components, init.shape[0], "init")
        n_atoms, n_features = self.n_components or X_t.shape[1], X_t.shape[1]
        # The atoms, and their n_atoms x n_atoms Gram matrix and statistics.
        check_holdable(
            n_atoms * max(n_atoms, n_features),
            X_t.dtype,
            f"n_components={n_atoms} atoms of n_features={n_features} features make",
        )
        return n_atoms

    def _store_learned(self, components, origin):
        self.dictionary_ = None
        # Learned atoms are no oracle's: names an earlier fit on an oracle's
        # atoms recorded (kept by a failed fit, which forgets only public
        # attributes) would otherwise name a stream's codes.
        self._concept_names = None
        self._dictionary_param = None
        self.components_ = to_fitted(components, origin)
        self.intercept_ = to_fitted(components.new_zeros(components.shape[1]), origin)

    @ignores_autocast
    @outside_inference_mode
    @fit_context(prefer_skip_nested_validation=False)
    def partial_fit(self, X: ArrayLike, y: ArrayLike = None) -> Self:
        """Update a learned dictionary with one mini-batch.

        Online dictionary learning (Mairal et al., 2010): the batch is coded
        with FISTA, its statistics join running sums, and the atoms are
        refreshed by block coordinate descent on those sums, so data larger than
        memory can be streamed. The first call starts from ``init`` or from
        atoms drawn from the batch (random directions where it has fewer
        distinct non-zero rows than atoms, with a warning: start a stream with
        at least ``n_components`` distinct rows); after :meth:`fit`, the stream
        continues the fitted atoms and the statistics of the fit's final codes
        (``Z^T Z`` and ``Z^T X``, which :meth:`fit` keeps for this on the CPU,
        ``n_components**2`` values, as scikit-learn's
        :class:`~sklearn.decomposition.MiniBatchDictionaryLearning` does),
        weighted as if its samples had been streamed in batches like ``X``, and
        appends to its ``history_``. Atoms drawn from the batch are explored:
        those no sample has used yet, and the less used of two near-duplicates,
        are re-initialised from badly reconstructed samples. Atoms from ``init``
        or from :meth:`fit` are only refined. With a given ``dictionary`` there
        is nothing to learn: the first call resolves it as :meth:`fit` does,
        without coding, and later calls only check ``X``. Setting, changing (to
        other atoms, or a provider with other parameters) or clearing
        ``dictionary`` between calls is an error (call :meth:`fit` to start
        again; an array or provider changed in place is not always detected),
        and other parameters are checked as in :meth:`fit`; a batch in another
        dtype is converted to the atoms' (learning continues in the precision it
        started in).

        A stream learns less well than :meth:`fit` from the same samples, and
        more slowly: on ``make_compositional(50, 3, n_samples=4000)``, seeds
        0-5, at ``tol=1e-4``, six passes in batches of 100 end at dictionary
        similarity 0.92-0.95 where :meth:`fit` (40 rounds) reaches 0.97-0.999,
        at most 0.08 below it (batches of 500: 0.86-0.93, at most 0.11 below),
        in about eight times its time (``benchmarks/bench_partial_fit.py``).
        Stream when the data do not fit in memory.

        Each call is one step of the stream: its statistics are averaged over
        its rows, as in scikit-learn's
        :class:`~sklearn.decomposition.MiniBatchDictionaryLearning`, so a call
        with one row weighs as much as one with a full batch. Feed batches of
        similar sizes (merge a short last chunk into the next one, or drop it).
        The running statistics weigh old batches down only as Mairal et al.
        (2010) do, so a long stream adapts slowly to data that change: after
        1,000 calls on a new dictionary, a stream that had run 200 calls on
        another was at similarity 0.999 with it, one that had run 3,000 at
        0.932. Start a new stream (a fresh estimator, or ``init=`` the current
        atoms) when the data drift. A batch whose statistics overflow (entries
        far beyond the first batch's) raises a ``FloatingPointError`` and
        leaves the stream as it was.

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
        first = not hasattr(self, "components_")
        if not first:
            # scikit-learn validates partial_fit's parameters on the first
            # call only; set_params may have changed them since.
            self._validate_params()
        if not first and self._given != (self.dictionary is not None):
            raise ValueError(
                "partial_fit cannot switch between a given dictionary and a "
                "learned one: this coder was fitted with "
                f"{'a given' if self._given else 'a learned'} dictionary, but "
                f"dictionary is now {'None' if self.dictionary is None else 'set'}. "
                "Call fit, or partial_fit on a clone, to start again."
            )
        with forget_fit_on_failure(self) if first else nullcontext():
            return self._partial_fit(X, y, first)

    def _partial_fit(self, X, y, first):
        if first:
            # A first call starts afresh, whatever an earlier run left behind.
            self._forget_stream()
        X_t, origin = validate_input(self, X, reset=first, device=self.device)
        if not first:
            width = self.components_.shape[0]
            if self.n_components is not None and self.n_components != width:
                raise ValueError(
                    f"partial_fit continues the {width} "
                    f"{'given' if self._given else 'learned'} atoms; "
                    f"n_components={self.n_components} needs a new dictionary: "
                    "call fit, or partial_fit on a clone."
                )
        if self.dictionary is not None:
            if first:
                self._resolve_given(X, X_t, y, origin)
                self.n_iter_ = 0
            elif not is_same_given(self.dictionary, self._dictionary_param):
                raise ValueError(
                    "partial_fit continues the dictionary given at its first "
                    "call; a new dictionary needs a new fit: call fit, or "
                    "partial_fit on a clone."
                )
            else:
                store_in_batch_type(self, X_t, origin)
            return self
        if first or not hasattr(self, "_rng_state"):  # none after fit
            generator = torch_generator(self.random_state)
        else:
            # The stream's own generator, without a draw from random_state
            # (NumPy's global state when None) that it would discard.
            generator = torch.Generator()
            generator.set_state(self._rng_state)
        if first:
            init = self._starting_dictionary(X, X_t, y)
            # Atoms drawn from the data are explored; given ones refined.
            self._stream_explores = init is None
            if init is None:
                # The starting atoms are drawn from this batch, as fit draws
                # them from X.
                warn_if_all_zero(X_t, "the stream's starting atoms are random")
                n_atoms = self._n_atoms(X_t, None)
                init, n_rows = initial_dictionary(
                    X_t, n_atoms, generator, return_n_rows=True
                )
                if n_rows < n_atoms:
                    # The stream keeps a random atom that its samples use: 64
                    # atoms in 32 features, first chunks of 1 / 10 / 64 rows,
                    # then 1,000 a chunk, gave dictionary similarity 0.69-0.76
                    # / 0.77-0.80 / 0.90-0.94 (seeds 0-2). Repeated and zero
                    # rows supply no atom: counted in rows, a chunk of 60 rows,
                    # two of them distinct, started 18 of 20 atoms at random
                    # without a word.
                    rows = (
                        "rows" if n_rows == X_t.shape[0] else "distinct non-zero rows"
                    )
                    warn(
                        f"partial_fit's first chunk has {n_rows} {rows} for "
                        f"{n_atoms} atoms: {n_atoms - n_rows} atoms start "
                        "as random directions, which the stream keeps where "
                        "samples use them. Start it with at least "
                        f"{n_atoms} distinct rows.",
                        UserWarning,
                    )
            else:
                self._n_atoms(X_t, init)
                init = _normalize_atoms(init)[0]  # unit-norm atoms, as in fit
            self.history_ = []
        else:
            # Learning continues in the atoms' own precision, as in
            # SparseAutoencoder.partial_fit: a float32 batch must not round
            # float64 atoms (nor their running statistics) for good.
            init = as_tensor(self.components_, device=X_t.device)
            X_t = as_tensor(X_t, device=X_t.device, dtype=init.dtype, name="X")
            origin = origin._replace(dtype=init.dtype)
        statistics = getattr(self, "_online_statistics", None)
        if statistics is not None:
            # The running sums follow the atoms' dtype and the batch's device,
            # as the atoms do.
            statistics = {
                key: value.to(device=X_t.device, dtype=X_t.dtype)
                if torch.is_tensor(value)
                else value
                for key, value in statistics.items()
            }
        macs = X_t.shape[0] * init.shape[0] * X_t.shape[1]
        # In IEEE float32 whatever the process's matmul precision, as coding:
        # learning from drawn atoms computes in float32 even for float64 data.
        with one_thread_for_small_work(macs, X_t.device), ieee_float32_products():
            components, statistics, record = online_dictionary_update(
                X_t,
                init,
                statistics,
                alpha=self.alpha,
                positive=self.positive,
                max_iter=self.max_iter,
                tol=self.tol,
                batch_size=self.batch_size,
                generator=generator,
                explore=self._stream_explores,
                # A stream of chunks would otherwise draw a bar per chunk.
                verbose=int(self.verbose >= 2),
            )
        self._store_learned(components, origin)
        self._online_statistics = statistics
        self._rng_state = generator.get_state()
        self.history_.append(record)
        # Counted, not read from history_, which a long stream may trim.
        self.n_iter_ = (0 if first else self.n_iter_) + 1
        return self

    def _fit_init(self, X, y, n_atoms):
        if self.init is None:
            return None
        if not is_provider(self.init):
            # Codes, used by transform: checked now, so that a search or a
            # cross-validation fails at fit with the reason, not with NaN
            # scores from every score call.
            device = self.init.device if is_tensor(self.init) else "cpu"
            codes = as_tensor(self.init, device=device, name="init")
            if codes.shape[1] != n_atoms:
                raise ValueError(
                    f"init, the codes' warm start, has {codes.shape[1]} columns "
                    f"but the dictionary has {n_atoms} atoms."
                )
            return None
        if not hasattr(self.init, "transform"):
            # An object exposing only components_: atoms, not codes.
            raise ValueError(
                "With a given dictionary, init is the codes' warm start: an "
                "array of codes or an estimator with transform; "
                f"{type(self.init).__name__} only exposes components_, a "
                "starting dictionary for learning (dictionary=None)."
            )
        if fits_on_data(self.init):
            init = fit_provider(self.init, X, y, "init")
        else:  # frozen, or not an estimator
            if is_estimator(self.init):
                check_frozen_fitted(self.init, "init")
            check_provider_features(self.init, X, "init")
            init = self.init
        # Checked now, so that a search or a cross-validation fails at fit with
        # the reason, not with NaN scores from every score call.
        shape = _codes_shape(init, X)
        if len(shape) != 2 or shape[1] != n_atoms:
            raise ValueError(
                f"init, the codes' warm start, gives codes of shape {shape} per row "
                f"of X ({type(init).__name__}.transform) but the dictionary has "
                f"{n_atoms} atoms."
            )
        return init

    @property
    def _given(self) -> bool:
        """Whether the fitted atoms were given (True) or learned (False)."""
        return self._dictionary_param is not None

    def _warm_start(self, X, X_t: torch.Tensor) -> Callable[[slice], Any]:
        """Return a function giving the warm-start codes of a slice of rows.

        None (from zero) without ``init``; an array of codes is converted and
        checked once, an estimator's ``transform`` codes the rows asked for.
        """
        n_samples, n_components = X_t.shape[0], self._n_features_out
        if self.init is None or not self._given:
            # When learning, init is the starting dictionary, not codes.
            return lambda rows: None

        def checked(codes, name, n_rows):
            codes = as_tensor(codes, device=X_t.device, dtype=X_t.dtype, name=name)
            if tuple(codes.shape) != (n_rows, n_components):
                raise ValueError(
                    f"{name} must have shape (n_samples, n_components) = "
                    f"({n_rows}, {n_components}); got {tuple(codes.shape)}."
                    + (
                        " An array of codes warm-starts the X it was computed "
                        "for only; in a cross-validation or a search, pass an "
                        "estimator (e.g. FrozenEstimator(sae)) as init."
                        if name == "init"
                        else ""
                    )
                )
            return codes

        if not is_provider(self.init):
            # Also after a fit with an init estimator: the codes given now win.
            codes = checked(self.init, "init", n_samples)
            return lambda rows: codes[rows]
        if self.init_ is None:
            raise ValueError(
                "init is an estimator that was set after fit; call fit to "
                "fit it (transform uses the init estimator fitted by fit)."
            )
        # Row slices of X in its own type, for the estimator's transform.
        indexable = _indexable(X)

        def transformed(rows: slice):
            whole = rows.indices(n_samples)[:2] == (0, n_samples)
            X_rows = X if whole else _safe_indexing(indexable, rows)
            codes = self.init_.transform(provider_input(self.init_, X_rows))
            return checked(codes, "init.transform(X)", X_t[rows].shape[0])

        return transformed

    def _dictionary_tensors(self, X_t: torch.Tensor):
        D = as_tensor(self.components_, device=X_t.device, dtype=X_t.dtype)
        b = as_tensor(self.intercept_, device=X_t.device, dtype=X_t.dtype, ndim=1)
        return D, b

    @ignores_autocast
    def transform(self, X: ArrayLike) -> Any:
        """Sparse-code ``X``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data to code; ``intercept_`` is subtracted first.

        Returns
        -------
        codes : ndarray or torch.Tensor of shape (n_samples, n_components)
            In the array type, device and dtype of ``X`` (float64 for
            integer and NumPy float16 input, as in scikit-learn).
        """
        check_is_fitted(self)
        # Coding reads alpha, positive, max_iter, tol, ... as they are now.
        self._validate_params()
        check_same_namespace(X, self, attribute="components_", method="transform")
        X_t, origin = validate_input(self, X, reset=False, device=self.device)
        return to_output(
            self._encode(X, X_t, *self._dictionary_tensors(X_t)).codes, origin, self
        )

    def _encode(self, X, X_t: torch.Tensor, D: torch.Tensor, b: torch.Tensor):
        init = self._warm_start(X, X_t)(slice(None))
        result = self._code(X_t, D, b, init, self.verbose)
        self._warn_unconverged(_unconverged_counts(result, self.max_iter), X_t.shape[0])
        return result

    def _code(self, X_t, D, b, init, verbose):
        return fista_encode(
            X_t,
            D,
            alpha=self.alpha,
            positive=self.positive,
            init=init,
            max_iter=self.max_iter,
            tol=self.tol,
            batch_size=self.batch_size,
            verbose=verbose,
            # Centred batch by batch: X - b would copy all of X (a zero
            # intercept, an array or learned dictionary's, needs no centring).
            offset=b if bool(b.any()) else None,
        )

    def _warn_unconverged(self, counts: tuple[int, int], n_samples: int) -> None:
        """Warn about the samples left uncertified (:func:`_unconverged_counts`)."""
        not_converged, at_floor = counts
        if not_converged > at_floor:
            warn(
                f"FISTA did not reach tol={self.tol} for "
                f"{not_converged - at_floor} of {n_samples} samples, within "
                f"max_iter={self.max_iter} iterations or at all (rounding can "
                "keep an optimum's gap above a tol close to machine precision); "
                "increase max_iter or tol.",
                ConvergenceWarning,
            )
        if at_floor:
            warn(
                f"FISTA could not certify tol={self.tol} for {at_floor} of "
                f"{n_samples} samples: their duality gap fell to what float64 "
                "rounding can measure (about 16 * eps * ||x||**2), which is "
                f"above tol times their objective. alpha={self.alpha} is tiny "
                "beside these samples: their codes are at the optimum to "
                "working precision, but to certify them, raise alpha or tol, or "
                "rescale X.",
                ConvergenceWarning,
            )

    @ignores_autocast
    def inverse_transform(self, X: ArrayLike) -> Any:
        """Reconstruct data from codes: ``X @ components_ + intercept_``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_components)
            Codes.

        Returns
        -------
        X_reconstructed : ndarray or torch.Tensor of shape (n_samples, n_features)
            In the array type, device and dtype of the codes (float64
            for integer and NumPy float16 codes).
        """
        codes, origin = validate_codes(self, X)
        D, b = self._dictionary_tensors(codes)
        return to_output(codes @ D + b, origin)

    @ignores_autocast
    def score(self, X: ArrayLike, y: ArrayLike = None) -> float:
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
            Minus the mean squared error; 0 for a perfect reconstruction.
        """
        check_is_fitted(self)
        self._validate_params()
        check_same_namespace(X, self, attribute="components_", method="score")
        X_t, _ = validate_input(self, X, reset=False, device=self.device)
        D, b = self._dictionary_tensors(X_t)
        # The codes (n_samples x n_components, often many times the size of
        # X) are never needed whole: a batch of rows at a time is coded and
        # reduced to its squared error, so memory stays within batch_size's
        # bound, as in transform's solver.
        # The solver batches by batch_size within each step. Each step is a
        # call that prepares the dictionary again (its Gram matrix, Lipschitz
        # constant and float64 copy: about 40 ms at 4,000 atoms) and finishes
        # its stalled float32 samples in float64, so steps span a few
        # batches. 80,000 samples x 4,000 atoms, float32, one thread: 7.0 s
        # and +370 MiB peak in steps of one automatic batch, 6.2-6.4 s and
        # +760 MiB in steps of four, 6.1-6.3 s and +1,450 MiB for all codes
        # at once; the peak no longer grows with n_samples. A given
        # batch_size sets the steps too (steps of four automatic batches at
        # least took 4 GiB where transform took 0.8 GiB at batch_size=4096).
        n_samples = X_t.shape[0]
        # int(): a NumPy integer batch_size near its type's limit would wrap
        # around in the product (no rows scored, a score of 0).
        batch = min(int(self.batch_size or _auto_batch_size(*D.shape)), n_samples)
        step = _SCORE_STEP_BATCHES * max(batch, 1)
        starts = range(0, n_samples, step)
        warm_start = self._warm_start(X, X_t)
        squared_error = 0.0  # the mean, summed step by step
        not_converged = at_floor = 0
        for start in tqdm(
            starts, disable=self.verbose <= 0 or len(starts) < 2, desc="score"
        ):
            # In bounds: the array API leaves slices past the end unspecified.
            rows = slice(start, min(start + step, n_samples))
            X_rows = X_t[rows]
            # One step: the solver's own bar over its batches (none showed).
            inner = self.verbose if len(starts) == 1 else 0
            result = self._code(X_rows, D, b, warm_start(rows), verbose=inner)
            residual = X_rows - result.codes @ D - b
            # Finite wherever the mean fits a float64 (residuals above 1e154
            # squared to -inf), as reconstruction_error.
            squared_error += sum_of_squares(residual.double(), X_t.numel())
            counts = _unconverged_counts(result, self.max_iter)
            not_converged, at_floor = not_converged + counts[0], at_floor + counts[1]
        self._warn_unconverged((not_converged, at_floor), n_samples)
        return -squared_error

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def __getstate__(self):
        return portable_state(super().__getstate__())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        take_providers_tags(tags, self.dictionary, self.init)
        return tags


def _codes_shape(init: Any, X: Any) -> tuple[int, ...]:
    """Return the shape of ``init``'s codes of one row of ``X``.

    From the width skdict's own estimators declare, or the atoms of weights
    that are not an estimator; else from coding X's first row, with no
    warnings filtered (a filter would drop other threads' warnings and hold
    a lock around the estimator's own code). Other estimators' declared
    widths are not trusted: LinearDiscriminantAnalysis declares n_classes - 1
    columns and gives fewer on rank-deficient data.
    """
    inner = init
    while isinstance(inner, FrozenEstimator):
        inner = inner.estimator
    if type(inner).__module__.startswith("skdict."):
        return (1, int(inner._n_features_out))
    if not is_estimator(inner) and hasattr(inner, "components_"):
        return (1, int(np.shape(inner.components_)[0]))
    first = X[:1] if is_tensor(X) else _safe_indexing(_indexable(X), slice(0, 1))
    return tuple(np.shape(init.transform(provider_input(init, first))))


def _indexable(X: Any) -> Any:
    """``X`` as :func:`~sklearn.utils._safe_indexing` takes its rows.

    In its own type, for an estimator's ``transform``; an object that is only
    convertible to an array is converted (once).
    """
    if hasattr(X, "shape") or isinstance(X, (list, tuple)):
        return X
    return np.asarray(X)
