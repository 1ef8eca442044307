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
* ``SparseAutoencoder(atoms).transform`` (ReLU, one epoch on 2,000 rows).

Usage::

    python benchmarks/bench_memory.py [--rows 200000] [--features 1024]
        [--atoms 16] [--batch-size 4096] [--active 0.1] [--cases CASE ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys

CASES = (
    "transform, batch_size=None",
    "transform",
    "score",
    "transform, PCA provider",
    "SAE transform",
)


def _status(key: str) -> float:
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(key))
    return int(line.split()[1]) / 1024  # MiB


def _measure(
    case: str, rows: int, features: int, atoms: int, batch_size: int, active: float
):
    import numpy as np
    import torch
    from sklearn.decomposition import PCA
    from sklearn.frozen import FrozenEstimator

    from skdict import FISTACoder, SparseAutoencoder

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    D = rng.standard_normal((atoms, features)).astype(np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = np.empty((rows, features), dtype=np.float32)
    for start in range(0, rows, 10_000):  # no (rows, atoms) float64 codes at once
        Z = (rng.random((min(10_000, rows - start), atoms)) < active) * rng.random(
            (min(10_000, rows - start), atoms)
        )
        X[start : start + len(Z)] = Z @ D
    if case == "SAE transform":
        estimator = SparseAutoencoder(atoms, max_epochs=1, random_state=0)
        estimator.fit(X[:2000])
        call = estimator.transform
    elif case == "transform, PCA provider":
        pca = PCA(atoms).fit(X[:5000])
        estimator = FISTACoder(FrozenEstimator(pca), alpha=0.05, batch_size=batch_size)
        call = estimator.fit(X[:5]).transform
    else:
        size = None if case.endswith("None") else batch_size
        estimator = FISTACoder(D, alpha=0.05, positive=True, batch_size=size)
        estimator.fit(X[:5])
        call = estimator.score if case == "score" else estimator.transform
    gc.collect()
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident size
    call(X)
    return {"peak": _status("VmHWM") - base, "data": X.nbytes / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--atoms", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--active", type=float, default=0.1)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=CASES)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = (args.rows, args.features, args.atoms, args.batch_size, args.active)
    if args.case:  # a child process: one measurement, as JSON
        print(json.dumps(_measure(args.case, *sizes)))
        return
    print(
        f"{args.rows} rows x {args.features} features (float32), {args.atoms} "
        f"atoms ({args.active:.1%} active), batch_size={args.batch_size} where given"
    )
    for case in args.cases:
        command = [sys.executable, __file__, "--case", case]
        command += ["--rows", str(args.rows), "--features", str(args.features)]
        command += ["--atoms", str(args.atoms), "--batch-size", str(args.batch_size)]
        command += ["--active", str(args.active)]
        output = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(output.stdout.splitlines()[-1])
        peak, data = result["peak"], result["data"]
        print(
            f"{case:28s} peak {peak:7.0f} MiB above start, "
            f"{peak / data:.2f}x the data ({data:.0f} MiB)"
        )


if __name__ == "__main__":
    main()
