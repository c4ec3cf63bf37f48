"""Two small 1-D conv nets trained from different seeds, compared layer by layer through forward hooks:
no activation is written to disk. Prints the paper's table (Li et al., ICLR 2016, table 1 and figure 3's
figures) and writes what `convergent align` writes for every layer, report.html included.

The task is made here, offline: ten classes of smooth random templates (length 40), each example its
class template shifted by up to 4 positions, scaled and with noise added. Both nets share one
architecture (conv1 16 channels, conv2 32, dense 64 ReLU units, 10 outputs) and differ only in their
seed (initialisation and data order).

    PYTHONPATH=build/python /usr/bin/python3 examples/torch_hooks/compare_seeds.py [--out out/torch_hooks]

(or with the package installed by `pip install .`). About 15 s on 2 CPU cores.
"""
import argparse
import pathlib

import torch
from torch.utils.data import DataLoader, TensorDataset

import convergent
from convergent.hooks import run_models

CLASSES, LENGTH = 10, 40


def make_data(n, seed):
    """n examples of the ten classes: (n, 1, LENGTH) float32 signals and their labels."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(CLASSES, 1, LENGTH + 8, generator=torch.Generator().manual_seed(2016))
    templates = torch.nn.functional.avg_pool1d(templates, 5, stride=1, padding=2)  # smooth
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    shifts = torch.randint(0, 9, (n,), generator=g)
    x = torch.stack([templates[c, :, s:s + LENGTH] for c, s in zip(labels.tolist(), shifts.tolist())])
    x = x * (0.5 + torch.rand(n, 1, 1, generator=g)) + 0.3 * torch.randn(x.shape, generator=g)
    return x, labels


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Sequential(torch.nn.Conv1d(1, 16, 5, stride=2, padding=2), torch.nn.ReLU())
        self.conv2 = torch.nn.Sequential(torch.nn.Conv1d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU())
        self.dense = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 10, 64), torch.nn.ReLU())
        self.out = torch.nn.Linear(64, CLASSES)

    def forward(self, x):
        return self.out(self.dense(self.conv2(self.conv1(x))))


def train(seed, x, y, epochs=6):
    torch.manual_seed(seed)
    net = Net()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    for _ in range(epochs):
        for xb, yb in loader:
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(net(xb), yb).backward()
            optimiser.step()
    return net


def accuracy(net, x, y):
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/torch_hooks", help="where each layer's align outputs go")
    parser.add_argument("--no-report", action="store_true", help="skip report.html (it needs Debian's libjs-vega)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    x_train, y_train = make_data(4000, seed=0)
    x_test, y_test = make_data(1000, seed=1)
    nets = {f"net{k + 1}": train(seed, x_train, y_train) for k, seed in enumerate([0, 1])}
    for name, net in nets.items():
        print(f"{name}: test accuracy {accuracy(net, x_test, y_test):.3f}")

    # One pass over the held-out inputs, every layer of both nets hooked at once. conv1 and conv2 give
    # (N, C, L): every (input, position) is one sample of C units, as the CLI reads 3-D activations.
    layers = ["conv1", "conv2", "dense"]
    studies = run_models(nets, layers, DataLoader(TensorDataset(x_test, y_test), batch_size=100))
    out = pathlib.Path(args.out)
    for layer, study in studies.items():
        study.save(out / layer, seed=0, report=not args.no_report)
    print()
    print(convergent.study_table({layer: out / layer for layer in layers}))
    print(f"outputs: {out}/<layer>/ (summary.json, matching_net1_net2.csv, corr_net1_net2.npy, ...)")


if __name__ == "__main__":
    main()
