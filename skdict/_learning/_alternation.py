"""DL-FISTA: rounds of FISTA codes alternating with least-squares dictionary updates.

:func:`learn_dictionary` is the paper's DL-FISTA (Barin Pacela et al., 2026,
arXiv 2603.28744): rounds of FISTA codes, warm-started from the previous
round, alternate with the closed-form least-squares dictionary update (the
method of optimal directions, Engan, Aase & Husøy, 1999). Started from atoms
drawn from the data, every round explores: a continuation on ``alpha``,
momentum on the atoms and atom resampling, with no promise that the objective
decreases; refining a given ``init``, a safeguard makes every round decrease
it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .._dictionary import _max_row_norm
from .._fista._core import _operand, _plain_fista, _sample_objective
from .._fista._driver import _certifiable_scale, fista_encode, refuse_mps
from ._atoms import _DuplicateMemory, _worst_residuals, initial_dictionary
from ._updates import (
    _code_statistics,
    _normalize_atoms,
    _rescaled,
    _sample_side_atoms,
    block_coordinate_update,
    lstsq_dictionary,
)

# The first rounds explore. Their codes use a penalty decreasing geometrically
# towards the round's target (``alpha``, or ``_FIRST_ALPHA_FACTOR * alpha``)
# over at most ``_MAX_HOMOTOPY_ROUNDS`` rounds, from ``_HOMOTOPY_FACTOR ** (1 -
# 1 / n)`` times it (a continuation, or homotopy): sparser codes
# early on make each atom's least-squares update an average over the few
# samples that clearly use it, which pulls atoms apart faster than codes spread
# over many half-right atoms.
# A short continuation is enough once the dictionary has momentum (below): on
# the compositional benchmark (n_latents=500, seed 0, 60 rounds, momentum 0.9,
# similarity / MCC-OOD) 15 rounds gave 0.951 / 0.902, 8 gave 0.959 / 0.931 and
# 4 gave 0.977 / 0.967.
_HOMOTOPY_FACTOR = 10.0
_MAX_HOMOTOPY_ROUNDS = 4
# Without ``init`` every round explores, none refines with the safeguarded
# (monotone) least-squares update: refinement lowers ``F`` but moves the atoms
# away from the truth (n_latents=500, seed 0, 60 rounds: a last quarter of
# refinement took F from 0.4382 to 0.4286 and the similarity from 0.986 to
# 0.977; exploring throughout ends at 0.988 / MCC-OOD 0.979 instead of 0.967).
# While exploring, the next round codes on the least-squares dictionary moved
# on along its change from the previous round's, ``Y = A + beta (A -
# A_previous)`` (``A`` the normalised least-squares atoms, ``beta =
# _EXTRAPOLATION``): momentum on the fixed-point iteration ``D -> LS(codes(D))``,
# whose slow directions -- the rarely used atoms -- it speeds up while the fast
# ones stay damped. n_latents=500, seed 0, 60 rounds (15 homotopy rounds):
# extrapolating from the previous *extrapolated* dictionary instead (a
# relaxation, the former rule) reached 0.919 / MCC-OOD 0.827 with beta=1 and
# oscillated with beta=1.5 (0.970 / 0.949 in twice the time); momentum 0.7 /
# 0.9 / 1.0 reached 0.933 / 0.951 / 0.947. With 4 homotopy rounds and 45
# rounds, beta 0.9 / 0.95 reached 0.988 / 0.988 (MCC-OOD 0.979 / 0.980) and
# with 3 homotopy rounds 0.984 / 0.991.
_EXTRAPOLATION = 0.95
# While exploring, every ``_RESAMPLE_EVERY`` rounds, of two atoms with
# |cosine| above ``_MAX_COHERENCE`` the less used one is replaced by the
# residual of a badly reconstructed sample (K-SVD's replacement rule, Aharon,
# Elad & Bruckstein, 2006, Sec. IV-E).
_MAX_COHERENCE = 0.7
_RESAMPLE_EVERY = 3
# Dictionaries with more than ``_PLAIN_FISTA_RATIO`` atoms per feature resample,
# while exploring, above a lower bound: ``sqrt(2 ln K / d)`` (about the
# |cosine| at which a random unit atom in ``d`` dimensions finds its nearest of
# ``K`` others, so true atoms are rarely taken for duplicates), clipped to
# [_OVERCOMPLETE_COHERENCE, _MAX_COHERENCE]. Atoms that mix true atoms block
# the exploring chain reaction (below), and at 0.5 more of them are caught:
# n_latents=1000 (93 features), float32, true atoms within cosine 0.9 after
# 60 / 70 / 80 exploring rounds went from 37 / 81 / 184 to 99 / 181 / 327
# (seed 0), 80 / 194 / 351 to 188 / 401 / 458 (seed 1) and 34 / 81 / 179 to
# 263 / 423 / 487 (seed 2). A bound of 0.55 fell in between (158 and 379
# after 80 rounds, seeds 0 and 2); 0.45 was ahead per round but not per
# second (414 after 80 rounds, 48 s instead of 38 s: more atoms to re-code);
# 0.4 resampled true atoms and none was recovered; resampling every round
# (at 0.5) was slower (81 after 80 rounds). n_latents=500, 40 rounds: MCC-OOD
# 0.978 / 0.986 against 0.973 / 0.986 (seeds 0, 1). At n_latents=100 (2.1
# atoms per feature, 47 features, where pairs of true atoms reach 0.6) a
# bound of 0.5 cost MCC-OOD 0.985 -> 0.936 (seed 0).
_OVERCOMPLETE_COHERENCE = 0.5
# Codes of a learning round are solved to a relative duality gap of the
# dictionary's last relative change, within [tol, _MAX_ROUND_TOL]: there is no
# point in solving codes for a dictionary that is about to move more than that.
# On the compositional benchmark (n_latents=100, 20 rounds) a cap of 5e-2
# instead of 1e-2 cut the fit time by 12% at the same MCC-OOD; with momentum
# (n_latents=500, seed 0, 60 rounds) 1e-1 instead of 5e-2 took 16.0 s instead
# of 20.2 s, similarity 0.990 instead of 0.988. Since exploring rounds code
# from zero codes, looser codes are also sparser ones, and the cap is 0.3
# (one thread, seeds 0 / 1 / 2): n_latents=500, 40 rounds, 7.8 / 7.8 / 7.7 s
# for MCC-OOD 0.987 / 0.986 / 0.988 against 9.4 / 9.9 / 9.7 s for 0.978 /
# 0.989 / 0.981 at 1e-1 (0.2: 8.6-9.2 s; 0.5: 7.8-8.1 s, 0.986-0.989);
# n_latents=1000, 120 rounds, 47-49 s for 0.540 / 0.491 / 0.570 against
# 55-58 s for 0.494 / 0.485 / 0.490. With few features such loose codes
# lose atoms, so data with fewer than ``_LOOSE_MIN_FEATURES`` features keeps
# the cap ``_MAX_ROUND_TOL_FEW_FEATURES``. Similarity with the true atoms,
# seeds 0 / 1 / 2, 0.3 against 0.1: 10 features (40 atoms, 2 active, 109
# rounds) 0.754 / 0.762 / 0.773 against 0.902 / 0.885 / 0.860; 20 features
# (80 atoms, 3 active, 60 rounds) 0.907 / 0.950 / 0.950 against 0.933 /
# 0.988 / 0.973; 40 features (200 atoms, 5 active, 40 rounds) 0.959 / 0.958
# / 0.957 against 0.963 / 0.962 / 0.950 in 6.6 s against 10.1 s; 60
# features (200 atoms, 10 active, 30 rounds) 0.993 / 0.995 / 0.992 against
# 0.997 / 0.997 / 0.991 in 13.5 s against 15.7 s.
_MAX_ROUND_TOL = 0.3
_LOOSE_MIN_FEATURES = 40
_MAX_ROUND_TOL_FEW_FEATURES = 0.1
# Dictionaries with at most ``_PLAIN_FISTA_RATIO`` atoms per feature are coded,
# while exploring, by ``_PLAIN_FISTA_ITER`` iterations of plain FISTA (step
# 1/L, warm-started, not to convergence: the paper's inexact codes) instead of
# the working-set solver run to a duality gap, whose per-call overhead
# dominates on small problems. n_latents=100 (2.1 atoms per feature), seed 0:
# 20 rounds to the gap took 3.04 s for similarity 0.976 / MCC-OOD 0.942, 25
# rounds of 8 plain iterations 1.12 s for 0.991 / 0.976. More overcomplete
# dictionaries need many more iterations (n_latents=500, 6.3 atoms per feature:
# 10 plain iterations left 20-38 coherent atoms to resample every third round
# and the objective diverged).
_PLAIN_FISTA_RATIO = 3.0
_PLAIN_FISTA_ITER = 8
# Dictionaries with more atoms per feature than that, given more than
# ``_FIRST_ROUNDS + _FINAL_ROUNDS`` rounds, spend the rounds between the first
# ``_FIRST_ROUNDS`` and the last ``_FINAL_ROUNDS`` on the paper's inexact
# alternation (its DL-FISTA):
# ``_INEXACT_FISTA_ITER`` plain FISTA iterations per round, warm-started, then
# the least-squares update, at ``alpha``, without resampling, its atoms moved
# on by momentum ``_INEXACT_EXTRAPOLATION`` as above; exploring rounds come
# before and after. On n_latents=1000 (10.8 atoms per feature, about 25
# training samples per atom, a dozen per OOD atom; seed 0, MCC-OOD) the
# exploring rounds recover atoms in a chain reaction within about 100 rounds
# (2 true atoms within cosine 0.9 after 50 rounds, 284 after 100: 0.279) but
# then stay in a basin short of the rarely used atoms (0.385 after 250 rounds,
# 0.397 after 400, 155 s); the inexact rounds from their atoms recover those
# (100 exploring + 100 inexact + 40 exploring rounds: 0.495, 76 s; with 300
# inexact rounds 0.517), where alone they need hundreds of rounds for the
# chain reaction (500 inexact + 40 exploring rounds: 0.475, 150 s; 210 + 40:
# 0.228). The paper ran 1,000 rounds of 100 iterations for its 0.48. Like
# the paper's loop, the inexact rounds start from zero codes and no momentum:
# continuing from the exploring rounds' codes ended at 0.376.
# Momentum 0.9 brought the inexact loop's chain reaction 2.5 times sooner;
# 0.97 was no faster; 3 or 5 iterations per round were slower per second, 20
# no faster. Their codes keep their scale: rescaling them by the
# least-squares atoms' norms, as exploring rounds do, made the objective grow
# round after round (n_latents=500: 0.66 after 10 rounds, 3.1 after 35).
# Fewer first rounds cut the exploring chain reaction short: 100 rounds as
# 30 + 30 + 40 gave 0.237 against 0.279 for 100 exploring rounds, 140 as
# 50 + 50 + 40 0.308 and 180 as 70 + 70 + 40 0.457. With the lower
# coherence bound (above) the chain reaction comes sooner, and 70 first
# rounds are enough (float32, seeds 0 / 1 / 2, two fits side by side): 140
# rounds as 70 + 40 + 30 reached 0.492 / 0.500 / 0.519, 160 as 70 + 50 + 40
# 0.540 / 0.492 / 0.522, 130 as 60 + 40 + 30 0.478 / 0.470 / 0.494 and 120
# as 50 + 40 + 30 0.425 / 0.456 / 0.450.
# When inexact rounds follow, the first rounds code at ``_FIRST_ALPHA_FACTOR``
# times ``alpha``: sparser codes are cheaper and lock atoms in sooner (seed 0,
# true atoms within cosine 0.9 after 50 / 70 rounds: 214 / 374 at 1.5 alpha
# against 18 / 168 at alpha, 0.27 s per round against 0.55 s; at 2 alpha 62 /
# 92). The inexact and last rounds stay at ``alpha``: at 1.5 alpha they ended
# at MCC-OOD 0.462 / 0.412 against 0.499. With the sooner chain reaction 60
# first rounds and 30 inexact ones suffice (one thread, two fits side by
# side, seeds 0-4): 120 rounds as 60 + 30 + 30 reached 0.503 / 0.480 / 0.503 /
# 0.539 / 0.490 in 36-40 s; 140 as 70 + 40 + 30 0.499 / 0.480 / 0.535 / 0.569
# / 0.497 in 39-50 s; 120 as 50 + 40 + 30 0.495 / 0.461 / 0.482 (seeds 0-2).
# Without inexact rounds, such dictionaries code the first half of their
# exploring rounds at ``_FIRST_ALPHA_FACTOR`` times ``alpha`` likewise. With
# exploring rounds started from zero codes (``learn_dictionary``), n_latents=500
# (6.3 atoms per feature), 40 rounds, one thread, seeds 0 / 1 / 2: 11.6 / 12.2
# / 11.4 s for MCC-OOD 0.978 / 0.989 / 0.981, against 22.2 / 23.2 / 21.3 s for
# 0.981 / 0.976 / 0.979 at ``alpha`` throughout; the first 30 of 40 rounds:
# 10.7-11.3 s, 0.973 / 0.989 / 0.982.
_FIRST_ALPHA_FACTOR = 1.5
_FIRST_ROUNDS = 60
_FINAL_ROUNDS = 30
# Fewer inexact rounds than this are not taken (every round explores, the
# first half at ``_FIRST_ALPHA_FACTOR * alpha``), so that up to 109 rounds --
# the paper reproduction's 100 among them -- take no inexact round. A few
# inexact rounds did help at n_latents=1000 (100 rounds as 60 + 10 + 30:
# MCC-OOD 0.472 / 0.443 at seeds 0 / 1, against 0.399 exploring); at
# n_latents=5000 they were what revealed the cost guarded against below (more
# atoms than samples: 38 s per inexact round against 6.5 s for an exploring
# one).
_MIN_INEXACT_ROUNDS = 20
_INEXACT_FISTA_ITER = 10
_INEXACT_EXTRAPOLATION = 0.9


class DictionaryLearningResult(NamedTuple):
    """Output of :func:`learn_dictionary`.

    Attributes
    ----------
    components : torch.Tensor of shape (n_components, n_features)
        The learned atoms, with unit norm.
    codes : torch.Tensor of shape (n_samples, n_components)
        Codes of ``X`` from the last round, rescaled to ``components``: a warm
        start for coding ``X`` on the returned atoms.
    history : list of dict
        One record per round, see :func:`learn_dictionary`.
    """

    components: torch.Tensor
    codes: torch.Tensor
    history: list[dict[str, float]]


def _few_atoms_per_feature(n_components: int, n_features: int) -> bool:
    """At most ``_PLAIN_FISTA_RATIO`` atoms per feature (see there)."""
    return n_components <= _PLAIN_FISTA_RATIO * n_features


def _coherence_bound(n_components: int, n_features: int) -> float:
    """|cosine| above which the exploring rounds take two atoms for duplicates.

    ``_MAX_COHERENCE`` for at most ``_PLAIN_FISTA_RATIO`` atoms per feature;
    above, ``sqrt(2 ln K / d)`` clipped to ``[_OVERCOMPLETE_COHERENCE,
    _MAX_COHERENCE]`` (see ``_OVERCOMPLETE_COHERENCE``).
    """
    if _few_atoms_per_feature(n_components, n_features):
        return _MAX_COHERENCE
    typical = math.sqrt(2.0 * math.log(n_components) / n_features)
    return min(_MAX_COHERENCE, max(_OVERCOMPLETE_COHERENCE, typical))


class _Step(NamedTuple):
    components: torch.Tensor
    codes: torch.Tensor
    objective: torch.Tensor  # per sample, at (codes, components)
    residual: torch.Tensor
    # Exploration: the normalised least-squares atoms before extrapolation.
    anchor: torch.Tensor | None = None


def _lstsq_step(
    X: torch.Tensor,
    codes: torch.Tensor,
    components: torch.Tensor,
    alpha: float,
    objective: torch.Tensor | None,
    extrapolation: float = 0.0,
    previous: torch.Tensor | None = None,
    rescale: bool = True,
    operand: torch.Tensor | None = None,
) -> _Step:
    """Apply the least-squares dictionary update (never increasing F when refining).

    Normalising the least-squares atoms either keeps their reconstruction
    (codes rescaled by the atoms' norms, which changes the L1 term) or keeps
    the codes (which changes the reconstruction); the first that does not
    increase ``F`` beyond ``objective`` (per-sample values at ``codes,
    components``) is taken. Should both increase it -- the least-squares atoms
    are optimal only without the unit-norm constraint -- one sweep of
    :func:`block_coordinate_update` is used instead, which cannot. With
    ``objective=None`` (exploration) there is no safeguard: the normalised
    least-squares atoms ``A`` are moved on by ``extrapolation`` times their
    change from ``previous`` (the last round's ``A``), renormalised; the codes
    are rescaled to ``A`` unless ``rescale`` is False, and ``A`` is returned
    as the step's ``anchor``. ``operand`` is ``_operand(codes)`` when known.
    """
    if operand is None:
        operand = _operand(codes)
    gram, cross = _code_statistics(codes, X, operand)
    raw = _sample_side_atoms(codes, operand, X, gram, components)
    if raw is None:
        raw = lstsq_dictionary(gram, cross, components)
    atoms, norms = _normalize_atoms(raw)
    unusable = norms == 0
    atoms[unusable], norms[unusable] = components[unusable], 1.0
    if objective is None:
        anchor = atoms
        if extrapolation and previous is not None:
            atoms = _normalize_atoms(atoms + extrapolation * (atoms - previous))[0]
        if rescale:
            codes, operand = _rescaled(codes, operand, norms)
        return _Step(
            atoms, codes, *_sample_objective(X, codes, atoms, alpha, operand), anchor
        )
    for Z, Z_operand in (_rescaled(codes, operand, norms), (codes, operand)):
        f, R = _sample_objective(X, Z, atoms, alpha, Z_operand)
        if f.sum() <= objective.sum():
            return _Step(atoms, Z, f, R)
    D = block_coordinate_update(components, gram, cross)
    return _Step(D, codes, *_sample_objective(X, codes, D, alpha, operand))


class _Schedule(NamedTuple):
    """Which rounds of a fit explore, follow the paper or raise the penalty."""

    n_explore: int  # rounds [0, n_explore) explore
    n_homotopy: int  # rounds of the continuation
    n_inexact: int  # rounds [_FIRST_ROUNDS, _FIRST_ROUNDS + n_inexact): the paper's
    n_raised: int  # rounds [0, n_raised) target _FIRST_ALPHA_FACTOR * alpha
    few_atoms: bool  # see _few_atoms_per_feature

    def exploring(self, t: int) -> bool:
        return t < self.n_explore

    def inexact(self, t: int) -> bool:
        return _FIRST_ROUNDS <= t < _FIRST_ROUNDS + self.n_inexact

    def plain_iterations(self, t: int) -> int | None:
        """Plain FISTA iterations that code round ``t``; None: to a duality gap."""
        if self.inexact(t):
            return _INEXACT_FISTA_ITER
        if self.exploring(t) and self.few_atoms:
            return _PLAIN_FISTA_ITER
        return None

    def round_alpha(self, t: int, alpha: float) -> float:
        """Return the penalty round ``t`` codes at (see :func:`learn_dictionary`)."""
        target = alpha * _FIRST_ALPHA_FACTOR if t < self.n_raised else alpha
        if t < self.n_homotopy and self.exploring(t):
            return target * _HOMOTOPY_FACTOR ** (1.0 - (t + 1) / self.n_homotopy)
        return target


def _schedule(
    n_explore: int, n_components: int, n_samples: int, n_features: int
) -> _Schedule:
    """Plan the rounds of a fit with ``n_explore`` exploring rounds."""
    few_atoms = _few_atoms_per_feature(n_components, n_features)
    n_homotopy = max(1, min(_MAX_HOMOTOPY_ROUNDS, n_explore))
    n_inexact = 0 if few_atoms else max(0, n_explore - _FIRST_ROUNDS - _FINAL_ROUNDS)
    if n_inexact < _MIN_INEXACT_ROUNDS or n_components > n_samples:
        # With more atoms than samples the inexact rounds do not pay:
        # n_latents=5000, 2,500 samples, seed 0, 120 rounds with 30 of them
        # took 455 s for MCC-OOD 0.274, where 10 exploring rounds take 7 s
        # for 0.278 (their dense codes make every least-squares step a
        # factorisation of the samples' full Z Z^T, or of Z^T Z's
        # pseudo-inverse where that is not well posed).
        n_inexact = 0
    if few_atoms:
        n_raised = 0
    elif n_inexact:
        n_raised = _FIRST_ROUNDS
    else:
        n_raised = n_explore // 2
    return _Schedule(n_explore, n_homotopy, n_inexact, n_raised, few_atoms)


def _code_round(
    X: torch.Tensor,
    components: torch.Tensor,
    codes: torch.Tensor,
    alpha: float,
    *,
    positive: bool,
    iterations: int | None,
    warm_start: bool,
    tol: float,
    max_iter: int,
    batch_size: int | None,
) -> tuple[torch.Tensor, float]:
    """Code ``X`` for a learning round: the codes and mean FISTA iterations.

    ``iterations`` plain FISTA iterations from ``codes`` when given (the
    paper's inexact codes); else the working-set solver to a relative gap
    ``tol``, from ``codes`` when ``warm_start`` and from zero codes if not.
    """
    if iterations is not None:
        return (
            _plain_fista(X, components, codes, alpha, positive, iterations),
            float(iterations),
        )
    coded = fista_encode(
        X,
        components,
        alpha=alpha,
        positive=positive,
        # Exploring rounds start from zero codes: their atoms move by 20-40 %
        # a round, so the last supports are stale, and the working-set solver
        # spends its iterations shrinking them, where from zero it grows
        # sparser codes within the round's loose gap. n_latents=500, 40
        # rounds, one thread, seeds 0 / 1 / 2: 22.2 / 23.2 / 21.3 s for
        # MCC-OOD 0.981 / 0.976 / 0.979, against 31.9 / 31.9 / 30.0 s for
        # 0.978 / 0.986 / 0.984 warm-started; n_latents=1000, 120 rounds,
        # seed 0: 66.6 s for 0.494 against 81-91 s for 0.503.
        init=codes if warm_start else None,
        max_iter=max_iter,
        tol=tol,
        batch_size=batch_size,
        # Intermediate codes: a round needs no float64 finish, which at
        # alpha=0.01 (100 atoms, 400 float32 samples) finished 19,872 rows
        # over a fit and took it from 128 s to 166 s.
        float64_finish=False,
    )
    return coded.codes, float(coded.n_iter.double().mean())


# A plain exploring round's code costing this many times the zero code's
# 0.5 ||x||^2 is diverging (see learn_dictionary) and is set to zero. Not 1: a
# round's ordinary excess over zero codes then reset rows of converging fits
# too, which cost the n_latents=100 benchmark (MCC-OOD 0.946-0.985 against
# 0.960-0.986 over seeds 0-7 when such rows also restarted from zero) or, on
# make_compositional(50, 3, n_samples=4000), set off a resampling cycle that
# never met tol=1e-2 in 200 rounds (44 rounds otherwise). At 1.5, 2 or 4 the
# benchmark is unchanged over seeds 0-7 and 16 small problems (n_latents
# 10-100, n_active 1-10, 100-2,000 training samples, seeds 0-2) gain 0.06 in
# mean similarity, 0.759 -> 0.819 (scikit-learn's MiniBatchDictionaryLearning
# about 0.81 on the flagged ones).
_DIVERGED_CODES = 2.0


def _fits_float32(X: torch.Tensor) -> bool:
    """Whether float32 holds the squared row norms of ``X`` and their sums.

    The objective, ``Z^T X`` and the residual energies add ``n_samples`` such
    terms; a margin of 16 covers the factors of a round's arithmetic. At the
    other end, squares below float32's normal range lose their precision
    (rows of norm 2e-20 gave NaN atoms); all-zero data fit anywhere.
    """
    finfo = torch.finfo(torch.float32)
    norm = _max_row_norm(X)
    squared = norm * norm  # inf, not the OverflowError of norm ** 2
    if squared == 0.0:
        return True
    return finfo.tiny / finfo.eps < squared and squared * max(X.shape[0], 1) < (
        finfo.max / 16
    )


def learn_dictionary(
    X: torch.Tensor,
    n_components: int,
    *,
    alpha: float = 0.1,
    positive: bool = False,
    init: torch.Tensor | None = None,
    dict_max_iter: int = 50,
    tol: float = 1e-6,
    max_iter: int = 1000,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    verbose: int = 0,
) -> DictionaryLearningResult:
    """Learn unit-norm atoms for lasso codes: DL-FISTA.

    Each round

    1. codes ``X`` with FISTA (:func:`~skdict._fista.fista_encode`) to a
       relative duality gap equal to the dictionary's last relative change
       (between ``tol`` and 0.3, or 0.1 with fewer than 40 features),
       warm-started from the previous round's codes when refining (from
       zero codes while exploring, below), keeping a sample's previous code
       when it was better;
    2. replaces the atoms by the least-squares fit to those codes,
       ``(Z^T Z)^{-1} Z^T X``, normalised (the paper's update), falling back
       to a block-coordinate sweep in the rounds where normalising would
       increase the objective (:func:`block_coordinate_update`): rare with
       many samples per atom, but with more atoms than samples, where the
       least-squares atoms are a minimum-norm choice among many, it can be
       every round;
    3. re-initialises atoms that no sample uses with the residuals of the
       worst-reconstructed samples.

    Without ``init`` every round explores: the penalty decreases
    geometrically towards its target over the first 4 rounds (a
    continuation: round ``t``, from 0, codes at ``target * 10 ** (1 - (t +
    1) / 4)``, 5.6, 3.2, 1.8 and 1 times the target, which is ``alpha``, or
    ``1.5 * alpha`` in the rounds below that code above it), the next
    round codes on the least-squares atoms ``A`` moved on along their change,
    ``A + 0.95 (A - A_previous)`` (momentum), and every third round, of two
    atoms with |cosine| above 0.7 the less used is resampled as in step 3
    (except in the last round, so that no atom is returned untrained); an
    atom that comes back twice after such resamplings (within |cosine| 0.9
    of the one resampled, near the same partner) is kept with its partner
    from then on, since true atoms can be that close.
    Dictionaries with at most 3 atoms per feature are coded, while
    exploring, by 8 plain FISTA iterations from the warm start instead of to
    a duality gap. Larger ones resample above ``sqrt(2 ln K / d)`` clipped
    to [0.5, 0.7] (``K`` atoms of ``d`` features), return the last round's
    ``A`` rather than its momentum step, and code the first half of their
    rounds at ``1.5 * alpha`` (the continuation's target in those rounds) --
    unless, given at least 110 rounds and no more atoms than samples, they
    code the first 60 at ``1.5 * alpha`` and spend the rounds between them
    and the last 30 on the paper's inexact alternation: 10 plain FISTA
    iterations per round, warm-started from the previous round's codes (the
    first from zero codes and without momentum), codes not rescaled, no
    resampling, momentum 0.9, ``alpha`` fixed. Exploration computes in
    float32 whatever the dtype of ``X`` (the atoms and codes are returned in
    it), unless float32 cannot hold the squared row norms of ``X`` and
    their sums: float64 data then explore in float64, and float32 data are
    first scaled by a power of two (as are, whatever their norms, data with
    entries beyond ``2 ** 50`` or below ``2 ** -50``, in float32 and
    float64). A given ``init`` skips the exploration and
    refines in the dtype of ``X``: ``alpha`` is fixed and every round
    decreases ``F(Z, D)``. Either way, learning stops once ``alpha`` has
    reached its target and the relative change ``||D_new - D||_F / ||D||_F``
    is at most ``tol`` -- leaving out atoms unused in this round and the
    last, which the data does not call for (more atoms than samples need)
    and which step 3 re-draws every round -- or after ``dict_max_iter``
    rounds. While exploring, momentum and resampling keep the change at a
    few percent a round, so without ``init`` learning usually runs all
    ``dict_max_iter`` rounds.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Training data, float32 or float64 (the estimators compute narrower
        data in float32).
    n_components : int
        Number of atoms.
    alpha : float, default=0.1
        Weight of the L1 penalty.
    positive : bool, default=False
        Constrain the codes to be non-negative.
    init : torch.Tensor of shape (n_components, n_features), default=None
        Initial atoms (normalised here); None draws them from the data
        (:func:`initial_dictionary`). Given atoms skip the exploration: they
        are taken to be close already.
    dict_max_iter : int, default=50
        Maximum number of rounds.
    tol : float, default=1e-6
        Stop when the relative change of the dictionary is at most ``tol``;
        also the tightest duality gap the rounds' codes are solved to.
    max_iter : int, default=1000
        Maximum number of FISTA iterations per sample and round.
    batch_size : int, default=None
        Samples coded at once (see :func:`~skdict._fista.fista_encode`).
    generator : torch.Generator, default=None
        CPU generator for the initial and resampled atoms; None seeds one
        with 0.
    verbose : int, default=0
        Show a progress bar over rounds when positive.

    Returns
    -------
    DictionaryLearningResult
        The atoms, the last codes and one history record per round with keys
        ``alpha``, ``objective`` (mean of ``0.5 ||x - zD||^2 + alpha ||z||_1``
        over the samples, after the round's coding), ``exploring`` (whether
        the round explored, see above), ``inexact`` (whether it was one of
        the paper's inexact rounds), ``dictionary_change``,
        ``n_unused`` (atoms no sample used, re-initialised), ``n_resampled``
        (other coherent atoms replaced), ``coding_tol`` (the relative duality gap
        the round's codes were solved to; None where a fixed number of plain
        FISTA iterations coded them) and ``fista_iter`` (mean FISTA iterations
        per sample).

    Examples
    --------
    >>> import torch
    >>> from skdict._learning._alternation import learn_dictionary
    >>> g = torch.Generator().manual_seed(0)
    >>> D = torch.nn.functional.normalize(torch.randn(8, 6, generator=g), dim=1)
    >>> Z = torch.rand(200, 8, generator=g) * (torch.rand(200, 8, generator=g) < 0.3)
    >>> result = learn_dictionary(Z @ D, 8, alpha=0.01, positive=True, generator=g)
    >>> len(result.history) > 0, result.components.shape
    (True, torch.Size([8, 6]))
    """
    alpha, tol = float(alpha), float(tol)  # as in fista_encode

    refuse_mps(X.device)
    if X.dtype not in (torch.float32, torch.float64):
        # bfloat16 data beyond float32's squares failed inside torch (no
        # Cholesky kernel), and smaller ones were learned in bfloat16.
        raise TypeError(f"X must be float32 or float64; got {X.dtype}.")
    scale = _certifiable_scale(X)
    if (
        scale == 1.0
        and init is None
        and X.dtype == torch.float32
        and not _fits_float32(X)
    ):
        # Entries within bounds whose squares, summed over many rows, still
        # leave float32: brought to a largest entry near 1 as well.
        scale = _certifiable_scale(X, bound=0)
    # As in fista_encode: the lasso scales exactly (the atoms of (s X, s alpha)
    # are those of (X, alpha), their codes s times theirs), and data near the
    # ends of the dtype's range learned NaN or wrong atoms (entries of 1e-160:
    # NaN atoms; 1e-300: similarity 0.47, not 0.998).
    result = _learn_dictionary(
        X if scale == 1.0 else X * scale,
        n_components,
        alpha=alpha * scale,
        positive=positive,
        init=init,
        dict_max_iter=dict_max_iter,
        tol=tol,
        max_iter=max_iter,
        batch_size=batch_size,
        generator=generator,
        verbose=verbose,
        scale=scale,
    )
    if scale == 1.0:
        return result
    for record in result.history:
        record["alpha"] /= scale
        record["objective"] = _unscaled_objective(record["objective"], scale)
    return result._replace(codes=result.codes / scale)


def _unscaled_objective(objective: float, scale: float) -> float:
    """Return the lasso objective of data ``X`` from that of ``scale * X``."""
    # Two divisions: scale * scale can underflow to 0.
    return objective / scale / scale


def _learn_dictionary(
    X: torch.Tensor,
    n_components: int,
    *,
    alpha: float,
    positive: bool,
    init: torch.Tensor | None,
    dict_max_iter: int,
    tol: float,
    max_iter: int,
    batch_size: int | None,
    generator: torch.Generator | None,
    verbose: int,
    scale: float = 1.0,
) -> DictionaryLearningResult:
    """:func:`learn_dictionary` on data already at a certifiable ``scale``.

    ``scale`` is the factor ``X`` was multiplied by, used only to show the
    objective of the caller's data on the progress bar.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    dtype = X.dtype
    if init is None:
        # Learning from drawn atoms is a search whose rounds stop at relative
        # gaps of 0.01-0.3, far above float32 rounding: it runs in float32,
        # where products and factorisations cost half as much (one thread,
        # AVX-512 CPU, seeds 0-2: n_latents=500, 40 rounds, 3.1-3.6 s against
        # 3.6-4.1 s for MCC-OOD 0.980-0.987 against 0.986-0.989; n_latents=
        # 1000, 90 rounds, 11.8-13.0 s against 13.6-15.4 s, 0.50-0.53 both).
        # Unless float32 cannot hold the rounds' squared norms and their sums
        # (rows of norm 1e20 gave NaN atoms or a division by zero, rows of
        # norm 2e-20 NaN atoms): float64 data then explore in float64 (float32
        # data were brought near 1 by learn_dictionary).
        if _fits_float32(X):
            X = X.float()
        components = initial_dictionary(X, n_components, generator)
    else:
        components = _normalize_atoms(init.to(device=X.device, dtype=X.dtype))[0]
    schedule = _schedule(
        0 if init is not None else dict_max_iter, n_components, *X.shape
    )
    coherence_bound = _coherence_bound(n_components, X.shape[1])
    codes = torch.zeros(X.shape[0], n_components, dtype=X.dtype, device=X.device)
    # F of zero codes, per sample: 0.5 ||x||^2, which no code need exceed.
    zero_objective = 0.5 * (X * X).sum(dim=1)
    # Per-sample objective of ``codes`` on ``components`` at ``warm_alpha``:
    # the warm start a round's coding must improve on.
    warm_objective = None
    warm_alpha = None
    max_round_tol = (
        _MAX_ROUND_TOL
        if X.shape[1] >= _LOOSE_MIN_FEATURES
        else _MAX_ROUND_TOL_FEW_FEATURES
    )
    round_tol = max_round_tol
    # The last normalised least-squares atoms, from which exploration extrapolates.
    anchor = components
    # Atoms no sample used in the last round: re-initialised, see below.
    last_unused = torch.zeros(n_components, dtype=torch.bool, device=X.device)
    duplicates = _DuplicateMemory(components) if schedule.n_explore else None
    history: list[dict[str, float]] = []
    rounds = tqdm(range(dict_max_iter), disable=verbose <= 0, desc="DL-FISTA")
    for t in rounds:
        exploring, inexact = schedule.exploring(t), schedule.inexact(t)
        if inexact and t == _FIRST_ROUNDS:
            # The paper's loop starts from zero codes and no momentum.
            codes = torch.zeros_like(codes)
            anchor, warm_objective = components, None
        round_alpha = schedule.round_alpha(t, alpha)
        iterations = schedule.plain_iterations(t)
        new_codes, fista_iter = _code_round(
            X,
            components,
            codes,
            round_alpha,
            positive=positive,
            iterations=iterations,
            warm_start=not exploring,
            tol=round_tol,
            max_iter=max_iter,
            batch_size=batch_size,
        )
        operand = _operand(new_codes)
        objective = _sample_objective(X, new_codes, components, round_alpha, operand)[0]
        if exploring and schedule.few_atoms:
            # Codes rescaled by long least-squares atoms can cost more than
            # zero codes, which 8 iterations cannot undo: fed back, they grew
            # round after round with near-parallel atoms
            # (make_compositional(20, 2, n_samples=1000), seed 2: codes up to
            # 1,860 for data of norm 1, 40 duplicate atom pairs, similarity
            # 0.563, now 0.94). Rows past _DIVERGED_CODES times the cost of
            # zero codes become zero codes.
            worse = objective > _DIVERGED_CODES * zero_objective
            if bool(worse.any()):
                new_codes[worse] = 0.0
                objective[worse] = zero_objective[worse]
                operand = _operand(new_codes)
        if warm_objective is not None and warm_alpha == round_alpha:
            # FISTA stops within its tolerance of the optimum, which may be
            # above a warm start that was already closer.
            kept = warm_objective < objective
            if bool(kept.any()):
                new_codes[kept] = codes[kept]
                objective[kept] = warm_objective[kept]
                operand = _operand(new_codes)
        step = _lstsq_step(
            X,
            new_codes,
            components,
            round_alpha,
            None if exploring else objective,
            _INEXACT_EXTRAPOLATION if inexact else _EXTRAPOLATION,
            anchor,
            # The paper's codes keep their scale: a few iterations cannot undo
            # codes scaled up by atoms the shrunk codes made longer than one.
            rescale=not inexact,
            operand=operand,
        )
        new_components, codes, anchor = step.components, step.codes, step.anchor
        # The step rescales codes by positive norms: ``operand``'s support.
        if operand.is_sparse:
            unused = torch.bincount(operand.indices()[1], minlength=n_components) == 0
        else:
            unused = torch.count_nonzero(codes, dim=0) == 0
        n_unused = int(unused.sum())
        if n_unused:
            # Their codes are zero, so F does not change.
            new_components[unused] = _worst_residuals(
                step.residual, n_unused, generator
            )
            if anchor is not None:  # no momentum on a fresh atom
                anchor[unused] = new_components[unused]
            if duplicates is not None:
                duplicates.forget(unused)
        n_resampled = n_duplicates = 0
        # Not in the last round: a resampled atom would be returned untrained.
        if (
            exploring
            and not inexact
            and (t + 1) % _RESAMPLE_EVERY == 0
            and t + 1 < dict_max_iter
        ):
            coherent = duplicates.coherent(new_components, codes, coherence_bound)
            n_resampled = int(coherent.sum())
            if n_resampled:
                # From the largest residuals, as the unused atoms were: those
                # just re-initialised (zero codes, so the less used of any
                # close pair) can take the same directions again, copies that
                # the next round pulls apart. Giving them the residuals after
                # the unused atoms' (or leaving them out of the pairs) lowered
                # the small problems' mean similarity over seeds 0-5 from
                # 0.839 to 0.836 (0.831), and by 0.03-0.05 with 100 atoms on
                # 200 samples (benchmarks/RESULTS.md, "Atoms just
                # re-initialised").
                new_components[coherent] = _worst_residuals(
                    step.residual, n_resampled, generator
                )
                # Recorded apart from the unused atoms, counted already.
                n_duplicates = int((coherent & ~unused).sum())
                anchor[coherent] = new_components[coherent]
                codes[:, coherent] = 0.0
        warm_objective = (
            _sample_objective(X, codes, new_components, round_alpha)[0]
            if n_resampled
            else step.objective
        )
        warm_alpha = round_alpha
        difference = new_components - components
        change = float(difference.norm() / components.norm())
        # An atom left unused again after its re-initialisation is one the
        # data does not call for (more atoms than samples need): it is
        # re-drawn every round and would hold the change above ``tol`` for
        # ever. The stopping rule leaves it out; a newly unused atom counts.
        settled = unused & last_unused
        stop_change = (
            float(difference[~settled].norm() / components.norm())
            if bool(settled.any())
            else change
        )
        last_unused = unused
        components = new_components
        history.append(
            {
                "alpha": round_alpha,
                "exploring": exploring,
                "inexact": inexact,
                "objective": float(objective.mean()),
                "dictionary_change": change,
                "n_unused": n_unused,
                "n_resampled": n_duplicates,
                # Plain FISTA runs a fixed number of iterations, to no gap.
                "coding_tol": None if iterations is not None else round_tol,
                "fista_iter": fista_iter,
            }
        )
        if verbose > 0:
            rounds.set_postfix(
                objective=_unscaled_objective(history[-1]["objective"], scale),
                change=change,
            )
        round_tol = min(max_round_tol, max(tol, change))
        # Once alpha has reached its target (after the continuation).
        if round_alpha == alpha and stop_change <= tol and not inexact:
            break
    if not schedule.few_atoms and history and history[-1]["exploring"]:
        # The momentum step guesses atoms for a round that does not come:
        # return the least-squares atoms of the last codes instead.
        # n_latents=1000, 5 / 90 / 110 rounds, seeds 0-2: MCC-OOD 0.254 /
        # 0.253 / 0.260, 0.509 / 0.534 / 0.518 and 0.535 / 0.547 / 0.561,
        # against 0.248 / 0.246 / 0.250, 0.505 / 0.532 / 0.511 and 0.529 /
        # 0.541 / 0.555 with the momentum step; n_latents=200 and 500
        # within 0.002 either way. Plain rounds (8 FISTA iterations from the
        # warm start) lag behind their atoms, which the momentum step
        # continues: at n_latents=50 (33 features), 30 rounds, seed 0, it
        # returned atoms coding at 0.957 against 0.950 for the least-squares
        # ones.
        components = anchor
    if components.dtype != dtype:
        # Unit norm to the precision of the caller's dtype, not float32's.
        components = _normalize_atoms(components.to(dtype))[0]
    return DictionaryLearningResult(components, codes.to(dtype), history)
