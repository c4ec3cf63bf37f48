"""convergent: do different neural networks learn the same features? (Li et al., ICLR 2016)

Accumulate the statistics of several nets' activations batch by batch, straight from numpy arrays or
PyTorch tensors (no activations on disk), then correlate, match and analyse their units as
``convergent align`` does::

    study = convergent.Study(["net1", "net2"])
    for x in loader:
        study.add("net1", net1_layer(x))   # (N, C), (N, C, L) or (N, C, H, W); channels-last with layout=
        study.add("net2", net2_layer(x))
    m = study.moments()                    # means, stds, covariance, correlation as numpy arrays
    results = study.analyse()              # the summary.json of align as a dict, matrices as numpy arrays
    study.save("out/conv1")                # what align writes, report.html included
    convergent.report(["out/conv1", "out/conv2"], out="out/report.html")   # convergent report: all layers

``convergent.hooks.run_models`` feeds a study from forward hooks on several ``torch.nn.Module``\\ s.
Every error is a ``convergent.Error`` carrying the C++ library's message.
"""

import csv
import numbers
import os
import tempfile

import numpy as np

from ._core import Error, __version__
from . import _core

__all__ = ["Error", "Moments", "Results", "Study", "backends", "match", "report", "study_table", "__version__"]


def match(corr, threads=0):
    """``convergent match`` on a correlation matrix you already have (A's units as rows, B's as columns,
    values in [-1, 1]; any float dtype, copied to float64 C order when it is not). Returns a dict:
    ``semi_match`` ((rows,) int64: each A unit's most correlated B unit, ties to the lower index),
    ``matching`` ((min(rows, cols), 2) int64 pairs (unit_a, unit_b) in A's order: the one-to-one
    assignment maximising the total correlation, Li et al. 2016 section 3), ``semi_mean_corr``,
    ``matching_mean_corr``, ``matching_total_corr`` and ``same_assignment_fraction`` (share of A units
    whose semi-match is their match), as summary.json's pair entry states them. Raises ``Error`` for
    another rank, no row or no column, NaN or a value outside [-1, 1]."""
    return _core.match(corr, threads)


def backends():
    """The compiled backends: a list of dicts with ``kind`` ('cpu', 'cuda'), ``compiled``, ``usable`` and
    ``detail`` (device name, or why it is not usable)."""
    return _core.backends()


def study_table(layers):
    """The paper's table (Li et al. 2016, table 1 and figure 3's figures) over saved layers, as text, as
    ``convergent report`` prints it: per layer the mean correlation of semi-matched and one-to-one matched
    units for the first pair of same-size nets and over all such pairs, the share of identical
    assignments, linear CKA and the share of units in mixed clusters. ``layers``: {layer name: directory
    written by ``Study.save``} (in order), or a list of directories (named by their last component).
    Raises ``Error`` for a directory that holds no align outputs."""
    return _core.study_table(_layer_arguments(layers))


def report(layers, out=None, title=None, max_image_side=512):
    """``convergent report``: one self-contained report.html over the layers of a study, each layer a
    finished align output (``Study.save`` or the CLI's ``align --out``). The page holds the paper's table
    and figure-3 curves across layers (Li et al. 2016), then per layer the correlation matrix in
    spectral-cluster order, the sorted mean activations and sparse prediction against alpha, and per pair
    of nets the sorted matching correlations, the between-net correlation matrix with B permuted by the
    one-to-one matching, and mutual information against correlation; charts whose analysis did not run are
    left out. Vega is inlined (from Debian's libjs-vega, or $CONVERGENT_VEGA_DIR), so the file opens offline.

    ``layers``: in page order, a list of output directories (a layer is named by its directory's last
    component, or ``'NAME=DIR'``) and study manifests (JSON ``{"layers": [{"name": ..., "dir": ...}]}``,
    directories relative to it), as the CLI takes them; or {layer name: directory}. ``out``: the HTML file
    to write; ``None`` puts report.html beside a single layer (in its directory, or the manifest's) and is
    an error for several. ``title``: the page's title (``None``: 'convergent report'). ``max_image_side``:
    matrices with more units a side are drawn at this many pixels (16 to 8192), each pixel the entry of
    largest magnitude in its block of units.

    Returns the path written. The file is written under a temporary name and renamed when whole, so on
    error none is left. Raises ``Error`` with the CLI's message: for a path that is neither an output
    directory nor a manifest, or a directory without align's summary.json (naming it), for several layers
    without ``out``, when Vega is not found (``apt-get install libjs-vega``), and when ``out`` cannot be
    written."""
    return _core.report(_layer_arguments(layers), "" if out is None else os.fspath(out), title or "",
                        max_image_side)


def _layer_arguments(layers):
    """Layers as the CLI takes them: [NAME=]DIR or manifest paths, from a list, a dict {name: dir} or one
    path."""
    if isinstance(layers, (str, os.PathLike)):
        layers = [layers]
    if isinstance(layers, dict):
        return [f"{name}={os.fspath(d)}" for name, d in layers.items()]
    return [os.fspath(d) for d in layers]


class Moments:
    """The statistics of a study's concatenated units U = [units of net 1 | net 2 | ...] (DESIGN.md).

    Attributes: ``samples`` (sample rows accumulated; every (input, position) of a conv layer is one),
    ``skipped_rows`` (rows dropped for a NaN or infinity with ``skip_nonfinite``), ``nets`` (names),
    ``units`` (units per net), ``mean``, ``std`` (population, ddof = 0), ``min``, ``max`` (each (U,),
    float64, in activation units), ``covariance`` (U x U, population), ``correlation`` (U x U Pearson,
    dead units 0 everywhere, their diagonal included), ``dead`` ((U,) bool: constant, or std at most
    ``dead_threshold`` x (max - min)), ``backend`` (what computed them).
    """

    def __init__(self, values):
        for key, value in values.items():
            setattr(self, key, value)
        self.offsets = np.concatenate([[0], np.cumsum(self.units)]).astype(int)

    def units_of(self, net):
        """The slice of net ``net``'s units (by name) in the concatenated axis."""
        k = self.nets.index(net)
        return slice(int(self.offsets[k]), int(self.offsets[k + 1]))

    def block(self, matrix, a, b=None):
        """The block of a U x U matrix (``'correlation'`` or ``'covariance'``) between nets ``a`` (rows) and
        ``b`` (columns; ``a`` when not given)."""
        return getattr(self, matrix)[self.units_of(a), self.units_of(b or a)]


class Results:
    """What ``convergent align`` writes, read back: ``summary`` (summary.json as a dict: per net its
    mean, std and dead units, per pair the semi-matching and matching, and one section per analysis that
    ran, as the README describes), ``arrays`` (each .npy output by its name without '.npy', e.g.
    ``corr_a_b``: float64, A's units as rows) and ``tables`` (each .csv output by its name, a dict of
    columns as numpy arrays; empty cells are NaN)."""

    def __init__(self, directory):
        import json

        with open(os.path.join(directory, "summary.json")) as f:
            self.summary = json.load(f)
        self.arrays, self.tables = {}, {}
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if name.endswith(".npy"):
                self.arrays[name[:-4]] = np.load(path)
            elif name.endswith(".csv"):
                self.tables[name[:-4]] = _read_csv(path)

    def pair(self, a, b):
        """The ``pairs`` entry of summary.json for nets ``a`` and ``b``."""
        for p in self.summary["pairs"]:
            if (p["a"], p["b"]) == (a, b):
                return p
        raise KeyError((a, b))


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    columns = {}
    for k, name in enumerate(rows[0]):
        cells = [r[k] if k < len(r) else "" for r in rows[1:]]
        try:
            columns[name] = np.array([float(c) if c != "" else np.nan for c in cells])
        except ValueError:
            columns[name] = np.array(cells)
    return columns


def _is_torch_tensor(x):
    return type(x).__module__.startswith("torch") and hasattr(x, "__dlpack__")


def _host_array(x):
    """A numpy array of ``x``'s values: a view of a CPU tensor's memory, a copy of a CUDA tensor's."""
    return x.detach().cpu().numpy() if _is_torch_tensor(x) else x


class Study:
    """One study: the activations of one layer of several nets on the same inputs.

    ``nets``: the nets' names (letters, digits, '_', '-', '.'; they name output files, so names that would
    meet, such as 'a_b' beside the pair 'a', 'b', are refused). ``layout``: where the units sit in 3-D
    and 4-D activations, ``'channels-first'`` ((N, C, L), (N, C, H, W)) or ``'channels-last'`` ((N, L, C)
    as transformer tokens, (N, H, W, C)); every (input, position) is one sample of the C units, as in the
    CLI. ``backend``: 'auto' (CUDA when a device is usable, else the CPU), 'cpu' or 'cuda'. ``threads``:
    CPU threads (0: all cores).
    ``dead_threshold``: a unit is dead when constant or when its std is at most this share of its range.
    ``skip_nonfinite``: drop sample rows holding a NaN or infinity instead of raising. ``batch_rows``:
    rows per accumulation step (0: about 16 MiB of float32, as align's --batch-rows 0). ``precision``: 'fp32' (default), or the
    opt-in GPU tensor-core modes 'tf32' and 'bf16'.

    Raises ``Error`` for fewer than two nets, a name registered twice, bad names or options.
    """

    def __init__(self, nets, layout="channels-first", backend="auto", threads=0, dead_threshold=1e-6,
                 skip_nonfinite=False, batch_rows=0, precision="fp32"):
        if isinstance(nets, (str, bytes)):
            raise TypeError(f"Study(nets): a list of net names, not the string {nets!r} (it would name one net per "
                            "character)")
        self._core = _core.Study(list(nets), layout, backend, threads, dead_threshold, skip_nonfinite,
                                 batch_rows, precision)

    @property
    def nets(self):
        """The nets' names, in the order of the concatenated units."""
        return self._core.nets

    @property
    def backend(self):
        """The backend that computes, e.g. 'cpu (OpenBLAS, 2 threads)'."""
        return self._core.backend

    @property
    def device(self):
        """The CUDA device the study computes on (its CUDA tensors are read in place), or -1 for the CPU."""
        return self._core.device

    def add(self, name, activations):
        """Adds one batch of net ``name``'s activations: a numpy array or a PyTorch tensor of float16,
        float32 or float64, 2-D (inputs, units), 3-D or 4-D as ``layout`` says. The memory is read in place,
        strided views included (no copy); arrays with negative strides are refused (pass a copy). A CUDA
        tensor is read in place on the device by a study on the CUDA backend (``device`` 0), with no host
        copy, after the work queued on the tensor's current stream is done; a study on the CPU refuses it
        (pass ``tensor.cpu()``). Batches
        are matched by their order: the k-th batch of every net must hold the same inputs (the same sample
        rows, and the same number of inputs where both have positions). A batch is accumulated, with the
        GIL released, once every net has one; until then it is kept (a reference, not a copy).

        Raises ``Error`` for an unknown net, another dtype, rank or unit count than the net's first batch,
        a batch whose rows differ from another net's batch of the same index (the batch is then not
        added), a NaN or infinity (unless ``skip_nonfinite``), and a CUDA tensor on another device than the
        study's.
        """
        if _is_torch_tensor(activations):
            tensor = activations.detach()
            if tensor.is_cuda and tensor.device.index == self.device:
                import torch

                # The producer's kernels are queued on torch's stream, the accumulator reads on its own.
                torch.cuda.current_stream(tensor.device).synchronize()
            self._core.add_dlpack(name, tensor.__dlpack__())
        elif isinstance(activations, np.ndarray):
            self._core.add_numpy(name, activations)
        else:
            raise Error(f"net '{name}': expected a numpy array or a torch tensor, not {type(activations).__name__}")

    def pending(self):
        """Batches waiting per net for the other nets' batches of the same index, as a dict."""
        return dict(zip(self.nets, self._core.pending()))

    def moments(self):
        """The ``Moments`` of every batch added so far (correlation included). Raises ``Error`` when the
        nets were not given the same batches (a net with batches the others lack), or with fewer than 2
        samples."""
        return Moments(self._core.moments())

    def save(self, directory, clusters="auto", affinity="abs", seed=0, analyses="all",
             lasso_alpha="0.001,0.01,0.03,0.1,0.3", save_matrices="all", matrix_dtype="float64", report=True,
             title="", max_image_side=512, replay=None, mi_binning="quantile", mi_bins=10, mi_base="2",
             mi_memory_mib=2048):
        """Writes what ``convergent align --out DIRECTORY`` writes (summary.json, the CSV tables, the .npy
        matrices, report.html unless ``report=False``), under temporary names renamed when all is
        written; Ctrl-C stops it at its next phase or file with KeyboardInterrupt, and nothing is written.
        The options are align's: ``clusters`` (a number, 'auto' or 'none'), ``affinity`` ('abs',
        'positive', 'shifted'), ``seed``, ``analyses`` ('all', 'none' or a comma-separated list of
        sparse_prediction, reliability, mean_distributions, linear_cka, cca, svcca, pwcca, procrustes,
        mutual_information), ``lasso_alpha`` (comma-separated penalties), ``save_matrices`` ('all';
        'pairs': only the between-net blocks; 'none': summary.json and the CSV tables only),
        ``matrix_dtype`` ('float64', 'float32'), ``mi_binning`` ('quantile', 'equal-width'), ``mi_bins``,
        ``mi_base`` ('2' or 'bits', 'e' or 'nats'), ``mi_memory_mib``.

        Mutual information needs further passes over the activations (bin edges, then the joint counts):
        ``replay`` is a function returning an iterable of {net name: array} that gives the study's batches
        again in the same order (numpy arrays or torch tensors; batch sizes may differ from the first
        time); it is called once per pass. Without ``replay``, 'all' skips mutual information (summary.json's
        skipped_analyses says why) and naming it is an error.

        The nets' ``path`` in summary.json is '(python)', their ``shape`` the first batch's with all inputs
        counted. Raises ``ValueError`` for a seed that is not a whole number in [0, 2**64), ``Error`` for
        other bad options, an unwritable directory, missing Vega for the report
        (Debian's libjs-vega), replayed batches that are not those of the moments pass, and as
        ``moments()`` does.
        """
        settings = _core.AlignSettings()
        settings.clusters = str(clusters)
        settings.affinity = affinity
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**64:
            raise ValueError(f"seed: a whole number from 0 to 2**64 - 1, not {seed!r}")
        settings.seed = int(seed)
        settings.analyses = analyses
        # repr(float(a)): numpy 2 writes repr(np.float64(0.1)) as 'np.float64(0.1)'.
        settings.lasso_alphas = (lasso_alpha if isinstance(lasso_alpha, str)
                                 else ",".join(repr(float(a)) for a in lasso_alpha))
        settings.save_matrices = save_matrices
        settings.matrix_dtype = matrix_dtype
        settings.mi_binning = mi_binning
        settings.mi_bins = mi_bins
        settings.mi_base = str(mi_base)
        settings.mi_memory_mib = mi_memory_mib
        host_replay = None
        if replay is not None:
            def host_replay():
                for batch in replay():
                    yield {name: _host_array(x) for name, x in batch.items()}
        self._core.save(os.fspath(directory), settings, report, title, max_image_side, host_replay)

    def save_stats(self, path, first_input=0, total_inputs=0):
        """Writes what ``convergent stats`` writes (a .npz of the Moments, README "Sharded studies") for the
        batches added so far, as the inputs ``first_input`` onwards of a study of ``total_inputs`` inputs
        (0: these batches are the whole study). Shards of one study, from several processes or from the
        CLI, merge with ``convergent merge``; ``convergent align --from-stats`` analyses the result.
        Raises ``Error`` when the inputs do not fit, and as ``moments()`` does."""
        self._core.save_stats(os.fspath(path), first_input, total_inputs)

    def analyse(self, **options):
        """The results of align's analyses as ``Results``: summary.json as a dict and every matrix and
        table as numpy arrays. Takes ``save``'s options (but writes no report); the files are written to a
        temporary directory by the same writer as ``save`` and read back, so the numbers are those of
        ``save`` and of the CLI."""
        options["report"] = False
        with tempfile.TemporaryDirectory(prefix="convergent-") as directory:
            out = os.path.join(directory, "study")
            self.save(out, **options)
            return Results(out)
