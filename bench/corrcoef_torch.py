"""torch's side of bench_corr --backend cuda: what a user with PyTorch would run instead, on the same GPU
and the same workload file.

    python3 corrcoef_torch.py DATA.npy OURS.npy [REPEAT]

Times, best of REPEAT after one warm-up (CUDA context, cuBLAS handles and the page cache are warm for both
sides): end_to_end_seconds = np.load (memory map) -> torch tensor -> .cuda() -> torch.corrcoef(x.T) ->
.cpu(), the path from a file to a correlation matrix in host memory, as our pass is timed; and
compute_seconds = torch.corrcoef alone on data already on the device. float32, like our products.
Prints key=value fields: end_to_end_seconds, compute_seconds, device_peak_mib (torch's peak allocation),
max_abs_diff (against OURS.npy, float64), torch, device. Prints error=... and exits 1 when torch or a CUDA
device is missing.
"""
import sys
import time

try:
    import numpy as np
    import torch
except ImportError as exc:  # a CPU-only developer machine may lack both: say so, bench_corr goes on
    print(f"error=cannot import numpy and torch ({exc})")
    sys.exit(1)

if not torch.cuda.is_available():
    print(f"error=torch {torch.__version__} sees no CUDA device")
    sys.exit(1)

data_path, ours_path = sys.argv[1], sys.argv[2]
repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 3
device = torch.device("cuda")


def end_to_end():
    x = np.load(data_path, mmap_mode="r")
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    corr = torch.corrcoef(t.T)
    host = corr.cpu()
    torch.cuda.synchronize()
    return host


def timed(f):
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = f()
    torch.cuda.synchronize()
    return time.perf_counter() - start, result


end_to_end()  # warm-up
best_end_to_end = min(timed(end_to_end)[0] for _ in range(repeat))

resident = torch.from_numpy(np.load(data_path)).to(device)
torch.cuda.synchronize()
torch.cuda.reset_peak_memory_stats()
torch.corrcoef(resident.T)  # warm-up
compute = [timed(lambda: torch.corrcoef(resident.T)) for _ in range(repeat)]
best_compute = min(seconds for seconds, _ in compute)
corr = compute[-1][1].double().cpu().numpy()
peak = torch.cuda.max_memory_allocated() / 2**20
ours = np.load(ours_path)
diff = np.abs(corr - ours)
print(
    f"end_to_end_seconds={best_end_to_end:.6f} compute_seconds={best_compute:.6f} device_peak_mib={peak:.0f} "
    f"max_abs_diff={np.nanmax(diff):.3e} nan_entries={int(np.isnan(corr).sum())} torch={torch.__version__} "
    f"device={torch.cuda.get_device_name()}"
)
