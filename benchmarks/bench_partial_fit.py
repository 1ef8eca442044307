"""Streamed dictionary learning against the batch learner.

``FISTACoder.partial_fit`` (Mairal et al.'s online update from running
statistics) streams the training samples of ``make_compositional(n_latents,
n_active, n_samples)`` in mini-batches for a number of passes; ``fit`` learns
from the same samples at once (``dict_max_iter=40``). Printed per seed: the
dictionary similarity of each, their difference (fit minus stream), the
wall times and their ratio (stream / fit), on one torch thread.

Usage::

    python benchmarks/bench_partial_fit.py [--n-latents 50] [--n-active 3]
        [--n-samples 4000] [--seeds 0 1 2 3 4 5] [--batch-sizes 100 500]
        [--passes 6]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-latents", type=int, default=50)
    parser.add_argument("--n-active", type=int, default=3)
    parser.add_argument("--n-samples", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--passes", type=int, default=6)
    args = parser.parse_args()

    import torch

    from skdict import FISTACoder
    from skdict.datasets import make_compositional
    from skdict.metrics import dictionary_similarity

    torch.set_num_threads(1)
    params = {"n_components": args.n_latents, "positive": True, "tol": 1e-4}
    gaps = {batch: [] for batch in args.batch_sizes}
    ratios = {batch: [] for batch in args.batch_sizes}
    for seed in args.seeds:
        data = make_compositional(
            args.n_latents, args.n_active, n_samples=args.n_samples, random_state=seed
        )
        X = data.X_train
        start = time.perf_counter()
        fitted = FISTACoder(dict_max_iter=40, random_state=0, **params).fit(X)
        fit_time = time.perf_counter() - start
        fit_similarity = dictionary_similarity(data.dictionary, fitted)
        line = f"seed {seed}: fit {fit_similarity:.3f} ({fit_time:.3f} s)"
        for batch in args.batch_sizes:
            stream = FISTACoder(random_state=0, **params)
            start = time.perf_counter()
            for _ in range(args.passes):
                for first in range(0, X.shape[0], batch):
                    stream.partial_fit(X[first : first + batch])
            stream_time = time.perf_counter() - start
            similarity = dictionary_similarity(data.dictionary, stream)
            gaps[batch].append(fit_similarity - similarity)
            ratios[batch].append(stream_time / fit_time)
            line += (
                f" | batches of {batch}: {similarity:.3f} ({stream_time:.3f} s, "
                f"{stream_time / fit_time:.1f}x fit's time), "
                f"fit - stream {fit_similarity - similarity:+.3f}"
            )
        print(line, flush=True)
    for batch, values in gaps.items():
        print(
            f"batches of {batch}, {args.passes} passes: fit - stream from "
            f"{min(values):+.3f} to {max(values):+.3f}, stream / fit time from "
            f"{min(ratios[batch]):.1f}x to {max(ratios[batch]):.1f}x over "
            f"{len(values)} seeds"
        )


if __name__ == "__main__":
    main()
