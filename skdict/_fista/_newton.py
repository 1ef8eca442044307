"""Exact steps on a support: Newton, null-space moves and the active-set method.

FISTA identifies supports; these steps finish the rows whose support it has
found (step 3 of the algorithm described in :mod:`skdict._fista`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._core import _bmv, _compact

# Elements per (rows, w, w)-shaped array of the per-sample working-set Gram
# matrices and Newton systems, processed in chunks of rows: about five such
# arrays are alive at once (the gathered Gram matrices and their int64 index,
# the system, its Cholesky factor and magnitudes), in float64, so 2**21
# elements each (16 MiB) add about 80 MiB to a batch. At 2**24 elements they
# added about 700 MiB (a 2,000-atom batch of 8,388 rows peaked at +956 MB).
_SYSTEM_ELEMENTS = 2**21
# Eigenvalues of a singular Newton system at most this fraction of its largest
# one, times its size, count as zero: float64 eigh leaves exact null
# directions at about eps times the largest eigenvalue.
_NULL_EIGENVALUE = 64 * torch.finfo(torch.float64).eps
# Steps between two Newton points of _active_set computed afresh from its
# inverse (in between, rank-one updates).
_ACTIVE_SET_REFRESH = 8
# Codes with fewer than one non-zero in ``_SPARSE_SUPPORT`` entries have
# their supports listed by ``torch.nonzero`` (O(nnz) scatters) rather than by
# cumulative sums over every entry (see _support_indices). One thread,
# scatters against sums: 2,500 x 1,000 at 5% non-zeros 18 ms against 64 ms,
# at 30% 62 against 59 ms; 400 x 186 at 5% 0.47 against 0.57 ms, at 20%
# 0.81 against 0.54 ms.
_SPARSE_SUPPORT = 8


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
