r"""Per-sample sparse inference with FISTA, batched on torch.

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
``_driver._MAX_GRAM_ELEMENTS`` entries, every array of a batch holds
``O(batch_size * max(n_components, n_features))`` entries, and the per-sample
working-set systems (``O(w^2)`` each) are solved in chunks of
``_newton._SYSTEM_ELEMENTS``.
"""

from ._core import FISTAResult, lipschitz_constant
from ._driver import fista_encode

__all__ = ["FISTAResult", "fista_encode", "lipschitz_constant"]
