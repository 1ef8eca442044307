"""Coding a stream in chunks: when the full Gram matrix of the atoms pays.

``FISTACoder.transform`` forms the Gram matrix ``D D^T`` once per call when
the call codes at least ``_MIN_GRAM_ROWS_PER_ATOM`` rows per atom; with fewer
rows, each working set gathers its atoms' products instead. A stream coded in
chunks (dask's ``map_blocks``, one model batch at a time) pays for the matrix
in every chunk. This codes 4,096 rows of 512 features (unit atoms, 20 active
per row, float32, ``alpha=0.1``, non-negative) in chunks of each size, with
the rule at one row in eight (the earlier threshold) and at the current one,
alternated in one process on the same data, and prints the median process CPU
time of each, their ratio, and the largest difference between the codes.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_chunks.py [--atoms 4096 2048]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from skdict import FISTACoder
from skdict._fista import _driver

_EARLIER = 1 / 8


def _data(n_atoms: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    D = rng.standard_normal((n_atoms, 512))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Z = np.zeros((4096, n_atoms))
    for row in Z:
        row[rng.choice(n_atoms, 20, replace=False)] = rng.uniform(size=20)
    return D.astype(np.float32), (Z @ D).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, nargs="+", default=[4096, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    current = _driver._MIN_GRAM_ROWS_PER_ATOM
    print(f"rule: Gram from {_EARLIER:g} (before) or {current:g} (now) rows per atom")
    for n_atoms in args.atoms:
        D, X = _data(n_atoms, np.random.default_rng(0))
        coder = FISTACoder(dictionary=D, alpha=0.1, positive=True).fit(X[:2])
        coder.transform(X[:8])  # untimed: lazy initialisation
        for chunk in (n_atoms // 16, n_atoms // 8, n_atoms // 4, n_atoms // 2, 4096):
            seconds: dict[float, list[float]] = {_EARLIER: [], current: []}
            codes = {}
            for repeat in range(args.repeats):
                # Reversed every other repeat: a drift of the machine's speed
                # lands on both rules.
                for rule in list(seconds)[:: 1 if repeat % 2 == 0 else -1]:
                    _driver._MIN_GRAM_ROWS_PER_ATOM = rule
                    start = time.process_time()
                    starts = range(0, len(X), chunk)
                    codes[rule] = np.concatenate(
                        [coder.transform(X[s : s + chunk]) for s in starts]
                    )
                    seconds[rule].append(time.process_time() - start)
            _driver._MIN_GRAM_ROWS_PER_ATOM = current
            before, now = (float(np.median(seconds[rule])) for rule in seconds)
            difference = float(np.abs(codes[_EARLIER] - codes[current]).max())
            # Both rules take the same path here: the ratio is the noise.
            too_large = n_atoms**2 > _driver._MAX_GRAM_ELEMENTS
            same = too_large or (chunk >= n_atoms * _EARLIER) == (
                chunk >= n_atoms * current
            )
            print(
                f"{n_atoms} atoms, chunks of {chunk:4d}: before {before:.2f} s, "
                f"now {now:.2f} s, now / before {now / before:.2f}x, "
                f"codes differ by {difference:.1e}"
                f"{' (the same rule: noise)' if same else ''}",
                flush=True,
            )


if __name__ == "__main__":
    main()
