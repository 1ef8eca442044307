"""Streaming the oracle's least-squares atoms with ``partial_fit``.

2,000 latents over 768 features, 12,000 rows (sparse codes, 0.5 % active,
values in [0.1, 1]; float32 data with noise 0.01), one thread:
``OracleDictionary().fit`` on all rows against ``partial_fit`` over batches
of 1,000 rows. Prints the times and how far the streamed atoms are from the
fit's. Early batches hold only some latents, and say so.

Usage::

    python benchmarks/bench_oracle_stream.py
"""

import argparse
import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch

from skdict import OracleDictionary


def main() -> None:
    # No options (the sizes are the recorded ones), but --help answers and a
    # mistyped option is refused rather than the whole benchmark run.
    argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    K, d, n, batch = 2000, 768, 12000, 1000
    D = rng.standard_normal((K, d)).astype(np.float32)
    Z = sp.random(n, K, density=0.005, random_state=0, format="csr", dtype=np.float64)
    Z.data[:] = rng.uniform(0.1, 1, Z.nnz)
    noise = 0.01 * rng.standard_normal((n, d)).astype(np.float32)
    X = (Z @ D).astype(np.float32) + noise
    start = time.perf_counter()
    whole = OracleDictionary().fit(X, Z)
    fit_time = time.perf_counter() - start
    stream, times = OracleDictionary(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # latents not seen yet
        for first in range(0, n, batch):
            start = time.perf_counter()
            stream.partial_fit(X[first : first + batch], Z[first : first + batch])
            times.append(time.perf_counter() - start)
    gap = np.abs(stream.components_ - whole.components_).max()
    gap /= np.abs(whole.components_).max()
    print(
        f"fit on {n} rows: {fit_time:.2f} s; partial_fit per {batch}-row call: "
        f"median {np.median(times):.2f} s, total {sum(times):.2f} s"
    )
    print(f"max |stream - fit| / max |fit|: {gap:.1e}")


if __name__ == "__main__":
    main()
