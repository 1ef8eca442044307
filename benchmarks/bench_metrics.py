"""MCC against a NumPy reference: time and agreement, dense and sparse codes.

For each shape ``(n_samples, n_latents, n_components)`` the true codes are
sparse uniform values (20 % active) and the codes standard normal, float32;
``skdict.metrics.mcc_score`` is timed against a plain NumPy/SciPy reference
in the same process on the same data: float64 copies centred whole, one
product, ``scipy.optimize.linear_sum_assignment`` on the absolute
correlations. The last rows pass SciPy CSR matrices for both sides
(``sparse``), and true codes with an always-active latent that barely
varies (``near-constant``: 100 +- 1e-4, float64), where a product of
uncentred sparse columns cancels most digits.

Printed per row: skdict's and the reference's best time of ``--repeats``
pairs, run alternately (one thread), the median of the pairs' ratios
skdict / reference, and ``|MCC - reference|``. Alternation keeps a drift of
the machine's speed from landing on one side: timed as two blocks, the
first row's ratio read 1.52x and 3.82x in back-to-back runs on a VM whose
large allocations change speed by phases.

Usage::

    python benchmarks/bench_metrics.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment

from skdict.metrics import mcc_score

SHAPES = [(100_000, 10, 1_024), (100_000, 100, 1_024), (20_000, 16, 4_096)]


def reference_mcc(Z: np.ndarray, codes: np.ndarray) -> float:
    """Mean matched |Pearson| over the varying latents, in float64."""
    Z, codes = np.asarray(Z, dtype=np.float64), np.asarray(codes, dtype=np.float64)
    Z, codes = Z - Z.mean(axis=0), codes - codes.mean(axis=0)
    norms = np.outer(np.linalg.norm(Z, axis=0), np.linalg.norm(codes, axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(norms > 0, np.abs(Z.T @ codes) / norms, 0.0)
    varying = np.linalg.norm(Z, axis=0) > 0
    rows, cols = linear_sum_assignment(corr[varying], maximize=True)
    return float(corr[varying][rows, cols].sum() / varying.sum())


def paired_times(ours, theirs, repeats: int) -> tuple[float, float, float, tuple]:
    """Best times of ``ours`` and ``theirs`` run alternately, the median ratio
    of the pairs, and the last values of both."""
    times: dict = {ours: [], theirs: []}
    values = {}
    for _ in range(repeats):
        for function in (ours, theirs):
            start = time.perf_counter()
            values[function] = function()
            times[function].append(time.perf_counter() - start)
    ratio = statistics.median(
        a / b for a, b in zip(times[ours], times[theirs], strict=True)
    )
    return min(times[ours]), min(times[theirs]), ratio, (values[ours], values[theirs])


def cases(rng: np.random.Generator):
    for n, p, m in SHAPES:
        Z = (rng.uniform(size=(n, p)) * (rng.uniform(size=(n, p)) < 0.2)).astype(
            np.float32
        )
        codes = rng.standard_normal((n, m)).astype(np.float32)
        codes[:, :p] += 3 * Z
        yield f"dense {n:,} x {p} / {m:,}", Z, codes
    n, p, m = 20_000, 500, 1_000
    Z = sp.random(n, p, density=0.02, random_state=0, format="csr")
    noise = sp.random(n, m, density=0.03, random_state=1, format="csr")
    codes = noise + sp.hstack([2 * Z, sp.csr_matrix((n, m - p))], format="csr")
    yield f"sparse {n:,} x {p} / {m:,}", Z, codes
    Z = rng.uniform(size=(5_000, 20)) * (rng.uniform(size=(5_000, 20)) < 0.1)
    Z[:, 0] = 100.0 + 1e-4 * rng.uniform(size=5_000)
    codes = 2.0 * Z[:, ::-1]
    codes[:, -1] += 5.0
    yield (
        "near-constant, sparse 5,000 x 20 / 20",
        sp.csr_matrix(Z),
        sp.csr_matrix(codes),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(
        f"torch {torch.__version__}, one thread, best of {args.repeats} "
        "alternated pairs"
    )
    print(
        "| codes | skdict (s) | NumPy reference (s) | skdict / reference "
        "(median of pairs) | abs. difference |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, Z, codes in cases(rng):
        dense = [A.toarray() if sp.issparse(A) else A for A in (Z, codes)]
        ours, theirs, ratio, (value, expected) = paired_times(
            partial(mcc_score, Z, codes),
            partial(reference_mcc, *dense),
            args.repeats,
        )
        print(
            f"| {label} | {ours:.3f} | {theirs:.3f} | {ratio:.2f}x | "
            f"{abs(value - expected):.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
