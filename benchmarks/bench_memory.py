"""Peak memory of coding many wide rows on few atoms, against the data's size.

Each case runs in a fresh process on the same data (``--rows`` rows of
``--features`` float32 features; a fraction ``--active``, by default 10 %, of
``--atoms`` unit atoms active per row) and prints the peak resident memory
above the process's resident memory just before the call (Linux: ``VmHWM``
after resetting it through ``/proc/self/clear_refs``), and its ratio to the
data's size:

* ``FISTACoder(dictionary=D, positive=True).transform`` with
  ``batch_size=None`` and with ``--batch-size``, and ``score`` with
  ``--batch-size``;
* ``FISTACoder(dictionary=FrozenEstimator(pca)).transform`` with
  ``--batch-size``, a ``PCA(atoms)`` fitted on 5,000 rows (a provider with an
  intercept, ``mean_``);
* ``SparseAutoencoder(atoms).transform`` (ReLU, one epoch on 2,000 rows);
* ``FISTACoder(dictionary=D).inverse_transform`` of codes of the data's shape.

``--scale`` measures instead training, streams and metrics at fixed sizes
(float32 unless stated; the options above do not apply):

* ``SparseAutoencoder(4096, activation="topk", k=32, batch_size=4096)``, one
  epoch on 100,000 x 512 rows;
* ``SparseAutoencoder(256, activation="topk", k=16, batch_size=4096,
  validation_fraction=0.1)``, one epoch on 200,000 x 256 rows;
* a ``partial_fit`` call of ``FISTACoder(n_components=4096, alpha=0.3)`` on
  1,024 rows of 256 features, after a first call on 4,096 rows;
* two rounds of ``FISTACoder(n_components=K, dict_max_iter=2).fit`` (full
  batch) on 40,000 rows: K=512 atoms of 256 features, and K=1,024 of 128;
* ``mcc_score`` of float64 ``Z`` and float32 codes, 10**6 x 100;
  ``support_scores`` of 100,000 x 2,048 float32 codes; ``reconstruction_error``
  of float64 ``X`` and a float32 reconstruction, 10**6 x 100;
* wide matchings, whose ``n x m`` matrices outweigh the inputs: ``mcc_score``
  of 5,000 x 4,000 float32 codes (1 % active), and ``dictionary_similarity``
  of two float32 dictionaries of 4,000 atoms of 768 features.

The rows of the learning cases hold about 8 active atoms of a random unit
dictionary; the metrics' true codes are 10 % active (1 % for
``support_scores``), and the estimates share their support.

Usage::

    python benchmarks/bench_memory.py [--rows 200000] [--features 1024]
        [--atoms 16] [--batch-size 4096] [--active 0.1] [--cases CASE ...]
    python benchmarks/bench_memory.py --scale [--cases CASE ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time

CASES = (
    "transform, batch_size=None",
    "transform",
    "score",
    "transform, PCA provider",
    "SAE transform",
    "inverse_transform",
)
SCALE_CASES = (
    "SAE fit, one epoch",
    "SAE fit, validation_fraction=0.1",
    "partial_fit, a call",
    "fit, two rounds, 512 atoms",
    "fit, two rounds, 1,024 atoms",
    "mcc_score",
    "support_scores",
    "reconstruction_error",
    "mcc_score, 4,000 latents",
    "dictionary_similarity, 4,000 atoms",
)


def _status(key: str) -> float:
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(key))
    return int(line.split()[1]) / 1024  # MiB


def _sparse_rows(rng, rows: int, atoms: int, features: int, active: float):
    """Rows of ``active * atoms`` active unit atoms in float32, built in blocks."""
    import numpy as np

    D = rng.standard_normal((atoms, features)).astype(np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = np.empty((rows, features), dtype=np.float32)
    for start in range(0, rows, 10_000):  # no (rows, atoms) float64 codes at once
        block = min(10_000, rows - start)
        Z = (rng.random((block, atoms)) < active) * rng.random((block, atoms))
        X[start : start + block] = Z @ D
    return X, D


def _coding_call(case, rows, features, atoms, batch_size, active):
    """The call of a coding case, and its data's size in bytes."""
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.frozen import FrozenEstimator

    from skdict import FISTACoder, SparseAutoencoder

    X, D = _sparse_rows(np.random.default_rng(0), rows, atoms, features, active)
    if case == "inverse_transform":  # of the true codes: a reconstruction of X
        Z = np.zeros((rows, atoms), dtype=np.float32)
        Z[:, : max(1, int(active * atoms))] = 1.0
        estimator = FISTACoder(D, alpha=0.05, positive=True).fit(X[:5])
        return lambda: estimator.inverse_transform(Z), X.nbytes
    if case == "SAE transform":
        estimator = SparseAutoencoder(atoms, max_epochs=1, random_state=0)
        call = estimator.fit(X[:2000]).transform
    elif case == "transform, PCA provider":
        pca = PCA(atoms).fit(X[:5000])
        estimator = FISTACoder(FrozenEstimator(pca), alpha=0.05, batch_size=batch_size)
        call = estimator.fit(X[:5]).transform
    else:
        size = None if case.endswith("None") else batch_size
        estimator = FISTACoder(D, alpha=0.05, positive=True, batch_size=size)
        estimator.fit(X[:5])
        call = estimator.score if case == "score" else estimator.transform
    return lambda: call(X), X.nbytes


def _scale_call(case):
    """The call of a ``--scale`` case, and its inputs' size in bytes."""
    import numpy as np

    from skdict import FISTACoder, SparseAutoencoder
    from skdict.metrics import (
        dictionary_similarity,
        mcc_score,
        reconstruction_error,
        support_scores,
    )

    rng = np.random.default_rng(0)
    if case.startswith("dictionary_similarity"):
        true = rng.standard_normal((4000, 768), dtype=np.float32)
        learned = true + 0.1 * rng.standard_normal((4000, 768), dtype=np.float32)
        return lambda: dictionary_similarity(true, learned), 2 * true.nbytes
    if case.startswith("SAE fit"):
        validation = case.endswith("0.1")
        rows, features, width, k = (
            (200_000, 256, 256, 16) if validation else (100_000, 512, 4096, 32)
        )
        X = rng.standard_normal((rows, features), dtype=np.float32)
        estimator = SparseAutoencoder(
            width,
            activation="topk",
            k=k,
            batch_size=4096,
            max_epochs=1,
            validation_fraction=0.1 if validation else None,
            random_state=0,
        )
        return lambda: estimator.fit(X), X.nbytes
    if case == "partial_fit, a call":
        # A first chunk of as many rows as atoms, as partial_fit asks; alpha
        # 0.3 keeps the codes of these rows (norm about 1.6) sparse: at 0.05
        # the second call codes about 190 atoms a row and takes minutes.
        X, _ = _sparse_rows(rng, 4096 + 1024, 4096, 256, 8 / 4096)
        estimator = FISTACoder(n_components=4096, alpha=0.3, random_state=0)
        estimator.partial_fit(X[:4096])
        return lambda: estimator.partial_fit(X[4096:]), X[4096:].nbytes
    if case.startswith("fit, two rounds"):
        atoms, features = (512, 256) if "512" in case else (1024, 128)
        X, _ = _sparse_rows(rng, 40_000, atoms, features, 8 / atoms)
        estimator = FISTACoder(
            n_components=atoms,
            alpha=0.05,
            positive=True,
            dict_max_iter=2,
            random_state=0,
        )
        return lambda: estimator.fit(X), X.nbytes
    support, wide = case == "support_scores", case.endswith("latents")
    rows, columns = (
        (100_000, 2048) if support else (5000, 4000) if wide else (10**6, 100)
    )
    # 20 of 2,048 latents; 40 of 4,000; 10 of 100.
    active = 0.01 if support or wide else 0.1
    truth = (rng.random((rows, columns)) < active) * rng.random((rows, columns))
    if support or wide:
        truth = truth.astype(np.float32)
    # The estimate shares the truth's support: codes, or a reconstruction.
    noise = 1 + 0.1 * rng.standard_normal((rows, columns), dtype=np.float32)
    estimate = (truth * noise).astype(np.float32)
    metric = {
        "support_scores": support_scores,
        "reconstruction_error": (reconstruction_error),
    }.get(case, mcc_score)
    return lambda: metric(truth, estimate), truth.nbytes + estimate.nbytes


def _measure(case: str, sizes) -> dict:
    import torch

    torch.set_num_threads(1)
    call, nbytes = (
        _scale_call(case) if case in SCALE_CASES else _coding_call(case, *sizes)
    )
    gc.collect()
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident size
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    return {"peak": _status("VmHWM") - base, "data": nbytes / 2**20, "s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--atoms", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--active", type=float, default=0.1)
    parser.add_argument("--scale", action="store_true")
    parser.add_argument("--cases", nargs="+", choices=CASES + SCALE_CASES)
    parser.add_argument("--case", choices=CASES + SCALE_CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = (args.rows, args.features, args.atoms, args.batch_size, args.active)
    if args.case:  # a child process: one measurement, as JSON
        print(json.dumps(_measure(args.case, sizes)))
        return
    cases = args.cases or (SCALE_CASES if args.scale else CASES)
    group = SCALE_CASES if args.scale else CASES
    if set(cases) - set(group):
        parser.error(
            f"--cases {sorted(set(cases) - set(group))} are "
            f"{'coding cases, measured without' if args.scale else 'run with'} "
            "--scale"
        )
    if not args.scale:
        print(
            f"{args.rows} rows x {args.features} features (float32), {args.atoms} "
            f"atoms ({args.active:.1%} active), batch_size={args.batch_size} "
            "where given"
        )
    for case in cases:
        command = [sys.executable, __file__, "--case", case]
        command += ["--rows", str(args.rows), "--features", str(args.features)]
        command += ["--atoms", str(args.atoms), "--batch-size", str(args.batch_size)]
        command += ["--active", str(args.active)]
        output = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(output.stdout.splitlines()[-1])
        peak, data = result["peak"], result["data"]
        print(
            f"{case:34s} peak {peak:7.0f} MiB above start, "
            f"{peak / data:.2f}x the inputs ({data:.0f} MiB), {result['s']:.1f} s"
        )


if __name__ == "__main__":
    main()
