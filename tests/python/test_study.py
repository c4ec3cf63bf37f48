"""convergent.Study on numpy arrays and torch tensors: known answers from float64 numpy, the CLI's layout
rules, the errors, and the outputs of save() against `convergent align` on the same inputs."""
import ctypes
import itertools
import json
import os
import signal
import subprocess
import threading
import warnings

import numpy as np
import pytest
import torch

import convergent

# Batch products are float32 after each unit is shifted and scaled (DESIGN.md, numerics): a covariance is
# good to a few float32 roundings of std_i std_j, so 1e-6 of that scale; means are float64 sums of the
# inputs, good to 1e-12 of the values' scale.
COV_RTOL = 1e-6
MEAN_RTOL = 1e-12


def planted(rng, n=600, units=(5, 4), dtype=np.float64):
    """Two nets sharing a latent signal: B's units are mixtures of A's plus noise, with offsets."""
    a = rng.standard_normal((n, units[0])) * rng.uniform(0.5, 3, units[0]) + 10.0
    b = np.maximum(a @ rng.standard_normal((units[0], units[1])), 0) + 0.3 * rng.standard_normal((n, units[1]))
    return a.astype(dtype), b.astype(dtype)


def reference(*nets):
    """Float64 numpy statistics of the concatenated units (rows = samples)."""
    x = np.concatenate([np.asarray(n, dtype=np.float64) for n in nets], axis=1)
    return x.mean(0), x.std(0), np.cov(x.T, bias=True), np.corrcoef(x.T)


def check_moments(m, *nets):
    mean, std, cov, corr = reference(*nets)
    scale = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    assert m.samples == len(nets[0])
    np.testing.assert_allclose(m.mean, mean, rtol=0, atol=MEAN_RTOL * np.abs(mean).max() + 1e-300)
    np.testing.assert_allclose(m.std, std, rtol=COV_RTOL)
    assert np.all(np.abs(m.covariance - cov) <= COV_RTOL * scale)
    np.testing.assert_allclose(m.correlation, corr, rtol=0, atol=COV_RTOL)


def add_in_batches(study, nets, batch=128):
    for k in range(0, len(next(iter(nets.values()))), batch):
        for name, x in nets.items():
            study.add(name, x[k:k + batch])


def test_moments_of_numpy_batches_equal_float64_numpy():
    a, b = planted(np.random.default_rng(1))
    study = convergent.Study(["a", "b"])
    add_in_batches(study, {"a": a, "b": b}, batch=97)
    m = study.moments()
    check_moments(m, a, b)
    assert m.nets == ["a", "b"] and list(m.units) == [5, 4]
    assert m.block("correlation", "a", "b").shape == (5, 4)
    assert not m.dead.any()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_torch_tensors_give_the_moments_of_their_values(dtype):
    a, b = planted(np.random.default_rng(2), dtype=dtype)
    study = convergent.Study(["a", "b"])
    add_in_batches(study, {"a": torch.from_numpy(a), "b": torch.from_numpy(b)})
    check_moments(study.moments(), a, b)  # the reference reads the same rounded values, in float64


def test_tensors_that_require_grad_are_read():
    a, b = planted(np.random.default_rng(3), dtype=np.float32)
    study = convergent.Study(["a", "b"])
    study.add("a", torch.from_numpy(a).requires_grad_())
    study.add("b", torch.from_numpy(b) * 1.0)
    check_moments(study.moments(), a, b)


@pytest.mark.parametrize("layout", ["channels-first", "channels-last"])
def test_conv_layouts_follow_the_cli_rules(layout):
    # 4-D (N, C, H, W) / (N, H, W, C) and 3-D (N, C, L) / (N, L, C): every (input, position) is a sample,
    # rows ordered input-major, then position; each is compared with a 2-D net of those rows (numpy's
    # reshape, the independent reference), batch by batch of 7 inputs.
    rng = np.random.default_rng(4)
    conv = rng.standard_normal((20, 3, 4, 5))
    seq = rng.standard_normal((20, 60, 2))  # 60 units at 2 positions
    last = layout == "channels-last"
    for x, to_last in [(conv, (0, 2, 3, 1)), (seq, (0, 2, 1))]:
        rows = x.transpose(to_last).reshape(-1, x.shape[1])
        positions = len(rows) // len(x)
        given = x.transpose(to_last).copy() if last else x
        study = convergent.Study(["conv", "flat"], layout=layout)
        for k in range(0, 20, 7):
            study.add("conv", given[k:k + 7])
            study.add("flat", rows[k * positions:(k + 7) * positions] * 2.0 + 1.0)
        m = study.moments()
        check_moments(m, rows, rows * 2.0 + 1.0)
        assert m.samples == 20 * positions


def test_strided_views_are_read_in_place():
    # Non-contiguous arrays (slices, transposes, Fortran order) are read through their strides, no copy
    # and no warning; the moments are those of the contiguous copy.
    rng = np.random.default_rng(5)
    wide = rng.standard_normal((300, 12))
    fortran = np.asfortranarray(rng.standard_normal((300, 4)))
    a, b = wide[:, ::3], fortran
    assert not a.flags.c_contiguous and not b.flags.c_contiguous
    study = convergent.Study(["a", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        study.add("a", a)
        study.add("b", torch.from_numpy(wide).t()[:4].t())  # a strided torch view
    check_moments(study.moments(), a, wide[:, :4])


def test_negative_strides_are_refused():
    study = convergent.Study(["a", "b"])
    with pytest.raises(convergent.Error, match="negative strides"):
        study.add("a", np.ones((4, 3))[::-1])


@pytest.mark.parametrize("bad,name", [(np.ones((4, 3), np.int32), "int32"), (np.ones((4, 3), np.complex64), "complex64"),
                                      (torch.ones((4, 3), dtype=torch.bfloat16), "bfloat16"),
                                      (torch.ones((4, 3), dtype=torch.int64), "int64"),
                                      (torch.ones((4, 3), dtype=torch.uint8), "uint8")])
def test_wrong_dtype_is_an_error(bad, name):
    # The dtype by its name (torch tensors were 'DLPack dtype (code 0, 64 bits, 1 lanes)').
    study = convergent.Study(["a", "b"])
    with pytest.raises(convergent.Error, match=f"net 'a' batch 0: dtype {name} is not supported; activations must be "
                                               "float16, float32 or float64"):
        study.add("a", bad)


def test_other_things_than_arrays_are_an_error():
    with pytest.raises(convergent.Error, match="expected a numpy array or a torch tensor"):
        convergent.Study(["a", "b"]).add("a", [[1.0, 2.0]])


def test_a_net_registered_twice_is_an_error():
    with pytest.raises(convergent.Error, match="net 'a' is registered twice"):
        convergent.Study(["a", "b", "a"])


def test_names_that_would_meet_in_file_names_are_an_error():
    with pytest.raises(convergent.Error, match="would both write files named"):
        convergent.Study(["a", "b", "a_b"])
    with pytest.raises(convergent.Error, match="must use only letters"):
        convergent.Study(["a/b", "c"])


def test_a_string_of_names_is_refused():
    # list("ab") would be the nets 'a' and 'b'.
    with pytest.raises(TypeError, match="a list of net names, not the string 'ab'"):
        convergent.Study("ab")


def test_an_unknown_net_is_an_error():
    with pytest.raises(convergent.Error, match="unknown net 'c'; the study's nets are a, b"):
        convergent.Study(["a", "b"]).add("c", np.ones((3, 2)))


def test_batches_of_different_sizes_are_an_error_and_not_added():
    a, b = planted(np.random.default_rng(6))
    study = convergent.Study(["a", "b"])
    study.add("a", a[:100])
    with pytest.raises(convergent.Error, match="net 'b' batch 0: 99 sample rows, but a's batch of the same index has 100"):
        study.add("b", b[:99])
    study.add("b", b[:100])  # the refused batch left nothing behind
    check_moments(study.moments(), a[:100], b[:100])


def test_nets_with_different_sample_counts_are_an_error_at_moments():
    a, b = planted(np.random.default_rng(7))
    study = convergent.Study(["a", "b"])
    add_in_batches(study, {"a": a, "b": b}, batch=100)
    study.add("a", a[:50])
    assert study.pending() == {"a": 1, "b": 0}
    with pytest.raises(convergent.Error, match=r"not given the same batches: a 7 \(650 sample rows\), b 6 \(600"):
        study.moments()


def test_a_batch_of_another_shape_than_the_first_is_an_error():
    study = convergent.Study(["a", "b"])
    study.add("a", np.ones((4, 3)))
    with pytest.raises(convergent.Error, match=r"shape \(4, 5\) float64, but its first batch was \(4, 3\) float64"):
        study.add("a", np.ones((4, 5)))
    with pytest.raises(convergent.Error, match="float32, but its first batch was"):
        study.add("a", np.ones((4, 3), np.float32))


def test_non_finite_values_are_an_error_or_skipped():
    a, b = planted(np.random.default_rng(8))
    a = a.copy()
    a[130, 2] = np.nan
    study = convergent.Study(["a", "b"])
    study.add("a", a[:100])
    study.add("b", b[:100])
    study.add("a", a[100:])
    with pytest.raises(convergent.Error, match="net 'a' batch 1: NaN or infinity at sample row 30 of the batch, unit 2"):
        study.add("b", b[100:])
    with pytest.raises(convergent.Error, match="stopped at an earlier error"):
        study.moments()
    study = convergent.Study(["a", "b"], skip_nonfinite=True)
    add_in_batches(study, {"a": a, "b": b}, batch=100)
    m = study.moments()
    keep = np.isfinite(a).all(1)
    assert m.skipped_rows == 1
    check_moments(m, a[keep], b[keep])


def fake_cuda_capsule(array, device):
    """A DLPack capsule describing `array`'s memory as if it lay on CUDA device `device` (kDLCUDA), for
    the refusal path on machines without a GPU; its data is never read."""
    class DLTensor(ctypes.Structure):
        _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32),
                    ("ndim", ctypes.c_int32), ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                    ("lanes", ctypes.c_uint16), ("shape", ctypes.POINTER(ctypes.c_int64)),
                    ("strides", ctypes.c_void_p), ("byte_offset", ctypes.c_uint64)]

    class DLManagedTensor(ctypes.Structure):
        _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]

    shape = (ctypes.c_int64 * array.ndim)(*array.shape)
    managed = DLManagedTensor(DLTensor(array.ctypes.data, 2, device, array.ndim, 2, array.itemsize * 8, 1, shape,
                                       None, 0), None, None)
    new_capsule = ctypes.pythonapi.PyCapsule_New
    new_capsule.restype, new_capsule.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return new_capsule(ctypes.addressof(managed), b"dltensor", None), (managed, shape, array)


def test_a_cuda_tensor_is_refused_by_a_study_on_the_cpu():
    study = convergent.Study(["a", "b"], backend="cpu")
    assert study.device == -1
    x = np.ones((4, 3), np.float32)
    capsule, keep = fake_cuda_capsule(x, 1)
    with pytest.raises(convergent.Error, match=r"net 'a' batch 0: a CUDA tensor on device 1, but the study computes "
                                               r"on cpu .*backend='cuda'.*tensor.cpu\(\)"):
        study._core.add_dlpack("a", capsule)
    assert study.pending() == {"a": 0, "b": 0}  # not added


def cuda_study_possible():
    return torch.cuda.is_available() and any(b["kind"] == "cuda" and b["usable"] for b in convergent.backends())


@pytest.mark.skipif(not cuda_study_possible(), reason="needs a CUDA device and the CUDA backend built")
def test_cuda_tensors_are_read_in_place_on_the_device(monkeypatch):
    # No host copy on the Python side (Tensor.cpu and Tensor.numpy would be one); the C++ side reads the
    # device pointer in place (tests/test_conformance.cpp: DeviceResidentBlocksAreReadInPlace).
    monkeypatch.setattr(torch.Tensor, "cpu", lambda *_: pytest.fail("a CUDA tensor was copied to the host"))
    monkeypatch.setattr(torch.Tensor, "numpy", lambda *_: pytest.fail("a CUDA tensor was copied to the host"))
    rng = np.random.default_rng(20)
    a = rng.standard_normal((64, 6, 3, 3)).astype(np.float32)
    b = (np.maximum(np.einsum("nchw,cd->ndhw", a, rng.standard_normal((6, 4))), 0)).astype(np.float16)
    study = convergent.Study(["a", "b"], backend="cuda")
    assert study.device == 0
    ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b.transpose(0, 2, 3, 1).copy()).cuda()
    for k in range(0, 64, 16):
        study.add("a", ta[k:k + 16] * 1.0)  # made on torch's stream just before: add() waits for it
        study.add("b", tb[k:k + 16].permute(0, 3, 1, 2))  # a strided NCHW view of NHWC memory
    rows = lambda x: np.asarray(x, np.float64).transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
    check_moments(study.moments(), rows(a), rows(b))


def test_dead_units_have_zero_correlation():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((200, 3))
    a[:, 1] = 4.0
    study = convergent.Study(["a", "b"])
    study.add("a", a)
    study.add("b", rng.standard_normal((200, 2)))
    m = study.moments()
    assert list(m.dead) == [False, True, False, False, False]
    assert np.all(m.correlation[1] == 0) and np.all(m.correlation[:, 1] == 0)


def test_the_gil_is_released_during_accumulation():
    # While one thread is inside add(), another runs Python: its counter moves during the call. With the
    # GIL held for the whole call it could not move at all, so this fails whatever the machine's speed;
    # a few tries cover a scheduler that happens not to run the other thread during one call.
    rng = np.random.default_rng(10)
    a = rng.standard_normal((20000, 256)).astype(np.float32)
    b = rng.standard_normal((20000, 256)).astype(np.float32)
    counter, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    moved = []
    try:
        for _ in range(10):
            study = convergent.Study(["a", "b"], threads=1)
            study.add("a", a)
            before = counter[0]
            study.add("b", b)  # this call accumulates both
            moved.append(counter[0] - before)
            if moved[-1] > 0:
                break
    finally:
        stop.set()
        spinner.join()
    assert moved[-1] > 0, f"no Python ran during accumulation in {len(moved)} tries: the GIL is held"


def test_two_threads_adding_to_one_study_give_every_batch():
    rng = np.random.default_rng(11)
    a, b = planted(rng, n=4000)
    study = convergent.Study(["a", "b"])
    lock = threading.Lock()
    chunks = iter(range(0, 4000, 100))

    def work():
        while True:
            with lock:  # a batch's two nets must be added in the same order as the other's
                k = next(chunks, None)
                if k is None:
                    return
                study.add("a", a[k:k + 100])
                study.add("b", b[k:k + 100])

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check_moments(study.moments(), a, b)


def run_cli(cli, args):
    done = subprocess.run([cli, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("layout", ["channels-first", "channels-last"])
def test_save_writes_what_the_cli_writes_on_the_same_inputs(cli, tmp_path, layout):
    rng = np.random.default_rng(12)
    a = rng.standard_normal((40, 6, 3, 3)).astype(np.float32)
    b = (np.maximum(np.einsum("nchw,cd->ndhw", a, rng.standard_normal((6, 5))), 0) +
         0.2 * rng.standard_normal((40, 5, 3, 3))).astype(np.float32)
    if layout == "channels-last":
        a, b = a.transpose(0, 2, 3, 1).copy(), b.transpose(0, 2, 3, 1).copy()
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    analyses = "sparse_prediction,reliability,mean_distributions,linear_cka,cca,svcca,pwcca,procrustes"
    run_cli(cli, ["align", f"a={tmp_path / 'a.npy'}", f"b={tmp_path / 'b.npy'}", "--out", str(tmp_path / "cli"),
                  "--layout", layout, "--backend", "cpu", "--clusters", "2", "--seed", "3", "--analyses", analyses])
    study = convergent.Study(["a", "b"], layout=layout)
    add_in_batches(study, {"a": a, "b": torch.from_numpy(b)}, batch=9)
    study.save(tmp_path / "py", clusters=2, seed=3, analyses=analyses)
    cli_out, py_out = tmp_path / "cli", tmp_path / "py"
    names = sorted(p.name for p in cli_out.iterdir())
    assert names == sorted(p.name for p in py_out.iterdir())
    # The batches differ (9 inputs here, the CLI's own there), so statistics agree to float32 rounding of
    # the products (COV_RTOL); what follows from them (matchings, clusters) is the same.
    for name in names:
        if name.endswith(".npy"):
            np.testing.assert_allclose(np.load(py_out / name), np.load(cli_out / name), rtol=0, atol=1e-5)
        elif name.endswith(".csv") and not name.startswith("sparse"):
            assert (py_out / name).read_text().splitlines()[0] == (cli_out / name).read_text().splitlines()[0]
    cli_summary = json.loads((cli_out / "summary.json").read_text())
    py_summary = json.loads((py_out / "summary.json").read_text())
    assert set(cli_summary) == set(py_summary)
    assert py_summary["samples"] == cli_summary["samples"] == 40 * 9
    for net_py, net_cli in zip(py_summary["nets"], cli_summary["nets"]):
        assert net_py["shape"] == net_cli["shape"] and net_py["dtype"] == net_cli["dtype"]
        assert net_py["path"] == "(python)"
        np.testing.assert_allclose(net_py["mean"], net_cli["mean"], rtol=1e-12)
        np.testing.assert_allclose(net_py["std"], net_cli["std"], rtol=COV_RTOL)
    for p_py, p_cli in zip(py_summary["pairs"], cli_summary["pairs"]):
        assert p_py["matching"]["pairs"] == p_cli["matching"]["pairs"]
        assert abs(p_py["matching"]["mean_corr"] - p_cli["matching"]["mean_corr"]) < 1e-6
        assert abs(p_py["semi_matching"]["mean_corr"] - p_cli["semi_matching"]["mean_corr"]) < 1e-6
    for name in ["matching_a_b.csv", "semi_a_b.csv", "clusters.csv"]:
        py_rows = [r.split(",")[:2] for r in (py_out / name).read_text().splitlines()]
        cli_rows = [r.split(",")[:2] for r in (cli_out / name).read_text().splitlines()]
        assert py_rows == cli_rows, name
    assert py_summary["spectral"]["k"] == cli_summary["spectral"]["k"] == 2
    assert abs(py_summary["linear_cka"][0]["value"] - cli_summary["linear_cka"][0]["value"]) < 1e-6


def test_analyse_returns_what_save_writes(tmp_path):
    a, b = planted(np.random.default_rng(13))
    study = convergent.Study(["a", "b"])
    add_in_batches(study, {"a": a, "b": b})
    results = study.analyse(clusters="none", analyses="linear_cka,reliability")
    study.save(tmp_path / "out", clusters="none", analyses="linear_cka,reliability", report=False)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert results.summary.pop("run")["settings"] == saved.pop("run")["settings"]  # seconds differ
    assert results.summary == saved
    assert saved["nets"][0]["path"] == "(python)"
    np.testing.assert_array_equal(results.arrays["corr_a_b"], np.load(tmp_path / "out" / "corr_a_b.npy"))
    _, _, _, corr = reference(a, b)
    np.testing.assert_allclose(results.arrays["corr_a_b"], corr[:5, 5:], atol=COV_RTOL)
    matching = results.tables["matching_a_b"]
    assert list(matching) == ["unit_a", "unit_b", "corr"] and len(matching["unit_a"]) == 4
    assert "linear_cka" in results.summary and "sparse_prediction" not in results.summary


def test_save_honours_the_matrix_options_as_the_cli_does(cli, tmp_path):
    a, b = planted(np.random.default_rng(14), n=300)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    options = ["--clusters", "none", "--analyses", "linear_cka", "--no-report", "--save-matrices", "pairs",
               "--matrix-dtype", "float32"]
    run_cli(cli, ["align", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--out", str(tmp_path / "cli"),
                  "--backend", "cpu", *options])
    study = convergent.Study(["a", "b"])
    add_in_batches(study, {"a": a, "b": b})
    study.save(tmp_path / "py", clusters="none", analyses="linear_cka", report=False, save_matrices="pairs",
               matrix_dtype="float32")
    names = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "py").iterdir())
    assert [n for n in names if n.endswith(".npy")] == ["corr_a_b.npy"]  # no per-net matrices with 'pairs'
    corr = np.load(tmp_path / "py" / "corr_a_b.npy")
    assert corr.dtype == np.float32
    # float32 storage rounds to 2^-24 relative; the statistics themselves agree to COV_RTOL.
    np.testing.assert_allclose(corr, np.load(tmp_path / "cli" / "corr_a_b.npy"), rtol=0, atol=COV_RTOL)
    np.testing.assert_allclose(corr, reference(a, b)[3][:5, 5:], rtol=0, atol=COV_RTOL)
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("py", "cli")]
    assert summaries[0]["matrices"] == summaries[1]["matrices"]
    with pytest.raises(convergent.Error, match="float16"):
        study.save(tmp_path / "bad", matrix_dtype="float16")
    with pytest.raises(convergent.Error, match="some"):
        study.save(tmp_path / "bad", save_matrices="some")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("binning", ["quantile", "equal-width"])
def test_mutual_information_from_replayed_batches_equals_the_cli(cli, tmp_path, binning):
    # Bin edges (exact order statistics, or numpy.histogram's edges from min and max) and joint counts are
    # exact, so MI is the same bit for bit whatever the batches: Python's replay and the CLI's file reads.
    a, b = planted(np.random.default_rng(15), n=400, dtype=np.float32)
    b[:, 0] = np.maximum(b[:, 0], 1.0)  # exact zeros (the quantile scheme's own bin) in the other units only
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    options = dict(clusters="none", analyses="mutual_information", report=False)
    run_cli(cli, ["align", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--out", str(tmp_path / "cli"),
                  "--backend", "cpu", "--clusters", "none", "--analyses", "mutual_information", "--no-report",
                  "--mi-binning", binning, "--mi-bins", "7"])
    study = convergent.Study(["a", "b"])
    add_in_batches(study, {"a": a, "b": b}, batch=64)
    passes = []

    def replay():
        passes.append(1)
        for k in range(0, 400, 150):  # other batch sizes than the first time, torch tensors for b
            yield {"a": a[k:k + 150], "b": torch.from_numpy(b[k:k + 150])}

    study.save(tmp_path / "py", replay=replay, mi_binning=binning, mi_bins=7, **options)
    names = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "py").iterdir())
    assert "mi_mm_a_b.npy" in names and "mi_matching_a_b.csv" in names
    for name in names:
        if name.startswith(("mi", "nmi")) and name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(tmp_path / "py" / name), np.load(tmp_path / "cli" / name), name)
        elif name.startswith("mi") and name.endswith(".csv"):
            assert (tmp_path / "py" / name).read_text() == (tmp_path / "cli" / name).read_text(), name
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("py", "cli")]
    assert summaries[0]["mutual_information"] == summaries[1]["mutual_information"]
    assert len(passes) == summaries[0]["mutual_information"]["passes"] >= 1


def test_mutual_information_needs_the_same_batches_again(tmp_path):
    a, b = planted(np.random.default_rng(16), n=200)
    study = convergent.Study(["a", "b"])
    add_in_batches(study, {"a": a, "b": b})
    with pytest.raises(convergent.Error, match="mutual_information needs further passes.*pass replay"):
        study.save(tmp_path / "x", analyses="mutual_information", report=False)
    with pytest.raises(convergent.Error, match="replay.. gave 100 sample rows, but the moments pass read 200"):
        study.save(tmp_path / "x", analyses="mutual_information", report=False,
                   replay=lambda: iter([{"a": a[:100], "b": b[:100]}]))
    with pytest.raises(convergent.Error, match="gave more than the 200 sample rows"):
        study.save(tmp_path / "x", analyses="mutual_information", report=False,
                   replay=lambda: iter([{"a": a, "b": b}, {"a": a[:1], "b": b[:1]}]))
    with pytest.raises(convergent.Error, match="replayed batch of net 'b': shape \\(200, 3\\) float64, but the "
                                               "moments pass had \\(128, 4\\) float64"):
        study.save(tmp_path / "x", analyses="mutual_information", report=False,
                   replay=lambda: iter([{"a": a, "b": b[:, :3]}]))
    assert not (tmp_path / "x").exists()
    # 'all' without replay: everything but mutual information, which summary.json lists as skipped.
    study.save(tmp_path / "all", clusters="none", report=False)
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert [s["name"] for s in summary["skipped_analyses"]] == ["mutual_information"]
    assert "linear_cka" in summary and "mutual_information" not in summary


def test_bad_analysis_options_are_errors_before_any_work(tmp_path):
    study = convergent.Study(["a", "b"])
    with pytest.raises(convergent.Error, match="mutual_information"):
        study.save(tmp_path / "x", analyses="mutual_information")
    with pytest.raises(convergent.Error, match="--clusters 'three'"):
        study.save(tmp_path / "x", clusters="three")
    with pytest.raises(convergent.Error, match="no batches were added"):
        study.save(tmp_path / "x", report=False)
    # As the CLI's --seed: pybind11 refused these with 'incompatible function arguments' of AlignSettings.
    for seed in [-1, 2**64, 1.5, True]:
        with pytest.raises(ValueError, match=f"seed: a whole number from 0 to 2\\*\\*64 - 1, not {seed!r}"):
            study.save(tmp_path / "x", seed=seed)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


class Numpy2Float(float):
    """A float whose repr is numpy 2's for np.float64: not a number's text."""

    def __repr__(self):
        return f"np.float64({float(self)})"


def test_lasso_alphas_are_read_as_numbers_whatever_their_repr():
    rng = np.random.default_rng(4)
    study = convergent.Study(["a", "b"])
    a, b = planted(rng)
    study.add("a", a)
    study.add("b", b)
    alphas = [Numpy2Float(0.3), Numpy2Float(0.01)]
    summary = study.analyse(analyses="sparse_prediction", lasso_alpha=alphas, clusters="none").summary
    assert summary["sparse_prediction"]["alphas"] == [0.3, 0.01]


def test_match_finds_the_best_assignment_and_equals_the_cli(cli, tmp_path):
    # The oracle: every injective map of A's 4 units into B's 5, by brute force.
    rng = np.random.default_rng(17)
    corr = np.tanh(rng.standard_normal((4, 5)))
    best = max(itertools.permutations(range(5), 4), key=lambda cols: sum(corr[r, c] for r, c in enumerate(cols)))
    got = convergent.match(corr)
    assert got["matching"].tolist() == [[r, c] for r, c in enumerate(best)]
    assert got["semi_match"].tolist() == corr.argmax(1).tolist()
    assert got["matching_mean_corr"] == pytest.approx(np.mean([corr[r, c] for r, c in enumerate(best)]), abs=1e-12)
    assert got["semi_mean_corr"] == pytest.approx(corr.max(1).mean(), abs=1e-12)
    np.save(tmp_path / "corr.npy", corr)
    run_cli(cli, ["match", str(tmp_path / "corr.npy"), "--out", str(tmp_path / "cli")])
    got = convergent.match(corr.T.copy().T)  # a Fortran-order view is copied to C order
    rows = (tmp_path / "cli" / "matching_a_b.csv").read_text().splitlines()[1:]
    assert [[int(v) for v in r.split(",")[:2]] for r in rows] == got["matching"].tolist()
    pair = json.loads((tmp_path / "cli" / "summary.json").read_text())["pairs"][0]
    assert pair["matching"]["mean_corr"] == got["matching_mean_corr"]
    assert pair["semi_matching"]["mean_corr"] == got["semi_mean_corr"]
    with pytest.raises(convergent.Error, match=r"match: 1.5.* at row 1, column 2 is not a correlation"):
        corr[1, 2] = 1.5
        convergent.match(corr)
    with pytest.raises(convergent.Error, match="expected a 2-D correlation matrix"):
        convergent.match(corr[0])
    # As `convergent match` refuses an empty .npy: not NaN means (0 x 5), nor an internal message (5 x 0).
    for shape in [(0, 5), (5, 0)]:
        with pytest.raises(convergent.Error, match=f"match: a {shape[0]} x {shape[1]} matrix has no entries"):
            convergent.match(np.zeros(shape))


def test_stats_shards_from_python_merge_with_the_cli(cli, tmp_path):
    rng = np.random.default_rng(18)
    a = rng.standard_normal((30, 4, 2, 2)).astype(np.float32)
    b = (a[:, :3] ** 2 + rng.standard_normal((30, 3, 2, 2))).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    for first, end in [(0, 12), (12, 30)]:  # two Python processes' shards, saved in another order
        study = convergent.Study(["a", "b"])
        add_in_batches(study, {"a": a[first:end], "b": b[first:end]}, batch=5)
        study.save_stats(tmp_path / f"s{first}.npz", first_input=first, total_inputs=30)
    run_cli(cli, ["merge", str(tmp_path / "s12.npz"), str(tmp_path / "s0.npz"), "--out", str(tmp_path / "py.npz")])
    run_cli(cli, ["stats", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--out", str(tmp_path / "cli.npz")])
    py, whole = np.load(tmp_path / "py.npz"), np.load(tmp_path / "cli.npz")
    py_header, cli_header = json.loads(py["header.json"]), json.loads(whole["header.json"])
    for net in py_header["study"]["nets"] + cli_header["study"]["nets"]:
        net.pop("path")  # '(python)' and the file
    assert py_header["study"] == cli_header["study"] and py_header["inputs"] == cli_header["inputs"] == [0, 30]
    assert py_header["samples"] == 30 * 4
    # Other batches, the same statistics: means are float64 sums (MEAN_RTOL of their scale).
    np.testing.assert_allclose(py["mean"], whole["mean"], rtol=0, atol=MEAN_RTOL * np.abs(whole["mean"]).max())
    run_cli(cli, ["align", "--from-stats", str(tmp_path / "py.npz"), "--out", str(tmp_path / "out"), "--no-report",
                  "--clusters", "none", "--analyses", "linear_cka"])
    corr = np.load(tmp_path / "out" / "corr_a_b.npy")
    np.testing.assert_allclose(corr, reference(np.moveaxis(a, 1, -1).reshape(-1, 4),
                                               np.moveaxis(b, 1, -1).reshape(-1, 3))[3][:4, 4:], atol=COV_RTOL)
    with pytest.raises(convergent.Error, match="hold 18 inputs, which do not fit at input 20 of a study of 30"):
        study.save_stats(tmp_path / "bad.npz", first_input=20, total_inputs=30)
    assert not (tmp_path / "bad.npz").exists()


def test_ctrl_c_during_save_stops_it_and_writes_nothing(tmp_path):
    """SIGINT while save works without the GIL: KeyboardInterrupt at its next phase or staged file, and no
    output directory (before, the save ran to its end, wrote everything, and only then did Python raise)."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4000, 512)).astype(np.float32)
    b = (a @ rng.standard_normal((512, 512)) * 0.1 + rng.standard_normal((4000, 512))).astype(np.float32)
    study = convergent.Study(["a", "b"])
    study.add("a", a)
    study.add("b", b)
    # Python's own Ctrl-C handler, whatever this process inherited: a shell starts background jobs with
    # SIGINT ignored, and Python then installs none.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    # 0.05 s into a save that takes about 0.6 s on a 2-core machine (the lasso of 512 units from 512).
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            study.save(tmp_path / "out", analyses="sparse_prediction", clusters="none", report=False)
    finally:
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGINT, previous)
    assert list(tmp_path.iterdir()) == []
