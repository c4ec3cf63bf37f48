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

    python3 bench_analyses.py indices A.npy B.npy RIDGE VARIANCE REPEATS
        A, B: raw activations (n x p, n x q). Each step timed alone (best of REPEATS, loading excluded):
        covariance: float64 centring and covariance of [A | B] in one product;
        linear_cka: ||C_ab||_F^2 / (||C_aa||_F ||C_bb||_F);
        debiased_cka: Song et al.'s (2012) unbiased HSIC in feature space from the centred samples X, Y:
          n(n-3) HSIC_1 = ||X^T Y||_F^2 - sum_i |x_i|^2 |y_i|^2 (1 + 2/(n-2)) + sum_i |x_i|^2 sum_i |y_i|^2
          / ((n-1)(n-2)) (the diagonal-free kernels' sums, 1^T K~ 1 = -sum_i |x_i|^2 on centred samples);
        cca: whitening of the correlation matrices (eigh, eigenvalues + RIDGE) and the SVD of the whitened
          cross-correlation; its mean;
        svcca: PCA of each covariance (eigh) to VARIANCE of its trace, whitening the kept directions
          (eigenvalues + RIDGE x mean variance), SVD; the mean (Raghu et al. 2017);
        pwcca: Morcos et al. (2018): the CCA's left or right singular vectors (the net with fewer units, A on
          a tie), canonical weights w = W u on the standardised units, alpha_i = sum_j |<h_i, x_j>| / |h_i|
          with h_i = Z w_i, from the covariance: n C_aa diag(1/s) w_i and n w_i^T R_aa w_i;
        procrustes: ||C_ab||_* / sqrt(tr C_aa tr C_bb) (Williams et al. 2021).
        Prints `time_<step> <s>` and `value_<index> <v>` for each, and `version <numpy>`.

    python3 bench_analyses.py images A.npy B.npy MINIBATCH REPEATS
        A, B: activations (n inputs x ...), each input flattened to one sample of its features. exact: linear
        CKA and debiased linear CKA (as in `indices`) over all n inputs; minibatch: Nguyen et al.'s (2021)
        estimator, mean HSIC_1 over consecutive minibatches of MINIBATCH inputs (the last one when it holds
        at least 4), each from its n x n Gram matrices K~ = X X^T with the diagonal zeroed (Song et al.'s eq.
        5 as written). Prints `time_exact`, `value_linear_cka`, `value_debiased_cka`, `time_minibatch`,
        `value_minibatch_cka` and `version`.
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


def best_of(repeats, step):
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = step()
        best = min(best, time.perf_counter() - start)
    return best, value


def centred_covariance(a, b):
    x = np.concatenate([a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)], axis=1).astype(np.float64)
    x -= x.mean(axis=0)
    return x, (x.T @ x) / x.shape[0]


def linear_cka(cov, p):
    cab = cov[:p, p:]
    return np.sum(cab * cab) / (np.linalg.norm(cov[:p, :p]) * np.linalg.norm(cov[p:, p:]))


def feature_hsic(xy, sx, sy, n):
    """n(n-3) HSIC_1 of centred X, Y from ||X^T Y||_F^2 (`xy`) and the squared sample norms sx, sy."""
    return (xy - np.dot(sx, sy) * (1 + 2 / (n - 2)) + sx.sum() * sy.sum() / ((n - 1) * (n - 2)))


def debiased_cka(x, cov, p):
    n = x.shape[0]
    sx, sy = np.einsum("ij,ij->i", x[:, :p], x[:, :p]), np.einsum("ij,ij->i", x[:, p:], x[:, p:])
    squares = lambda c: np.sum(c * c) * n * n  # ||X^T Y||_F^2 from the covariance n^-1 X^T Y
    ab = feature_hsic(squares(cov[:p, p:]), sx, sy, n)
    aa = feature_hsic(squares(cov[:p, :p]), sx, sx, n)
    bb = feature_hsic(squares(cov[p:, p:]), sy, sy, n)
    return ab / np.sqrt(aa * bb)


def gram_hsic(x, y):
    """Song et al.'s eq. 5 on the Gram matrices, diagonals zeroed."""
    n = x.shape[0]
    k, l = x @ x.T, y @ y.T
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    kl1 = k @ l.sum(axis=1)
    return (np.sum(k * l) + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * kl1.sum()) / (n * (n - 3))


def indices(a_path, b_path, ridge, variance, repeats):
    a, b = np.load(a_path), np.load(b_path)
    p, q = a.shape[1], b.shape[1]
    times, values = {}, {}
    times["covariance"], (x, cov) = best_of(repeats, lambda: centred_covariance(a, b))
    caa, cbb, cab = cov[:p, :p], cov[p:, p:], cov[:p, p:]
    assert (np.diag(cov) > 0).all()
    times["linear_cka"], values["linear_cka"] = best_of(repeats, lambda: linear_cka(cov, p))
    times["debiased_cka"], values["debiased_cka"] = best_of(repeats, lambda: debiased_cka(x, cov, p))

    def whiten(r):
        w, v = np.linalg.eigh(r)
        return (v / np.sqrt(np.maximum(w, 0) + ridge)) @ v.T

    def correlations():
        sd = np.sqrt(np.diag(cov))
        sa, sb = sd[:p], sd[p:]
        return sa, sb, caa / np.outer(sa, sa), cbb / np.outer(sb, sb), cab / np.outer(sa, sb)

    def cca():
        _, _, raa, rbb, rab = correlations()
        return np.clip(np.linalg.svd(whiten(raa) @ rab @ whiten(rbb), compute_uv=False), 0, 1).mean()

    def svcca():
        def reduced(c):
            w, v = np.linalg.eigh(c)
            w, v = np.maximum(w[::-1], 0), v[:, ::-1]
            k = int(np.searchsorted(np.cumsum(w), variance * w.sum())) + 1
            return v[:, :k] / np.sqrt(w[:k] + ridge * np.trace(c) / c.shape[0])
        ta, tb = reduced(caa), reduced(cbb)
        return np.clip(np.linalg.svd(ta.T @ cab @ tb, compute_uv=False), 0, 1).mean()

    def pwcca():
        sa, sb, raa, rbb, rab = correlations()
        wa, wb = whiten(raa), whiten(rbb)
        u, rho, vt = np.linalg.svd(wa @ rab @ wb)
        rho = np.clip(rho, 0, 1)
        r = len(rho)
        if p <= q:
            w, c, s, rr = wa @ u[:, :r], caa, sa, raa
        else:
            w, c, s, rr = wb @ vt[:r].T, cbb, sb, rbb
        inner = np.abs(c @ (w / s[:, None])).sum(axis=0)
        alpha = inner / np.sqrt(np.einsum("ij,ij->j", w, rr @ w))
        return np.dot(alpha, rho) / alpha.sum()

    def procrustes():
        return np.linalg.svd(cab, compute_uv=False).sum() / np.sqrt(np.trace(caa) * np.trace(cbb))

    for name, step in [("cca", cca), ("svcca", svcca), ("pwcca", pwcca), ("procrustes", procrustes)]:
        times[name], values[name] = best_of(repeats, step)
    for name, t in times.items():
        print(f"time_{name} {t:.6f}")
    for name, v in values.items():
        print(f"value_{name} {v:.17g}")
    print(f"version {np.__version__}")


def images(a_path, b_path, minibatch, repeats):
    a, b = np.load(a_path), np.load(b_path)
    n, p = a.shape[0], int(np.prod(a.shape[1:]))

    def exact():
        x, cov = centred_covariance(a, b)
        return linear_cka(cov, p), debiased_cka(x, cov, p)

    def minibatches():
        hsic = np.zeros((2, 2))
        count = 0
        for first in range(0, n, minibatch):
            x = a[first:first + minibatch].reshape(-1, p).astype(np.float64)
            y = b[first:first + minibatch].reshape(x.shape[0], -1).astype(np.float64)
            if x.shape[0] < 4:
                continue
            hsic += [[gram_hsic(x, x), gram_hsic(x, y)], [0, gram_hsic(y, y)]]
            count += 1
        return hsic[0, 1] / np.sqrt(hsic[0, 0] * hsic[1, 1])

    t_exact, (cka, debiased) = best_of(repeats, exact)
    t_minibatch, mini = best_of(repeats, minibatches)
    print(f"time_exact {t_exact:.6f}\nvalue_linear_cka {cka:.17g}\nvalue_debiased_cka {debiased:.17g}")
    print(f"time_minibatch {t_minibatch:.6f}\nvalue_minibatch_cka {mini:.17g}\nversion {np.__version__}")


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "lasso" and len(sys.argv) == 8:
        lasso(sys.argv[2], sys.argv[3], [float(a) for a in sys.argv[4].split(",")], float(sys.argv[5]),
              float(sys.argv[6]), sys.argv[7])
        return 0
    if len(sys.argv) >= 2 and sys.argv[1] == "indices" and len(sys.argv) == 7:
        indices(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
        return 0
    if len(sys.argv) >= 2 and sys.argv[1] == "images" and len(sys.argv) == 6:
        images(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
