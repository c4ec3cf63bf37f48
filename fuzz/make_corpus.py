#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fuzz/corpus/<target>/ (valid files from numpy itself, and
broken ones made from them by hand). The files are committed; this script documents how they were made and
remakes them: python3 fuzz/make_corpus.py (needs numpy). Every seed is at most 4 KiB (-max_len of the tests).
"""
import io
import pathlib
import struct

import numpy as np

root = pathlib.Path(__file__).resolve().parent / "corpus"


def npy_bytes(array, version=None, fortran=None):
    buffer = io.BytesIO()
    if version is None:
        np.save(buffer, array if fortran is None else (np.asfortranarray(array) if fortran else np.ascontiguousarray(array)))
    else:
        np.lib.format.write_array(buffer, np.asfortranarray(array) if fortran else array, version=version)
    return buffer.getvalue()


def raw_npy(header_text, data, version=1, align=64):
    """An .npy file with a header dictionary as given (not checked), padded the way numpy pads."""
    text = header_text.encode("latin-1")
    prefix = 10 if version == 1 else 12
    total = -(-(prefix + len(text) + 1) // align) * align
    text += b" " * (total - prefix - len(text) - 1) + b"\n"
    length = struct.pack("<H", len(text)) if version == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + length + text + data


def save(target, name, data):
    assert len(data) <= 4096, (name, len(data))
    folder = root / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


rng = np.random.default_rng(14)

# --- npy_reader: activation files as align reads them -------------------------------------------------
shapes = {"2d": (6, 3), "3d": (2, 3, 4), "4d": (2, 3, 2, 2)}
for dtype in ("f2", "f4", "f8"):
    for order in ("<", ">"):
        for fortran in (False, True):
            for rank, shape in shapes.items():
                a = rng.standard_normal(shape).astype(order + dtype)
                save("npy_reader", f"valid_{rank}_{'be' if order == '>' else 'le'}_{dtype}_{'F' if fortran else 'C'}.npy",
                     npy_bytes(a, fortran=fortran))
a = rng.standard_normal((8, 4)).astype("<f4")
save("npy_reader", "valid_v2.npy", npy_bytes(a, version=(2, 0)))
save("npy_reader", "valid_v3.npy", npy_bytes(a, version=(3, 0)))
with_specials = a.copy()
with_specials[2, 1] = np.nan
with_specials[5, 3] = np.inf
save("npy_reader", "nonfinite_f4.npy", npy_bytes(with_specials))
half = np.array([[0.0, 6e-8, 65504.0], [-6e-5, 1.0, -65504.0], [np.inf, 2.0, 3.0], [1.0, -np.inf, 0.5]], "<f2")
save("npy_reader", "float16_extremes.npy", npy_bytes(half))
dead = np.ones((7, 3), "<f8")
dead[:, 1] = rng.standard_normal(7)
dead[3, 2] = 1 + 1e-12
save("npy_reader", "dead_units_f8.npy", npy_bytes(dead))
big = (rng.standard_normal((6, 2)) * 1e300).astype("<f8")
big[:, 1] += 1e300
save("npy_reader", "huge_offsets_f8.npy", npy_bytes(big))
six = np.arange(24, dtype="<f4").reshape(6, 4).tobytes()
for name, header, data in [
    ("native_eq.npy", "{'descr': '=f4', 'fortran_order': False, 'shape': (6, 4), }", six),
    ("native_bar.npy", "{'descr': '|f4', 'fortran_order': False, 'shape': (6, 4), }", six),
    ("py2_long_dims.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (6L, 4L), }", six),
    ("double_quotes.npy", '{"descr": "<f4", "fortran_order": False, "shape": (6, 4)}', six),
    ("zero_rows.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }", b""),
    ("zero_units.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (6, 0), }", b""),
    ("zero_with_huge.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 9223372036854775807, 4611686018427387904), }", b""),
    ("one_sample.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4), }", six[:16]),
    ("shape_1d.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (24,), }", six),
    ("shape_5d.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3, 2, 2), }", six),
    ("shape_0d.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", six[:4]),
    ("shape_not_tuple.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (24), }", six),
    ("shape_np_int.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (np.int64(6), 4), }", six),
    ("shape_negative.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (-6, 4), }", six),
    ("shape_overflow.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", six),
    ("shape_too_long.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 4), }", six),
    ("descr_int.npy", "{'descr': '<i4', 'fortran_order': False, 'shape': (6, 4), }", six),
    ("descr_structured.npy", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6, 4), }", six),
    ("descr_escape.npy", "{'descr': '<f\\x34', 'fortran_order': False, 'shape': (6, 4), }", six),
    ("key_twice.npy", "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6, 4), }", six),
    ("key_unknown.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (6, 4), 'extra': 1}", six),
    ("key_missing.npy", "{'descr': '<f4', 'shape': (6, 4), }", six),
    ("fortran_int.npy", "{'descr': '<f4', 'fortran_order': 0, 'shape': (6, 4), }", six),
    ("unterminated.npy", "{'descr': '<f4, 'fortran_order': False, 'shape': (6, 4), }", six),
    ("no_brace.npy", "'descr': '<f4', 'fortran_order': False, 'shape': (6, 4)", six),
    ("trailing_text.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (6, 4), } x", six),
    ("data_short.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (6, 4), }", six[:-4]),
    ("data_long.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (6, 4), }", six + b"\0" * 4),
]:
    save("npy_reader", name, raw_npy(header, data))
# Padded to 3 bytes instead of 64: the float64 data starts off an 8-byte boundary.
save("npy_reader", "unaligned_f8.npy", raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }", six, align=3))
save("npy_reader", "version_4.npy", b"\x93NUMPY\x04\x00" + npy_bytes(a)[8:])
save("npy_reader", "header_cut.npy", npy_bytes(a)[:40])
save("npy_reader", "magic_only.npy", b"\x93NUMPY")
save("npy_reader", "no_magic.npy", b"PK\x03\x04" + npy_bytes(a)[4:200])
save("npy_reader", "empty.npy", b"")
save("npy_reader", "v2_length_huge.npy", b"\x93NUMPY\x02\x00\xff\xff\xff\x7f{'descr'")

# --- match_matrix: correlation matrices for `convergent match` ------------------------------------------
for dtype in ("f2", "f4", "f8"):
    for order in ("<", ">"):
        for fortran in (False, True):
            for rows, cols in ((5, 5), (4, 7), (7, 3)):
                c = np.tanh(rng.standard_normal((rows, cols))).astype(order + dtype)
                save("match_matrix", f"corr_{rows}x{cols}_{'be' if order == '>' else 'le'}_{dtype}_{'F' if fortran else 'C'}.npy",
                     npy_bytes(c, fortran=fortran))
ties = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [-1.0, 1.0, 0.0]], "<f8")
save("match_matrix", "ties.npy", npy_bytes(ties))
save("match_matrix", "one_by_one.npy", npy_bytes(np.array([[1.0]], "<f8")))
save("match_matrix", "zeros.npy", npy_bytes(np.zeros((4, 4), "<f4")))
outside = np.tanh(rng.standard_normal((3, 3)))
outside[1, 2] = 1.0000001
save("match_matrix", "entry_above_one.npy", npy_bytes(outside))
nan = outside.copy()
nan[0, 0] = np.nan
save("match_matrix", "entry_nan.npy", npy_bytes(nan))
save("match_matrix", "shape_3d.npy", npy_bytes(np.zeros((2, 2, 2), "<f4")))
save("match_matrix", "shape_1d.npy", npy_bytes(np.zeros(4, "<f4")))
save("match_matrix", "no_rows.npy", npy_bytes(np.zeros((0, 3), "<f4")))
save("match_matrix", "header_cut.npy", npy_bytes(ties)[:30])
# --- command_line: arguments after the program name, NUL-separated ---------------------------------------
command_lines = {
    "align_minimal": ["align", "a.npy", "b.npy", "--out", "out"],
    "align_named": ["align", "net1=x/a.npy", "net2=y/b.npy", "c.npy", "--out", "o", "--layout", "nhwc"],
    "align_everything": ["align", "a.npy", "b.npy", "--out", "o", "--batch-rows", "4096", "--threads", "2",
                         "--backend", "cpu", "--precision", "fp32", "--skip-nonfinite", "--dead-threshold", "0.001",
                         "--clusters", "7", "--affinity", "shifted", "--seed", "3", "--analyses",
                         "linear_cka,cca,mutual_information", "--lasso-alpha", "0.01,0.1", "--mi-binning",
                         "equal-width", "--mi-bins", "16", "--mi-base", "e", "--mi-memory", "64", "--no-report"],
    "align_from_stats": ["align", "--from-stats", "s.npz", "--out", "o", "--analyses", "all"],
    "align_name_clash": ["align", "a_b=1.npy", "a=2.npy", "b=3.npy", "--out", "o"],
    "align_bad_name": ["align", ".hidden=1.npy", "b.npy", "--out", "o"],
    "align_bad_clusters": ["align", "a.npy", "b.npy", "--out", "o", "--clusters", "5abc"],
    "align_bad_alpha": ["align", "a.npy", "b.npy", "--out", "o", "--lasso-alpha", "0.1,,-3,nan"],
    "align_bad_analyses": ["align", "a.npy", "b.npy", "--out", "o", "--analyses", "cka,,mutual_information,"],
    "align_range_errors": ["align", "a.npy", "b.npy", "--out", "o", "--threads", "-1", "--mi-bins", "1"],
    "stats_rows": ["stats", "a.npy", "b.npy", "--rows", "0:25000", "--out", "s.npz"],
    "stats_bad_rows": ["stats", "a.npy", "b.npy", "--rows", "25000:0x", "--out", "s.npz"],
    "merge": ["merge", "s1.npz", "s2.npz", "--out", "m.npz"],
    "report": ["report", "conv1=out/conv1", "out/conv2", "--out", "r.html", "--max-image-side", "64"],
    "match": ["match", "corr.npy", "--out", "o", "--name-a", "n1", "--name-b", "n2", "--threads", "1"],
    "match_same_names": ["match", "corr.npy", "--out", "o", "--name-a", "n", "--name-b", "n"],
    "help": ["align", "--help"],
    "version": ["--version"],
    "unknown_option": ["align", "a.npy", "--frobnicate", "--out"],
    "empty": [],
}
for name, arguments in command_lines.items():
    save("command_line", name, b"\0".join(a.encode() for a in arguments))

print("wrote", sum(1 for _ in root.rglob("*") if _.is_file()), "seeds under", root)
