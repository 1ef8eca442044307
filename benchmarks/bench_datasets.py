"""Time and memory of make_compositional.

Cases (each run in a fresh subprocess, so that its peak resident memory is its
own):

* ``large``: 1,000,000 ID samples (500k train + 500k val) and 500k OOD samples
  at n_latents=10,000, n_active=10, sparse_codes=True;
* ``default``: the paper's default setting (n_latents=100, n_active=10, 5,000
  samples), dense codes;
* ``sampler``: 20,000 ID code rows at n_latents=10,000 (the same number of
  rows from the same distribution, not the same draws) by a per-sample loop
  (``Generator.choice`` per row, the reference implementation's pattern) and
  by make_compositional's vectorised sampler, timed alternately in one
  process; prints the ratio of their medians.

Usage::

    python benchmarks/bench_datasets.py [--repeats 3] [--cases default sampler ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import scipy.sparse as sp


def _max_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_case(case: str, repeats: int) -> dict:
    from skdict.datasets import make_compositional
    from skdict.datasets._compositional import _sample_codes

    before = _max_rss_mib()
    if case == "large":
        start = time.perf_counter()
        data = make_compositional(
            10_000, 10, n_samples=1_000_000, sparse_codes=True, random_state=0
        )
        seconds = time.perf_counter() - start
        splits = ("train", "val", "ood")
        out_mib = (
            sum(
                data[f"X_{s}"].nbytes
                + data[f"Z_{s}"].data.nbytes
                + data[f"Z_{s}"].indices.nbytes
                + data[f"Z_{s}"].indptr.nbytes
                for s in splits
            )
            / 2**20
        )
        nnz = sum(data[f"Z_{s}"].nnz for s in splits)
        extra = {"output_mib": out_mib, "nnz": nnz}
    elif case == "default":
        start = time.perf_counter()
        data = make_compositional(random_state=0)
        seconds = time.perf_counter() - start
        extra = {"X_train": data.X_train.shape}
    elif case == "sampler":
        recipe = dict(n_latents=10_000, n_active=10, n_ood=5000)
        samplers = {
            "vectorised": lambda rng: _sample_codes(rng, 20_000, ood=False, **recipe),
            "loop": lambda rng: _per_row_codes(rng, 20_000, **recipe),
        }
        times = {name: [] for name in samplers}
        # Alternating (in reversed order every other repeat), so that a
        # change in the machine's load hits both.
        for repeat in range(repeats):
            for name in list(samplers)[:: 1 if repeat % 2 == 0 else -1]:
                sample = samplers[name]
                rng = np.random.default_rng(repeat)
                start = time.perf_counter()
                sample(rng)
                times[name].append(time.perf_counter() - start)
        seconds = statistics.median(times["vectorised"])
        extra = {name: statistics.median(runs) for name, runs in times.items()}
    else:
        raise ValueError(case)
    return {
        "case": case,
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": _max_rss_mib(),
        **extra,
    }


def _per_row_codes(rng, n_rows, *, n_latents, n_active, n_ood):
    """ID codes drawn one sample at a time (the baseline), stored as CSR."""
    id_pool = np.arange(1, n_latents - n_ood)
    rest = np.arange(1, n_latents)
    supports = np.empty((n_rows, n_active), dtype=np.int32)
    for i in range(n_rows):
        if rng.random() < 0.5:
            support = np.r_[0, rng.choice(id_pool, n_active - 1, replace=False)]
        else:
            support = rng.choice(rest, n_active, replace=False)
        supports[i] = np.sort(support)
    values = rng.random((n_rows, n_active))
    indptr = np.arange(0, n_rows * n_active + 1, n_active)
    return sp.csr_matrix(
        (values.ravel(), supports.ravel(), indptr), shape=(n_rows, n_latents)
    )


CASES = ("default", "large", "sampler")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=CASES,
        default=list(CASES),
        help="cases to run (default: all; large needs about 2 GiB)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_run_case(args.child, args.repeats)))
        return
    for case in args.cases:
        # The sampler case repeats its two samplers inside one process.
        n_processes = 1 if case == "sampler" else args.repeats
        runs = []
        for _ in range(n_processes):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    case,
                    "--repeats",
                    str(args.repeats),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(out.stdout))
        if case == "sampler":
            loop, vectorised = runs[0]["loop"], runs[0]["vectorised"]
            print(
                f"   sampler: loop median {loop:.3f} s, vectorised median "
                f"{vectorised:.3f} s over {args.repeats} alternating runs in one "
                f"process: loop / vectorised {loop / vectorised:.1f}x (the same "
                "number of rows from the same distribution)"
            )
            continue
        times = [r["seconds"] for r in runs]
        peaks = [r["peak_rss_mib"] for r in runs]
        print(
            f"{case:>10}: median {statistics.median(times):8.3f} s "
            f"(runs {', '.join(f'{t:.3f}' for t in times)}), "
            f"peak RSS median {statistics.median(peaks):7.0f} MiB "
            f"(after imports {runs[0]['rss_before_mib']:.0f} MiB)",
            {k: v for k, v in runs[0].items() if k in ("output_mib", "nnz")},
        )


if __name__ == "__main__":
    main()
