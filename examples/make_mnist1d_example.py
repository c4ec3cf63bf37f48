"""Makes the bundled conv-net study: activations of five small 1-D CNNs trained on MNIST-1D.

MNIST-1D (Greydanus 2020, "Scaling down deep learning", arXiv 2011.14439) is generated here, offline, by
the `mnist1d` package's own procedural generator with its published arguments (`get_dataset_args()`,
`make_dataset()`; seed 42, 5000 signals of length 40, 4000 train / 1000 test). Nothing is downloaded.

Four nets of one architecture are trained from seeds 0..3 (net1..net4) and one net twice as wide from
seed 4 (wide):

    input (N, 1, 40)
    conv1  Conv1d(1 -> C,  k=5, stride 2, pad 2) + ReLU   -> (N, C, 20)
    conv2  Conv1d(C -> C,  k=3, stride 2, pad 1) + ReLU   -> (N, C, 10)
    conv3  Conv1d(C -> C,  k=3, stride 2, pad 1) + ReLU   -> (N, C, 5)
    dense  Linear(5C -> H) + ReLU                         -> (N, H)
    out    Linear(H -> 10)
    C = 32, H = 64 (net1..net4);  C = 64, H = 128 (wide)

(stride 2 in every conv, as in the reference CNN of the MNIST-1D paper; it also keeps the shipped data
small). The activations after each ReLU on the first HELD_OUT test signals are saved as float16 .npy:
conv layers 3-D channels-first (N, C, L), where every (signal, position) is one sample of a C-vector,
the dense hidden layer 2-D (N, H):

    examples/mnist1d/<layer>/<net>.npy     layer in conv1 conv2 conv3 dense; net in net1..net4 wide
    examples/mnist1d/study.json            generator arguments, seeds, accuracies, training settings,
                                           shapes, dead units, and numpy float64 reference figures
                                           (semi-matching and matching mean correlation per pair)

Run by developers, not by users (the data is committed, so the demo needs no Python):

    /usr/bin/python3 -m venv /tmp/venv-mnist1d
    /tmp/venv-mnist1d/bin/pip install torch mnist1d numpy scipy   # the CPU-only torch wheel is enough
    /tmp/venv-mnist1d/bin/python examples/make_mnist1d_example.py

Deterministic (fixed seeds for data, init and shuffling; torch deterministic algorithms; one torch thread,
which on a busy 2-core machine was ten times faster than two) and about two minutes on a 2-core CPU.
"""
import itertools
import json
import math
import pathlib
import platform
import re
import time

import numpy as np
import scipy
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

import mnist1d
from mnist1d.data import get_dataset_args, make_dataset

OUT = pathlib.Path(__file__).parent / "mnist1d"
HELD_OUT = 500          # first HELD_OUT test signals: the inputs whose activations are saved
LAYERS = ("conv1", "conv2", "conv3", "dense")
NETS = (  # name, init/shuffle seed, channels, hidden units
    ("net1", 0, 32, 64),
    ("net2", 1, 32, 64),
    ("net3", 2, 32, 64),
    ("net4", 3, 32, 64),
    ("wide", 4, 64, 128),
)
TRAIN = {"optimizer": "Adam", "lr": 2e-2, "betas": [0.9, 0.999], "weight_decay": 0.0,
         "lr_schedule": "lr * min(1, (step + 1) / warmup_steps) * (1 + cos(pi * step / steps)) / 2",
         "warmup_epochs": 5, "batch_size": 100, "epochs": 100,
         "loss": "cross-entropy", "shuffle": "torch.randperm per epoch, generator seeded with the net's seed"}
THREADS = 1  # measured: 2 intra-op threads were ~10x slower than 1 on a shared 2-core machine


class CNN(torch.nn.Module):
    def __init__(self, channels, hidden, length=40, classes=10):
        super().__init__()
        self.conv1 = torch.nn.Conv1d(1, channels, 5, stride=2, padding=2)
        self.conv2 = torch.nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = torch.nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        out_len = length
        for k, p in ((5, 2), (3, 1), (3, 1)):
            out_len = (out_len + 2 * p - k) // 2 + 1
        self.dense = torch.nn.Linear(channels * out_len, hidden)
        self.out = torch.nn.Linear(hidden, classes)

    def forward(self, x, keep=False):
        acts = {}
        h = acts["conv1"] = F.relu(self.conv1(x))
        h = acts["conv2"] = F.relu(self.conv2(h))
        h = acts["conv3"] = F.relu(self.conv3(h))
        h = acts["dense"] = F.relu(self.dense(h.flatten(1)))
        logits = self.out(h)
        return (logits, acts) if keep else logits


def accuracy(net, x, y):
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def train(seed, channels, hidden, x, y):
    torch.manual_seed(seed)
    net = CNN(channels, hidden)
    opt = torch.optim.Adam(net.parameters(), lr=TRAIN["lr"], betas=tuple(TRAIN["betas"]),
                           weight_decay=TRAIN["weight_decay"])
    steps_per_epoch = len(y) // TRAIN["batch_size"]
    steps = TRAIN["epochs"] * steps_per_epoch
    warmup = TRAIN["warmup_epochs"] * steps_per_epoch  # the warmup keeps many more ReLUs alive at this lr
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * k / steps)))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(TRAIN["epochs"]):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * TRAIN["batch_size"]:(i + 1) * TRAIN["batch_size"]]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def as_samples(a):
    """(N, C, L) channels-first -> (N*L, C): every (signal, position) one sample; (N, H) unchanged."""
    return a.transpose(0, 2, 1).reshape(-1, a.shape[1]) if a.ndim == 3 else a


def corr_between(a, b):
    """Pearson correlation (float64) of the columns of a with those of b; a constant column gives 0s."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    sa = np.sqrt((a * a).sum(0))
    sb = np.sqrt((b * b).sum(0))
    c = (a.T @ b) / np.outer(np.where(sa > 0, sa, 1.0), np.where(sb > 0, sb, 1.0))
    c[sa == 0, :] = 0.0
    c[:, sb == 0] = 0.0
    return c


def reference(xa, xb):
    c = corr_between(xa, xb)
    rows, cols = linear_sum_assignment(c, maximize=True)
    return {"semi_matching_mean_corr": float(c.max(1).mean()),
            "matching_mean_corr": float(c[rows, cols].sum() / min(c.shape))}


def main():
    t0 = time.time()
    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(THREADS)
    torch.use_deterministic_algorithms(True)

    args = get_dataset_args()               # the published arguments (ObjectView)
    data = make_dataset(args)               # procedural generator, seeded by args.seed; no download
    x_train = torch.tensor(data["x"], dtype=torch.float32).unsqueeze(1)
    y_train = torch.tensor(data["y"], dtype=torch.int64)
    x_test = torch.tensor(data["x_test"], dtype=torch.float32).unsqueeze(1)
    y_test = torch.tensor(data["y_test"], dtype=torch.int64)
    print(f"MNIST-1D: train {tuple(x_train.shape)}, test {tuple(x_test.shape)} ({time.time() - t0:.1f} s)")

    for layer in LAYERS:
        (OUT / layer).mkdir(parents=True, exist_ok=True)
    held = torch.arange(HELD_OUT)
    nets, shapes = [], {layer: {} for layer in LAYERS}
    for name, seed, channels, hidden in NETS:
        t1 = time.time()
        net = train(seed, channels, hidden, x_train, y_train)
        with torch.no_grad():
            _, acts = net(x_test[held], keep=True)
        dead = {}
        for layer in LAYERS:
            a = acts[layer].numpy().astype(np.float16)
            np.save(OUT / layer / f"{name}.npy", a)
            shapes[layer][name] = list(a.shape)
            s = as_samples(a.astype(np.float64))
            dead[layer] = int((s.max(0) == s.min(0)).sum())
        nets.append({"name": name, "seed": seed,
                     "architecture": {"channels": channels, "hidden": hidden,
                                      "conv1": f"Conv1d(1, {channels}, k=5, stride=2, pad=2) + ReLU",
                                      "conv2": f"Conv1d({channels}, {channels}, k=3, stride=2, pad=1) + ReLU",
                                      "conv3": f"Conv1d({channels}, {channels}, k=3, stride=2, pad=1) + ReLU",
                                      "dense": f"Linear({channels * 5}, {hidden}) + ReLU",
                                      "out": f"Linear({hidden}, 10)"},
                     "parameters": sum(p.numel() for p in net.parameters()),
                     "train_accuracy": accuracy(net, x_train, y_train),
                     "test_accuracy": accuracy(net, x_test, y_test),
                     "held_out_accuracy": accuracy(net, x_test[held], y_test[held]),
                     "dead_units": dead})
        n = nets[-1]
        print(f"{name}: seed {seed}, train {n['train_accuracy']:.3f}, test {n['test_accuracy']:.3f}, "
              f"dead {dead} ({time.time() - t1:.1f} s)")

    # Reference figures from the saved float16 data, in float64, independent of convergent.
    names = [n["name"] for n in nets]
    ref = {}
    for layer in LAYERS:
        x = {name: as_samples(np.load(OUT / layer / f"{name}.npy").astype(np.float64)) for name in names}
        ref[layer] = {f"{a}_vs_{b}": reference(x[a], x[b]) for a, b in itertools.combinations(names, 2)}
        print(f"{layer}: net1 vs net2 semi {ref[layer]['net1_vs_net2']['semi_matching_mean_corr']:.4f}, "
              f"matching {ref[layer]['net1_vs_net2']['matching_mean_corr']:.4f}")
        for name in names:
            assert any(n["dead_units"][layer] < shapes[layer][name][1] for n in nets), layer

    study = {
        "description": "Activations of five small 1-D CNNs trained on MNIST-1D from different seeds "
                       "(four of one architecture, one twice as wide), on the same held-out test signals.",
        "made_by": "examples/make_mnist1d_example.py",
        "dataset": {"name": "MNIST-1D (Greydanus 2020), generated offline by mnist1d.data.make_dataset",
                    "mnist1d_version": getattr(mnist1d, "__version__", "0.0.2.post1"),
                    "generator_args": {k: v for k, v in vars(args).items() if k != "url"},
                    "data_seed": args.seed,
                    "train_samples": len(y_train), "test_samples": len(y_test),
                    "input_shape": [1, 40]},
        "held_out": {"split": "test", "indices": list(range(HELD_OUT)),
                     "note": "indices into the test split (x_test); the saved activations are on these "
                             "signals, in this order"},
        "training": dict(TRAIN, threads=THREADS, deterministic_algorithms=True, torch=torch.__version__,
                         numpy=np.__version__, scipy=scipy.__version__, python=platform.python_version()),
        "nets": nets,
        "layers": {layer: {"layout": "channels-first" if layer != "dense" else "samples x units",
                           "dtype": "float16", "files": {n: f"{layer}/{n}.npy" for n in names},
                           "shapes": shapes[layer],
                           "note": ("(N, C, L): every (signal, position) is one sample of a C-vector"
                                    if layer != "dense" else "(N, H): every signal is one sample")}
                   for layer in LAYERS},
        "numpy_reference": {
            "note": "Computed in numpy float64 from the saved float16 files (not by convergent), as an "
                    "independent check: conv layers reshaped to (N*L, C). Key a_vs_b: Pearson correlation "
                    "between the units of net a (rows) and net b (columns), a constant (dead) unit "
                    "correlating 0 with everything. semi_matching_mean_corr: mean over all units of a of "
                    "the row maximum. matching_mean_corr: scipy.optimize.linear_sum_assignment("
                    "maximize=True), total over min(Ca, Cb) pairs divided by min(Ca, Cb).",
            "pairs": ref},
    }
    text = json.dumps(study, indent=1)
    # lists of numbers (indices, shapes, generator arguments) on one line each
    text = re.sub(r"\[\s*([-\d.e,\s]+?)\s*\]",
                  lambda m: "[" + "".join(m.group(1).split()).replace(",", ", ") + "]", text)
    (OUT / "study.json").write_text(text + "\n")
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
