"""A batch of lasso problems sharing a dictionary: cached products and certificates."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._tensor import (
    rows_per_block,
)
from ._core import _dual_scale, _gap_from_residual, _take_square
from ._newton import _SYSTEM_ELEMENTS

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
# The certificate's gap, from float64 residuals ``x - zD`` (each entry off by
# about eps ||x||), is not measurable below a few eps * x.x (nor is a
# working-set gap, see _EXPANSION_ROUNDING in _working_set.py): rows at
# their optimum to 1e-18 (checked with mpmath: alpha=1e-10 beside rows of norm
# 1) kept gaps of 1-5 eps x.x, above tol times their objective (about alpha
# ||z||_1), and spun to max_iter. A row whose certified gap is at most this
# many eps times x.x leaves, unconverged, instead.
_CERTIFICATE_ROUNDING = 16


def _group_size(m: int) -> int:
    """Atoms per group of :func:`_group_maxima` for ``m`` atoms.

    Up to 32, keeping at least 100 groups to rank (working sets take at most
    one atom per group, see :func:`._working_set._next_working_sets`); 1 when
    no such size divides ``m``.
    """
    return next((g for g in (32, 16, 8, 4, 2) if m % g == 0 and m >= 100 * g), 1)


def _group_maxima(scores: torch.Tensor, size: int) -> torch.Tensor:
    """Largest entry of each group of ``size`` adjacent columns, ``(n, m // size)``.

    Group ``g`` holds the columns ``g * size`` to ``(g + 1) * size - 1``.
    ``max_pool1d`` computes this about twice as fast as ``amax`` over a
    ``(n, m // size, size)`` view on CPU (``torch.max`` with indices is ten
    times slower), and the members of a group share a cache line when
    :func:`._working_set._next_working_sets` looks them up. Returns
    ``scores`` itself when ``size`` is 1.
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

        ``max_j |r.d_j|`` without the sign constraint; see :func:`._core._dual_scaling`.
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
