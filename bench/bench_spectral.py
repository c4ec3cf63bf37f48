#!/usr/bin/env python3
"""Anchor for bench_spectral: scikit-learn's SpectralClustering on the same matrix.

bench_spectral (the C++ driver) writes the correlation matrix of the live units as float64 .npy and runs

    python3 bench_spectral.py CORRELATION.npy K SEED LABELS_OUT.npy [REPEATS [STATES]]

This script builds the same affinity as convergent's default (|corr|, diagonal 1), then
- times scikit-learn's default, SpectralClustering(affinity='precomputed', n_clusters=K, random_state=SEED,
  assign_labels='kmeans').fit (best of REPEATS, default 1; loading and the affinity are not timed);
- fits every assign_labels option (kmeans, discretize, cluster_qr) with random_state SEED .. SEED + STATES - 1
  (default 5), untimed, so that the driver can hold our cut against the best scikit-learn finds.
It writes a float64 .npy of shape (1 + 3 * STATES, units): row 0 the labels of the fastest timed default run,
then one row per (option, state) in that order, and prints `sklearn_seconds <t> version <v> options <list>`.
The driver computes every normalised cut with one formula (convergent::normalized_cut).
"""
import sys
import time

import numpy as np
import sklearn
from sklearn.cluster import SpectralClustering

OPTIONS = ("kmeans", "discretize", "cluster_qr")


def fit(affinity, k, state, assign_labels):
    model = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=state,
                               assign_labels=assign_labels)
    start = time.perf_counter()
    model.fit(affinity)
    return time.perf_counter() - start, model.labels_


def main() -> int:
    if len(sys.argv) not in (5, 6, 7):
        print(__doc__, file=sys.stderr)
        return 2
    corr_path, k, seed, labels_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    repeats = int(sys.argv[5]) if len(sys.argv) >= 6 else 1
    states = int(sys.argv[6]) if len(sys.argv) == 7 else 5
    affinity = np.abs(np.load(corr_path))
    np.fill_diagonal(affinity, 1.0)
    best, rows = float("inf"), [None]
    for _ in range(repeats):
        elapsed, labels = fit(affinity, k, seed, "kmeans")
        if elapsed < best:
            best, rows[0] = elapsed, labels
    for option in OPTIONS:
        for state in range(seed, seed + states):
            rows.append(fit(affinity, k, state, option)[1])
    np.save(labels_path, np.array(rows, dtype=np.float64))
    print(f"sklearn_seconds {best:.6f} version {sklearn.__version__} options {','.join(OPTIONS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
