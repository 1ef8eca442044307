"""FISTA coding time with torch's default thread count against one thread.

``FISTACoder(dictionary=D, positive=True).transform`` of the first ``rows``
samples, for the oracle atoms of ``make_compositional(n_latents, 10,
n_samples=5000, random_state=0)`` at each ``--n-latents`` and for 4,096 random
unit atoms in 512 features (1 % of them active per sample, float32). Each
call is timed with ``torch.set_num_threads(1)`` and with the default count,
alternately, ``--repeats`` times (the minimum is kept), in one process on the
same data, and the ratio default / one thread is printed.

``--busy K`` starts K processes that keep a core busy each for the whole run,
as other jobs on a shared machine do: torch's parallel kernels then wait at
barriers for a descheduled thread, which is what the comparison is about.

Usage::

    python benchmarks/bench_threads.py [--n-latents 100 1000] [--rows 200 500
        1000 2500] [--busy 0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time


def _spin() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def _cases(n_latents: list[int]):
    import numpy as np

    from skdict.datasets import make_compositional

    for n in n_latents:
        data = make_compositional(n, 10, n_samples=5000, random_state=0)
        yield f"{n} oracle atoms", data.dictionary, data.X_val
    rng = np.random.default_rng(0)
    atoms = rng.standard_normal((4096, 512))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = (rng.random((2500, 4096)) < 0.01) * rng.random((2500, 4096))
    yield "4096 random atoms", atoms, (codes @ atoms).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-latents", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rows", type=int, nargs="+", default=[200, 500, 1000, 2500])
    parser.add_argument("--busy", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if max(args.rows) > 2500:  # the rows of each case below
        parser.error(f"--rows is at most 2500 (the data's rows); got {max(args.rows)}")

    import torch

    from skdict import FISTACoder

    default = torch.get_num_threads()
    if default == 1:
        parser.error(
            "torch's default thread count is 1 (OMP_NUM_THREADS=1?): one thread "
            "against one compares nothing; run without that setting"
        )
    spinners = [
        multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)
    ]
    for process in spinners:
        process.start()
    print(f"torch threads: 1 against {default}; busy processes: {args.busy}")
    try:
        for name, atoms, X in _cases(args.n_latents):
            coder = FISTACoder(dictionary=atoms, positive=True).fit(X[:10])
            for rows in args.rows:
                times = {1: [], default: []}
                for _ in range(args.repeats):
                    for threads in (1, default):
                        torch.set_num_threads(threads)
                        coder.transform(X[:rows])  # warm-up at this count
                        start = time.perf_counter()
                        coder.transform(X[:rows])
                        times[threads].append(time.perf_counter() - start)
                torch.set_num_threads(default)
                one, many = min(times[1]), min(times[default])
                print(
                    f"{name:18s} {rows:5d} rows: 1 thread {one * 1e3:8.1f} ms, "
                    f"{default} threads {many * 1e3:8.1f} ms, ratio {many / one:5.2f}",
                    flush=True,
                )
    finally:
        for process in spinners:
            process.terminate()


if __name__ == "__main__":
    main()
