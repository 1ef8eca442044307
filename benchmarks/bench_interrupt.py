"""How soon Ctrl-C stops a call that codes on several threads.

A ``SIGALRM`` handler raises ``KeyboardInterrupt`` ``--after`` seconds into
each call (as Ctrl-C would); the time from the call's start to the
exception reaching the caller is printed, with the call's full length
without an interruption (untimed first calls warm every path up). The data:
``--rows`` rows of 32 features, sparse combinations of 64 random unit atoms
(float64), coded with ``alpha=0.05`` on ``--threads`` torch threads:

* ``FISTACoder(dictionary=D).transform`` with automatic batches and with
  ``batch_size=4096``;
* the second ``partial_fit`` of ``FISTACoder(n_components=64)`` on all rows.

Run it with ``PYTHONPATH`` pointing at another checkout to time that
checkout. POSIX only (``signal.setitimer``).

Usage::

    python benchmarks/bench_interrupt.py [--rows 150000] [--threads 2]
        [--after 0.5]
"""

from __future__ import annotations

import argparse
import copy
import signal
import time


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _timed(call, after: float | None) -> tuple[float, bool]:
    """Seconds until ``call`` returns or raises, and whether it was interrupted."""
    start = time.perf_counter()
    if after is not None:
        signal.setitimer(signal.ITIMER_REAL, after)
    try:
        call()
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return time.perf_counter() - start, interrupted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--after", type=float, default=0.5)
    args = parser.parse_args()
    if args.rows < 1000 or args.threads < 1 or args.after <= 0:
        parser.error("--rows must be at least 1000, --threads and --after positive")

    import numpy as np
    import torch

    from skdict import FISTACoder

    torch.set_num_threads(args.threads)
    signal.signal(signal.SIGALRM, _interrupt)
    rng = np.random.default_rng(0)
    D = rng.standard_normal((64, 32))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Z = (rng.random((args.rows, 64)) < 0.1) * rng.random((args.rows, 64))
    X = Z @ D

    stream = FISTACoder(n_components=64, alpha=0.05, random_state=0)
    stream.partial_fit(X[:1000])
    cases = {
        "transform, automatic batches": FISTACoder(D, alpha=0.05).fit(X[:5]),
        "transform, batch_size=4096": FISTACoder(D, alpha=0.05, batch_size=4096).fit(
            X[:5]
        ),
    }
    print(
        f"{args.rows} rows x 32 features, 64 atoms, {args.threads} torch "
        f"thread(s), interrupted {args.after} s into each call"
    )
    for name, coder in cases.items():
        coder.transform(X[:1000])  # warm
        whole, _ = _timed(lambda c=coder: c.transform(X), None)
        stopped, interrupted = _timed(lambda c=coder: c.transform(X), args.after)
        print(
            f"{name:30s} whole call {whole:6.2f} s   interrupted: returned after "
            f"{stopped:5.2f} s{'' if interrupted else ' (finished first)'}"
        )
    whole, _ = _timed(lambda: copy.deepcopy(stream).partial_fit(X), None)
    stopped, interrupted = _timed(lambda: stream.partial_fit(X), args.after)
    print(
        f"{'partial_fit, second call':30s} whole call {whole:6.2f} s   "
        f"interrupted: returned after {stopped:5.2f} s"
        f"{'' if interrupted else ' (finished first)'}"
    )


if __name__ == "__main__":
    main()
