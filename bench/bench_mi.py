#!/usr/bin/env python3
"""Anchor for bench_mi: the loop researchers write today, on the same files.

    python3 bench_mi.py A.npy B.npy BINS PAIRS OUT.npy

Each unit is digitised once, as numpy.histogram would bin it (np.histogram_bin_edges(x, BINS), then
np.digitize on the inner edges: equal-width bins, last one closed; not timed), then scikit-learn's
mutual_info_score (nats) runs pair by pair over the first PAIRS between-net pairs (a, b) in row-major order,
timed. Writes their MI as float64 (PAIRS,) to OUT.npy and prints `sklearn_seconds_per_pair <t> pairs <n>
version <v>`. The driver checks the MI against its own equal-width run and projects the per-pair time.
"""
import sys
import time

import numpy as np
import sklearn
from sklearn.metrics import mutual_info_score


def digitise(x, bins):
    return np.stack([np.digitize(col, np.histogram_bin_edges(col, bins)[1:-1]) for col in x.T])


def main():
    a_path, b_path, bins, pairs, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    a, b = np.load(a_path), np.load(b_path)
    da, db = digitise(a, bins), digitise(b, bins)
    ub = db.shape[0]
    mi = np.empty(pairs)
    start = time.perf_counter()
    for k in range(pairs):
        mi[k] = mutual_info_score(da[k // ub], db[k % ub])
    seconds = time.perf_counter() - start
    np.save(out, mi)
    print(f"sklearn_seconds_per_pair {seconds / pairs:.6g} pairs {pairs} version {sklearn.__version__}")


if __name__ == "__main__":
    main()
