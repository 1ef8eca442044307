"""The driver of :func:`fista_encode`: batches, precision and scale.

Rows are cut into batches (and, on a CPU with several threads, shares), each
solved by :func:`._working_set._encode_batch`. Float32 rows not certified
after a few dozen iterations are finished in float64, and rows too large or
too small for their certificates to hold are rescaled first.
"""

from __future__ import annotations

import math
import threading
from contextlib import nullcontext

import torch
from tqdm.auto import tqdm

from .._tensor import (
    ieee_float32_products,
    rows_per_block,
)
from .._warnings import warn
from ._core import FISTAResult, _sample_objective, lipschitz_constant
from ._problem import _AUTO_BATCH_ELEMENTS, _Problem
from ._threads import _MIN_SHARE_ROWS, _share_count, _solve_in_shares
from ._working_set import _encode_batch

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
# Float32 dictionaries of at most this many entries get a float64 copy for
# the certificates; larger ones gather the atoms a code uses, in float64.
_FLOAT64_COPY_ELEMENTS = 2**22
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
# Iterations after which float32 samples not yet certified are finished in
# float64 (see fista_encode); certified samples take 24 on average on the
# oracle task. alpha=0.01 there (1,000 samples of make_compositional, 100 to
# 1,000 atoms, one thread): 0.21-0.26 s with 50, 0.71-0.96 s with 200, and
# 3.4-4.5 s for float32 alone, which runs to max_iter; alpha=0.1 unchanged.
_FLOAT32_ITERATIONS = 50


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


def _auto_batch_size(n_components: int, n_features: int) -> int:
    """Rows per batch when ``batch_size`` is None.

    At most ``_AUTO_BATCH_ELEMENTS`` entries of the wider of atoms and
    features per row, and, for wide rows, shares of ``_AUTO_SHARE_ELEMENTS``
    features for each thread that a batch is split between.
    """
    by_width = rows_per_block(max(n_components, n_features), _AUTO_BATCH_ELEMENTS)
    share = max(rows_per_block(n_features, _AUTO_SHARE_ELEMENTS), _MIN_SHARE_ROWS)
    return min(by_width, share * max(1, torch.get_num_threads()))


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
