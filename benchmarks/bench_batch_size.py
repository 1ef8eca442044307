"""Automatic batches of wide rows: ``batch_size=None`` against the earlier rule.

``FISTACoder.transform`` with ``batch_size=None`` codes batches of at most
``2**24 / max(n_components, n_features)`` rows (the earlier rule, kept as a
bound) and, for wide rows, shares of ``2**20 / n_features`` rows for each
torch thread a batch is split between. For each shape ``(atoms, features,
rows)`` this codes the same float32 data (unit Gaussian atoms, about 8 active
per row, 1 % noise, ``alpha=0.1``, non-negative) with ``batch_size=None`` and
with ``batch_size`` set to the earlier rule's value, alternated in one process,
and prints the batch sizes, the best of ``--repeats`` wall times of each,
their ratio, and the largest difference between the codes.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_batch_size.py [--threads 1]
        [--repeats 3] [--shapes 8x768x40000 ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from skdict import FISTACoder
from skdict._fista import _driver, _problem

SHAPES = [
    (8, 768, 40000),
    (8, 4096, 10000),
    (128, 1024, 20000),
    (512, 1024, 10000),
    (1024, 768, 10000),
    (4096, 1024, 6000),
    (1000, 93, 20000),
    (100, 93, 40000),
]


def _data(n_atoms: int, n_features: int, n_rows: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    D = rng.standard_normal((n_atoms, n_features), dtype=np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    active = min(8, max(1, n_atoms // 2)) / n_atoms
    Z = (rng.random((n_rows, n_atoms), dtype=np.float32) < active) * rng.uniform(
        0.5, 1.5, (n_rows, n_atoms)
    ).astype(np.float32)
    noise = 0.01 * rng.standard_normal((n_rows, n_features), dtype=np.float32)
    return D, Z @ D + noise


def _shape(text: str) -> tuple[int, int, int]:
    atoms, features, rows = (int(part) for part in text.split("x"))
    return atoms, features, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--shapes",
        nargs="+",
        type=_shape,
        default=SHAPES,
        help="ATOMSxFEATURESxROWS",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print(
        "| atoms | features | rows | batch now | earlier | now (s) | earlier (s) "
        "| now / earlier | codes max diff |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n_atoms, n_features, n_rows in args.shapes:
        D, X = _data(n_atoms, n_features, n_rows)
        earlier = _driver.rows_per_block(
            max(n_atoms, n_features), _problem._AUTO_BATCH_ELEMENTS
        )
        coders = {
            "now": FISTACoder(D, alpha=0.1, positive=True).fit(X[:10]),
            "earlier": FISTACoder(D, alpha=0.1, positive=True, batch_size=earlier).fit(
                X[:10]
            ),
        }
        for coder in coders.values():  # warm up
            coder.transform(X[:300])
        times: dict[str, list[float]] = {name: [] for name in coders}
        codes = {}
        for repeat in range(args.repeats):
            order = list(coders) if repeat % 2 == 0 else list(coders)[::-1]
            for name in order:
                start = time.perf_counter()
                codes[name] = coders[name].transform(X)
                times[name].append(time.perf_counter() - start)
        now, before = min(times["now"]), min(times["earlier"])
        diff = float(np.abs(codes["now"] - codes["earlier"]).max())
        batch = _driver._auto_batch_size(n_atoms, n_features)
        print(
            f"| {n_atoms} | {n_features} | {n_rows} | {min(batch, n_rows)} "
            f"| {min(earlier, n_rows)} | {now:.2f} | {before:.2f} "
            f"| {now / before:.2f} | {diff:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
