"""Dictionary learning on small problems, against scikit-learn.

Settings outside the benchmark of ``bench_dictionary.py``: few samples per
atom, one or two active concepts, few features. For each cell
``make_compositional(n_latents, n_active, n_samples=..., noise=...)`` and seed,
the dictionary similarity of ``FISTACoder(n_components=n_latents,
positive=True)`` with its defaults, of a second fit from its atoms
(``--refine``: ``FISTACoder(init=atoms, positive=True)``, rounds that never
increase the objective) and of ``MiniBatchDictionaryLearning`` at the same
penalty (``bench_dictionary.sklearn_learner``: ``alpha=0.1``,
``max_iter=50``, ``batch_size=256``, coordinate descent, non-negative codes),
on one thread. Prints the means over seeds.

Usage::

    python benchmarks/bench_small_problems.py [--seeds 0 1 2] [--refine]
"""

from __future__ import annotations

import argparse
import warnings

CELLS = [
    # (n_latents, n_active, n_samples, noise)
    (10, 1, 1000, 0.0),
    (10, 1, 4000, 0.0),
    (20, 2, 200, 0.0),
    (20, 2, 1000, 0.0),
    (50, 3, 200, 0.0),
    (50, 3, 200, 0.05),
    (10, 2, 1000, 0.05),
    (20, 10, 200, 0.05),
    (20, 1, 4000, 0.0),
    (50, 1, 1000, 0.0),
    (100, 2, 200, 0.0),
    (100, 5, 200, 0.0),
    (20, 3, 1000, 0.0),
    (50, 5, 4000, 0.0),
    (100, 10, 4000, 0.0),
    (50, 3, 4000, 0.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--refine", action="store_true")
    args = parser.parse_args()

    import numpy as np
    import torch
    from bench_dictionary import sklearn_learner  # this folder, run as a script

    from skdict import FISTACoder
    from skdict.datasets import make_compositional
    from skdict.metrics import dictionary_similarity

    torch.set_num_threads(1)
    header = "| cell | skdict |" + (" refined |" if args.refine else "") + " sklearn |"
    print(header)
    print("| --- |" + " ---: |" * (header.count("|") - 2))
    means = []
    for n_latents, n_active, n_samples, noise in CELLS:
        scores = []
        for seed in args.seeds:
            data = make_compositional(
                n_latents, n_active, n_samples=n_samples, noise=noise, random_state=seed
            )
            X = data.X_train
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sklearn's and FISTA's warnings
                coder = FISTACoder(
                    n_components=n_latents, positive=True, random_state=seed
                ).fit(X)
                row = [dictionary_similarity(data.dictionary, coder)]
                if args.refine:
                    refined = FISTACoder(init=coder.components_, positive=True).fit(X)
                    row.append(dictionary_similarity(data.dictionary, refined))
                sklearn = sklearn_learner(n_latents, seed).fit(X)
            row.append(dictionary_similarity(data.dictionary, sklearn))
            scores.append(row)
        mean = np.mean(scores, axis=0)
        means.append(mean)
        cell = f"({n_latents}, {n_active}, {n_samples}, {noise})"
        print(f"| {cell} | " + " | ".join(f"{value:.3f}" for value in mean) + " |")
    overall = np.mean(means, axis=0)
    print("| mean | " + " | ".join(f"{value:.3f}" for value in overall) + " |")


if __name__ == "__main__":
    main()
