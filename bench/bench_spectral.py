#!/usr/bin/env python3
"""Anchor for bench_spectral: scikit-learn's SpectralClustering on the same matrix.

bench_spectral (the C++ driver) writes the combined correlation matrix as float64 .npy and runs

    python3 bench_spectral.py CORRELATION.npy K SEED LABELS_OUT.npy [REPEATS]

This script builds the same affinity as convergent's default (|corr|, diagonal 1), times
SpectralClustering(affinity='precomputed', n_clusters=K, random_state=SEED, assign_labels='kmeans').fit
(best of REPEATS, default 1; loading and the affinity are not timed), writes the labels of the fastest
run as float64 .npy and prints one line: `sklearn_seconds <t> version <sklearn version>`.
The driver computes both normalised cuts with one formula (convergent::normalized_cut).
"""
import sys
import time

import numpy as np
import sklearn
from sklearn.cluster import SpectralClustering


def main() -> int:
    if len(sys.argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    corr_path, k, seed, labels_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    repeats = int(sys.argv[5]) if len(sys.argv) == 6 else 1
    affinity = np.abs(np.load(corr_path))
    np.fill_diagonal(affinity, 1.0)
    best, labels = float("inf"), None
    for _ in range(repeats):
        model = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed,
                                   assign_labels="kmeans")
        start = time.perf_counter()
        model.fit(affinity)
        elapsed = time.perf_counter() - start
        if elapsed < best:
            best, labels = elapsed, model.labels_
    np.save(labels_path, labels.astype(np.float64))
    print(f"sklearn_seconds {best:.6f} version {sklearn.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
