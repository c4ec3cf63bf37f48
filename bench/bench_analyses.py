#!/usr/bin/env python3
"""Anchors for bench_analyses: scikit-learn's Lasso and a numpy CKA/CCA on the same data.

    python3 bench_analyses.py lasso ZA.npy ZB.npy ALPHAS TOL TIGHT_TOL OUT_PREFIX
        ZA, ZB: z-scored samples (n x p predictors, n x m targets), float64. For each alpha in ALPHAS
        (comma-separated), from the largest down, Lasso(alpha, fit_intercept=False, precompute=Gram,
        tol=TOL, warm_start=True, max_iter=100000).fit(ZA, ZB): scikit-learn's own Gram-matrix coordinate
        descent, warm-started along the path. The Gram matrix ZA^T ZA is computed once, untimed; each fit
        also forms ZA^T ZB (timed: it is part of the call). Then the same path again with tol=TIGHT_TOL,
        untimed, for the exactness check (skipped when TIGHT_TOL is 0). Writes OUT_PREFIX_timed.npy and
        OUT_PREFIX_tight.npy, the coefficients (alphas in the order given) x m x p as a 2-D
        (len(alphas) m) x p array, and prints `sklearn_seconds <t> version <v>`.

    python3 bench_analyses.py indices A.npy B.npy RIDGE REPEATS
        A, B: raw activations (n x p, n x q). Timed (best of REPEATS, loading excluded): float64 centring
        and covariance of [A | B] in one product, linear CKA ||C_ab||_F^2 / (||C_aa||_F ||C_bb||_F), and
        CCA by whitening the correlation matrices (eigh, eigenvalues + RIDGE) and the SVD of the whitened
        cross-correlation (its mean). Prints `numpy_seconds <t> cka <v> cca_mean <v> version <v>`.
"""
import sys
import time

import numpy as np


def lasso(za_path, zb_path, alphas, tol, tight, prefix):
    import sklearn
    from sklearn.linear_model import Lasso

    za, zb = np.load(za_path), np.load(zb_path)
    gram = za.T @ za
    order = sorted(range(len(alphas)), key=lambda k: -alphas[k])

    def path(tolerance):
        coefs = [None] * len(alphas)
        model = Lasso(alpha=alphas[order[0]], fit_intercept=False, precompute=gram, tol=tolerance,
                      warm_start=True, max_iter=100000)
        start = time.perf_counter()
        for k in order:
            model.set_params(alpha=alphas[k])
            model.fit(za, zb)
            coefs[k] = model.coef_.copy()
        return time.perf_counter() - start, np.concatenate(coefs, axis=0)

    seconds, timed = path(tol)
    np.save(prefix + "_timed.npy", timed)
    if tight > 0:
        np.save(prefix + "_tight.npy", path(tight)[1])
    print(f"sklearn_seconds {seconds:.6f} version {sklearn.__version__}")


def indices(a_path, b_path, ridge, repeats):
    a, b = np.load(a_path), np.load(b_path)
    p = a.shape[1]
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        x = np.concatenate([a, b], axis=1).astype(np.float64)
        x -= x.mean(axis=0)
        cov = (x.T @ x) / x.shape[0]
        caa, cbb, cab = cov[:p, :p], cov[p:, p:], cov[:p, p:]
        cka = np.sum(cab * cab) / (np.linalg.norm(caa) * np.linalg.norm(cbb))
        sd = np.sqrt(np.diag(cov))
        live = sd > 0
        sa, sb = sd[:p], sd[p:]
        raa, rbb, rab = caa / np.outer(sa, sa), cbb / np.outer(sb, sb), cab / np.outer(sa, sb)

        def whiten(r):
            values, vectors = np.linalg.eigh(r)
            return (vectors / np.sqrt(np.maximum(values, 0) + ridge)) @ vectors.T

        rho = np.clip(np.linalg.svd(whiten(raa) @ rab @ whiten(rbb), compute_uv=False), 0, 1)
        elapsed = time.perf_counter() - start
        if elapsed < best:
            best, result = elapsed, (cka, rho.mean())
        assert live.all()
    print(f"numpy_seconds {best:.6f} cka {result[0]:.17g} cca_mean {result[1]:.17g} version {np.__version__}")


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "lasso" and len(sys.argv) == 8:
        lasso(sys.argv[2], sys.argv[3], [float(a) for a in sys.argv[4].split(",")], float(sys.argv[5]),
              float(sys.argv[6]), sys.argv[7])
        return 0
    if len(sys.argv) >= 2 and sys.argv[1] == "indices" and len(sys.argv) == 6:
        indices(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
