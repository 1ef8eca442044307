"""One batch solved by FISTA on per-sample working sets of atoms, or on all atoms."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._core import (
    FISTAResult,
    _bmv,
    _compact,
    _dual_scaling,
    _extrapolate,
    _gap_from_residual,
    _gershgorin,
    _momentum_table,
    _prox_l1,
    _take_square,
)
from ._newton import (
    _SYSTEM_ELEMENTS,
    _active_set,
    _polish,
    _polish_candidates,
    _support_indices,
)
from ._problem import _Problem
from ._threads import _stop_if_requested

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
# A working-set gap is computed from Gram quantities, ``r.r = x.x - 2 z.b +
# z G z``, which loses about eps * x.x to cancellation; below this many eps
# times x.x the gap is not measurable, and a row asked for less would spin
# to its budget in its first working set (tol=1e-13, 200 atoms: 38 of 300
# rows ended at relative gaps up to 0.9). The certificate that decides
# convergence uses exact residuals.
_EXPANSION_ROUNDING = 16
# Working-set groups of fewer rows join the next wider group (_merge_widths).
_MIN_GROUP_ROWS = 256
# Finished samples are dropped from a working-set solve once they make up this
# fraction of it: copying the per-sample Gram matrices for one sample is waste.
_COMPACT_FRACTION = 1 / 8
# Length of the momentum table: beyond it steps keep its last momentum,
# 0.99927 instead of creeping on towards 1, so that memory does not grow
# with max_iter (10**8 iterations took a 3.3 GB table).
_MOMENTUM_STEPS = 4096


# The all-atoms solver takes Newton steps (and their support reductions) on
# supports of up to max(2 * n_features, this many) atoms: a support larger
# than n_features is singular, and the null-vector moves that shrink it are
# what converges it. Capped at 2 * n_features alone, one feature and three
# near-duplicate atoms ran 1,000 iterations to a gap of 6e-4; with the
# reductions, 20 iterations to the optimum.
_MIN_POLISH_SUPPORT = 32


def _working_set_gap(gz, b, z, x_sq, alpha, positive):
    """Primal value and duality gap of the lasso restricted to a working set.

    From Gram quantities, with ``gz = G z``: ``r.r = x.x - 2 z.b + z G z``,
    ``x.r = x.x - z.b`` and ``r.d_j = b_j - (G z)_j``.
    """
    z_dot_b = torch.linalg.vecdot(z, b)
    r_sq = (x_sq - 2.0 * z_dot_b + torch.linalg.vecdot(z, gz)).clamp_min(0.0)
    scale = _dual_scaling(b - gz, alpha, positive)
    return _gap_from_residual(x_sq - z_dot_b, r_sq, z.abs().sum(dim=1), scale, alpha)


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
    row's group maxima (:func:`._problem._group_maxima`; it is overwritten), with
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
