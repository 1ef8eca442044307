"""Atoms drawn from the data, and the memory of atoms resampled as duplicates."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .._fista._driver import _certifiable_scale
from ._updates import _normalize_atoms

# How _DuplicateMemory recognises an atom the data brought back after its
# resampling as a duplicate, and how many records it keeps (its docstring
# gives the measurements).
_SAME_ATOM = 0.9
_RETURNS_TO_KEEP = 2
_MAX_RECORDS_PER_ATOM = 4


def initial_dictionary(
    X: torch.Tensor,
    n_components: int,
    generator: torch.Generator,
    *,
    return_n_rows: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, int]:
    """Unit-norm atoms drawn from the data.

    Distinct random samples of ``X``, normalised; Gaussian atoms replace
    zero samples and fill in when there are fewer samples than atoms. Sample
    atoms start inside the cone the data spans, which Gaussian atoms do not
    (half of their correlations with non-negative data are negative).

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Training data.
    n_components : int
        Number of atoms.
    generator : torch.Generator
        A CPU generator; the atoms are moved to ``X``'s device.
    return_n_rows : bool, default=False
        Also return how many atoms are rows of ``X`` (distinct and non-zero);
        the others are Gaussian.

    Returns
    -------
    atoms : torch.Tensor of shape (n_components, n_features)
    n_rows : int
        Returned when ``return_n_rows`` is True.
    """
    n_samples, n_features = X.shape
    take = min(n_samples, n_components)
    # Drawn on the CPU, whatever torch's default device: the generator is a
    # CPU one, and every device starts from the same atoms.
    order = torch.randperm(n_samples, generator=generator, device="cpu").to(X.device)
    rows = _distinct_rows(X, order, take)
    gaussian = torch.randn(
        n_components, n_features, generator=generator, dtype=X.dtype, device="cpu"
    ).to(X.device)

    # Drawn at a power-of-two scale near 1, which normalising undoes exactly:
    # the norms of rows of 1e160 overflowed, and the atoms came back zero.
    taken = X[rows]
    take = len(rows)
    scale = _certifiable_scale(taken)
    # A copy, so that the Gaussian rows survive to replace zero samples.
    atoms = gaussian.clone()
    atoms[:take] = taken if scale == 1.0 else taken * scale
    zero = atoms.norm(dim=1) == 0
    atoms[zero] = gaussian[zero]
    atoms = _normalize_atoms(atoms)[0]
    if return_n_rows:
        return atoms, take - int(zero[:take].sum())
    return atoms


# Rounds of replacing repeated rows among the drawn ones by further rows
# (see _distinct_rows); each round halves them or better unless most rows
# repeat one another, where the rest are left to Gaussian atoms.
_DISTINCT_ROUNDS = 8


def _distinct_rows(X: torch.Tensor, order: torch.Tensor, take: int) -> torch.Tensor:
    """Return indices of the first ``take`` rows of ``X`` in ``order`` that differ.

    Real activations repeat rows (the first token of every sequence, padding):
    500 copies of one row among 2,000 started a quarter of 300 atoms as one
    direction, and the learned dictionary's similarity to the true one fell
    from 0.999 to 0.85-0.90 (``benchmarks/RESULTS.md``, "Repeated rows").
    A repeat is replaced by the next row in ``order``; data without repeats
    (in the compute precision; zero rows repeat each other) keeps the rows
    ``order[:take]``, bit for bit. Fewer than ``take`` rows come back when
    too few distinct ones were found within ``_DISTINCT_ROUNDS`` rounds of
    replacements (10,000 rows, 80 % of them one padding row: 857 of 1,000
    rows where 2,001 differ); the callers fill in random atoms.
    """
    rows, spare = order[:take], order[take:]
    for _ in range(_DISTINCT_ROUNDS):
        repeat = _repeats(X[rows])
        n_repeat = int(repeat.sum())
        if n_repeat == 0 or len(spare) == 0:
            break
        fresh, spare = spare[:n_repeat], spare[n_repeat:]
        rows = torch.cat([rows[~repeat], fresh])
    else:  # the last round's fresh rows are not checked yet
        repeat = _repeats(X[rows])
    return rows[~repeat]


def _repeats(T: torch.Tensor) -> torch.Tensor:
    """Return a mask of the rows of ``T`` equal to an earlier row."""
    _, inverse = torch.unique(T, dim=0, return_inverse=True)
    # First occurrence of each value: the smallest position with its id.
    position = torch.arange(len(T), device=T.device)
    first = torch.full_like(inverse, len(T)).scatter_reduce_(
        0, inverse, position, reduce="amin"
    )
    return first[inverse] != position


def _worst_residuals(residual: torch.Tensor, count: int, generator) -> torch.Tensor:
    """``count`` unit atoms along the largest residuals (random where none is left).

    Repeated samples have repeated residuals; each direction is taken once
    (see :func:`_distinct_rows`).
    """
    sq = (residual * residual).sum(dim=1)
    take = min(count, int((sq > 0).sum()))
    atoms = torch.randn(
        count,
        residual.shape[1],
        generator=generator,
        dtype=residual.dtype,
        device="cpu",
    ).to(residual.device)
    if take:
        order = torch.topk(sq, take).indices
        # Candidates for repeats, largest first, after the first ``take`` as
        # they are (a wider topk may order tied norms differently).
        wider = min(int((sq > 0).sum()), _DISTINCT_ROUNDS * take)
        if wider > take:
            more = torch.topk(sq, wider).indices
            order = torch.cat([order, more[~torch.isin(more, order)]])
        rows = _distinct_rows(residual, order, take)
        atoms[: len(rows)] = residual[rows]
    return _normalize_atoms(atoms)[0]


def _coherent_atoms(
    components: torch.Tensor,
    codes: torch.Tensor,
    bound: float,
    kept: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of the less used atom of every pair with |cosine| above ``bound``.

    Pairs marked in the boolean ``(n_components, n_components)`` matrix
    ``kept`` are left out. Also returns every atom's closest other atom
    outside them (meaningless for an atom kept with every other, which is
    never marked).
    """
    cosine = (components @ components.T).abs()
    cosine.fill_diagonal_(0.0)
    if kept is not None:
        cosine.masked_fill_(kept, 0.0)
    closest, partner = cosine.max(dim=1)
    energy = (codes * codes).sum(dim=0)
    # Ties go to the higher index so that exactly one atom of a pair moves.
    index = torch.arange(energy.numel(), device=energy.device)
    less_used = (energy < energy[partner]) | (
        (energy == energy[partner]) & (index > partner)
    )
    return (closest > bound) & less_used, partner


class DuplicateRecords(NamedTuple):
    """What :class:`_DuplicateMemory` knows, as tensors (pickled to the CPU).

    Attributes
    ----------
    replaced, partners : torch.Tensor of shape (n_records, n_features)
        Atoms resampled as duplicates, and the atom each was close to.
    count : torch.Tensor of shape (n_records,)
        How often each was resampled.
    kept : torch.Tensor of shape (n_components, n_components)
        Boolean: the pairs of atoms no longer taken for duplicates.
    """

    replaced: torch.Tensor
    partners: torch.Tensor
    count: torch.Tensor
    kept: torch.Tensor


class _DuplicateMemory:
    """Atoms the data brought back after they were resampled as duplicates.

    The exploring rounds resample the less used of two atoms closer than the
    coherence bound, taking them for duplicates. True atoms can be that
    close too: ``make_compositional(n_latents=50, n_active=3)`` with seeds
    0-11 has its closest two true atoms at 0.66-0.79 in 17 features, at 10
    seeds above the bound of 0.7 (``_alternation._MAX_COHERENCE``). The
    resampled atom came back within the three rounds before the next check
    and was resampled again, for ever:
    6 of the 12 fits ran all 200 rounds with the dictionary's change above
    ``tol=1e-2``, and both atoms of the pair were found (within 0.95) at only
    7 seeds. An atom resampled away ``_RETURNS_TO_KEEP`` times -- the same
    direction, within ``_SAME_ATOM`` (|cosine|), near the same partner, in
    whatever slot -- is kept with that partner: the data calls for both.
    The pair stays kept while its two atoms still match the record and stay
    further apart than ``_SAME_ATOM``; the records resampled only once are
    bounded (``_trim``). Now 11
    of the 12 fits find both atoms (at 0.99 or more; the twelfth as before)
    and stop after 21-84 rounds (``benchmarks/bench_small_problems.py
    --close-pairs``, with AVX-512 kernels and without SIMD kernels alike).
    Counting by slot instead lost the atom at seed 0 without SIMD kernels,
    where three slots took turns at it. Keeping an atom after one
    resampling instead of two did better on the small-problem sweep of
    ``benchmarks/bench_small_problems.py`` (mean similarity over 16 cells
    0.846 against 0.837, and 0.815 without the memory) and with 40 atoms in
    10 features (0.961 against 0.927 and 0.880, seeds 0-11), but kept atoms
    mixing two true ones here: both atoms of the close pair at 10 seeds
    (seed 9: 0.914), and similarity 0.984 against 0.999 at seed 3. The
    benchmark's n_latents=1000 moved within the spread of seeds either way
    (MCC-OOD at 90 rounds, seeds 0-2: 0.528 / 0.524 / 0.554 after one,
    0.513 / 0.507 / 0.568 after two, 0.513 / 0.508 / 0.563 without).
    """

    def __init__(
        self, components: torch.Tensor, records: DuplicateRecords | None = None
    ) -> None:
        n_components, n_features = components.shape
        device, dtype = components.device, components.dtype
        if records is not None:
            # Copies: a stream's step leaves the statistics it was given (and
            # so a copy of the estimator holding them) as they were.
            self.replaced = records.replaced.to(device, dtype, copy=True)
            self.partners = records.partners.to(device, dtype, copy=True)
            self.count = records.count.to(device, copy=True)
            self.kept = records.kept.to(device, copy=True)
            return
        # Directions resampled away, each with the atom it was close to and
        # how often it was resampled (by direction: it may come back in
        # another slot).
        self.replaced = components.new_zeros(0, n_features)
        self.partners = components.new_zeros(0, n_features)
        self.count = torch.zeros(0, dtype=torch.long, device=device)
        self.kept = torch.zeros(
            n_components, n_components, dtype=torch.bool, device=device
        )

    def records(self) -> DuplicateRecords:
        """Return the memory as tensors, for a stream's statistics."""
        return DuplicateRecords(self.replaced, self.partners, self.count, self.kept)

    def coherent(
        self, components: torch.Tensor, codes: torch.Tensor, bound: float
    ) -> torch.Tensor:
        """Mask of the atoms to resample; remembers what they were."""
        # A kept pair stays kept while its atoms still are the recorded pair
        # (one may since have been resampled, re-initialised or moved away)
        # and apart: merged beyond _SAME_ATOM, they are duplicates after all.
        first, second = torch.nonzero(self.kept, as_tuple=True)
        if first.numel():
            still = self._recorded(components[first], components[second])
            self.kept.zero_()
            self.kept[first[still], second[still]] = True
            self.kept[second[still], first[still]] = True
        coherent, partner = _coherent_atoms(components, codes, bound, self.kept)
        slots = torch.nonzero(coherent).flatten()
        if not slots.numel():
            return coherent
        atoms, partners = components[slots], components[partner[slots]]
        match = self._matches(atoms, partners)
        keep = self._recorded(atoms, partners, match)
        self.kept[slots[keep], partner[slots[keep]]] = True
        self.kept[partner[slots[keep]], slots[keep]] = True
        coherent[slots[keep]] = False
        # One more resampling for each record the resampled atoms match;
        # new records for the others.
        self.count += match[~keep].any(dim=0)
        new = ~match.any(dim=1)
        self.replaced = torch.cat([self.replaced, atoms[new]])
        self.partners = torch.cat([self.partners, partners[new]])
        self.count = torch.cat([self.count, self.count.new_ones(int(new.sum()))])
        self._trim(len(components))
        return coherent

    def _matches(self, atoms: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        """Which records each (atom, partner) pair is, up to sign."""
        return ((atoms @ self.replaced.T).abs() > _SAME_ATOM) & (
            (partners @ self.partners.T).abs() > _SAME_ATOM
        )

    def _recorded(
        self,
        atoms: torch.Tensor,
        partners: torch.Tensor,
        match: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Whether each pair was resampled often enough to keep, and is apart."""
        if match is None:
            # Either atom may be the one that was resampled.
            match = self._matches(atoms, partners) | self._matches(partners, atoms)
        often = (match & (self.count >= _RETURNS_TO_KEEP)).any(dim=1)
        apart = (atoms * partners).sum(dim=1).abs() <= _SAME_ATOM
        return often & apart

    def _trim(self, n_components: int) -> None:
        """Drop the oldest records resampled only once, past a bound.

        A stream with more atoms than the data holds resamples some every
        batch, nearly all of them for good: with 2,000 atoms on
        ``make_compositional(n_latents=500)`` (79 features, batches of 128,
        float32) the records grew by about 10 a batch and 98 % never matched
        again. A check with its copy took 28 ms with no records, 55 ms with
        100,000 (63 MB) and 160 ms with 200,000, on steps of about 0.2 s.
        """
        excess = len(self.count) - _MAX_RECORDS_PER_ATOM * n_components
        if excess <= 0:
            return
        once = torch.nonzero(self.count < _RETURNS_TO_KEEP).flatten()[:excess]
        kept = torch.ones_like(self.count, dtype=torch.bool)
        kept[once] = False
        self.replaced = self.replaced[kept]
        self.partners = self.partners[kept]
        self.count = self.count[kept]

    def forget(self, replaced: torch.Tensor) -> None:
        """Drop the kept pairs of atoms re-initialised as unused."""
        self.kept[replaced] = False
        self.kept[:, replaced] = False
