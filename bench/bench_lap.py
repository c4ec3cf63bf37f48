#!/usr/bin/env python3
"""Compare bench_lap (convergent::solve_assignment) with scipy.optimize.linear_sum_assignment.

Both solve the same matrices in the same run: bench_lap generates each matrix, writes it with
--write-npy and times its own solve; this script loads the file and times scipy (maximize=True) on it.
Neither time includes generation or file I/O.

  python3 bench/bench_lap.py --exe build-lap/bench_lap --sizes 1024 2048 4096 8192 --kinds uniform corr
"""
import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy
from scipy.optimize import linear_sum_assignment


def machine():
    model = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def run_ours(exe, args):
    out = subprocess.run([exe] + args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench_lap failed: {out.stderr.strip()}")
    fields = dict(kv.split("=", 1) for kv in out.stdout.split())
    return float(fields["time_s"]), float(fields["total"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exe", default="build-lap/bench_lap")
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument("--kinds", nargs="+", default=["uniform", "corr"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scipy-max-n", type=int, default=8192, help="above this, time ours alone")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    a = p.parse_args()

    print(f"# machine: {machine()}; numpy {np.__version__}, scipy {scipy.__version__}; "
          f"threads={a.threads}; {time.strftime('%Y-%m-%d')}")
    head = ["n", "kind", "scipy s", "ours s", "ratio", "scipy total", "ours total", "rel diff"]
    if a.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    else:
        print("{:>6} {:>8} {:>9} {:>9} {:>7} {:>20} {:>20} {:>9}".format(*head))
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            for kind in a.kinds:
                path = os.path.join(tmp, f"w_{kind}_{n}.npy")
                with_scipy = n <= a.scipy_max_n
                args = ["--n", str(n), "--kind", kind, "--seed", str(a.seed), "--threads", str(a.threads)]
                if with_scipy:
                    args += ["--write-npy", path]
                ours_t, ours_total = run_ours(a.exe, args)
                if with_scipy:
                    w = np.load(path)
                    os.remove(path)
                    t0 = time.perf_counter()
                    r, c = linear_sum_assignment(w, maximize=True)
                    sp_t = time.perf_counter() - t0
                    sp_total = float(w[r, c].sum())
                    del w
                    rel = abs(ours_total - sp_total) / max(abs(sp_total), 1e-300)
                    row = [n, kind, f"{sp_t:.3f}", f"{ours_t:.3f}", f"{sp_t / ours_t:.1f}x",
                           f"{sp_total:.12f}", f"{ours_total:.12f}", f"{rel:.1e}"]
                else:
                    row = [n, kind, "-", f"{ours_t:.3f}", "-", "-", f"{ours_total:.12f}", "-"]
                if a.markdown:
                    print("| " + " | ".join(str(x) for x in row) + " |", flush=True)
                else:
                    print("{:>6} {:>8} {:>9} {:>9} {:>7} {:>20} {:>20} {:>9}".format(*row), flush=True)


if __name__ == "__main__":
    main()
