"""numpy's side of bench_corr: times numpy.corrcoef on the workload file and compares with ours.

    python3 corrcoef_numpy.py DATA.npy OURS.npy

Prints key=value fields: seconds, peak_mib (resident memory added by load + corrcoef), max_abs_diff.
"""
import resource
import sys
import time

import numpy as np


def rss_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


data_path, ours_path = sys.argv[1], sys.argv[2]
before = rss_mib()
x = np.load(data_path)
start = time.perf_counter()
corr = np.corrcoef(x, rowvar=False)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - before
del x
ours = np.load(ours_path)
print(f"seconds={seconds:.6f} peak_mib={peak:.1f} max_abs_diff={np.abs(corr - ours).max():.3e} numpy={np.__version__}")
