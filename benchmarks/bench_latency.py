"""Latency of coding a few rows: FISTACoder against scikit-learn's lasso_cd.

``FISTACoder(dictionary=D, positive=True).transform`` of the first ``rows``
samples of the validation half of ``make_compositional(n_latents, 10,
n_samples=4000, random_state=0)`` (the oracle atoms, float64, ``alpha=0.1``),
against ``sparse_encode(X, D, algorithm="lasso_cd", alpha=0.1,
positive=True)`` on the same rows -- as ``SparseCoder.transform`` calls it,
computing ``D @ D.T`` in every call, and given that Gram matrix once
(``gram=``), which a caller coding many small batches on one dictionary can
do -- in one process, on ``--threads`` torch threads (one by default). Each
call is timed ``--repeats`` times after a first untimed call, alternately;
the medians and the ratios (ours / scikit-learn's, without and with the Gram
matrix given) are printed, with the relative difference of the objectives
(ours against lasso_cd's) summed over the rows. ``OracleDictionary(D)``'s
``transform`` on the same rows is timed too (it checks its atoms at every
call): its ratio to FISTACoder's is the last column. ``--n-features`` sets
the data's width (``make_compositional``'s default otherwise).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_latency.py [--n-latents 100 1000]
        [--rows 1 8 64 1000] [--repeats 30] [--threads 1] [--n-features N]
"""

from __future__ import annotations

import argparse
import time
import warnings


def _objective(X, codes, D, alpha):
    import numpy as np

    residual = X - codes @ D
    return 0.5 * np.sum(residual**2) + alpha * np.abs(codes).sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-latents", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 64, 1000])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-features", type=int, default=None)
    args = parser.parse_args()
    if max(args.rows) > 2000:  # the validation rows of the data below
        parser.error(f"--rows is at most 2000 (the data's rows); got {max(args.rows)}")

    import numpy as np
    import torch
    from sklearn.decomposition import sparse_encode

    from skdict import FISTACoder, OracleDictionary
    from skdict.datasets import make_compositional

    torch.set_num_threads(args.threads)
    alpha = 0.1
    print(
        f"{'atoms':>6} {'rows':>5} {'skdict ms':>10} {'lasso_cd ms':>12} "
        f"{'ratio':>6} {'with gram= ms':>14} {'ratio':>6} {'objective diff':>15} "
        f"{'oracle ms':>10} {'oracle / skdict':>16}"
    )
    for n_latents in args.n_latents:
        data = make_compositional(
            n_latents,
            10,
            n_samples=4000,
            n_features=args.n_features,
            random_state=0,
        )
        D = data.dictionary
        coder = FISTACoder(D, alpha=alpha, positive=True).fit(data.X_train)
        gram = D @ D.T
        oracle = OracleDictionary(D, alpha=alpha).fit(data.X_train)
        for rows in args.rows:
            X = data.X_val[:rows]

            def ours(X=X, coder=coder):
                return coder.transform(X)

            def theirs(X=X, D=D, gram=None):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # lasso_cd's convergence
                    return sparse_encode(
                        X,
                        D,
                        gram=gram,
                        algorithm="lasso_cd",
                        alpha=alpha,
                        positive=True,
                    )

            def theirs_with_gram(X=X, D=D, gram=gram):
                return theirs(X, D, gram)

            def oracles(X=X, oracle=oracle):
                return oracle.transform(X)

            times = {ours: [], theirs: [], theirs_with_gram: [], oracles: []}
            for fn in times:
                fn()
            for _ in range(args.repeats):
                for fn, spent in times.items():
                    start = time.perf_counter()
                    fn()
                    spent.append(time.perf_counter() - start)
            ms = {fn: 1e3 * float(np.median(spent)) for fn, spent in times.items()}
            a, b = (_objective(X, fn(), D, alpha) for fn in (ours, theirs))
            given = ms[theirs_with_gram]
            print(
                f"{n_latents:>6} {rows:>5} {ms[ours]:>10.3f} {ms[theirs]:>12.3f} "
                f"{ms[ours] / ms[theirs]:>6.2f} {given:>14.3f} "
                f"{ms[ours] / given:>6.2f} {(a - b) / b:>15.1e} "
                f"{ms[oracles]:>10.3f} {ms[oracles] / ms[ours]:>16.2f}"
            )


if __name__ == "__main__":
    main()
