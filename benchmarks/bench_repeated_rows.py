"""Dictionary learning on data with repeated rows.

Real activations repeat rows: the first token of every sequence, padding,
attention sinks. Here 300 unit atoms in 128 features generate 2,000 rows
(non-negative codes, about 9 active atoms per row); ``--copies`` of them are
then replaced by one row, and ``FISTACoder(n_components=300, positive=True)``
learns a dictionary from the clean rows, from the rows with copies, and from
the rows with copies removed (``np.unique``). Prints, per seed of the
learner, the fit time, the number of learned atom pairs within |cosine| 0.99
of each other, and the dictionary similarity to the true atoms.

Usage::

    python benchmarks/bench_repeated_rows.py [--copies 500] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from skdict import FISTACoder
from skdict.metrics import dictionary_similarity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    D = rng.standard_normal((300, 128))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    codes = np.abs(rng.standard_normal((2000, 300))) * (rng.random((2000, 300)) < 0.03)
    clean = (codes @ D).astype(np.float32)
    repeated = clean.copy()
    repeated[100 : 100 + args.copies] = repeated[100 + args.copies]
    for name, X in [
        ("clean", clean),
        (f"{args.copies} copies", repeated),
        ("copies removed", np.unique(repeated, axis=0)),
    ]:
        for seed in args.seeds:
            start = time.perf_counter()
            coder = FISTACoder(n_components=300, positive=True, random_state=seed)
            coder.fit(X)
            seconds = time.perf_counter() - start
            A = coder.components_
            close = (np.abs(A @ A.T) - np.eye(len(A)) > 0.99).sum() // 2
            print(
                f"{name:>16}  seed {seed}  {seconds:5.1f} s  "
                f"pairs above 0.99: {close:3d}  "
                f"similarity {dictionary_similarity(D, coder):.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
