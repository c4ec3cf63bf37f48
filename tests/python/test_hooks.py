"""convergent.hooks.run_models: small torch models on the CPU through forward hooks give the Moments (and
the align outputs) of their saved activations; the sample order of separate loaders is checked."""
import json
import subprocess

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import convergent
from convergent.hooks import replay, run_models

COV_RTOL = 1e-6  # float32 batch products (see test_study.py)


class Small(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.relu = torch.nn.ReLU()
        self.fc = torch.nn.Linear(4 * 6 * 6, 6)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def data(n=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n))


def saved_activations(model, x):
    """The activations of conv (N, C, H, W) and fc (N, units), computed directly (no hooks)."""
    with torch.no_grad():
        conv = model.conv(x)
        fc = model.fc(model.relu(conv).flatten(1))
    return conv.numpy(), fc.numpy()


def float64_moments(*nets):
    x = np.concatenate([n.astype(np.float64) for n in nets], axis=1)
    return x.mean(0), np.cov(x.T, bias=True), np.corrcoef(x.T)


def test_hooks_give_the_moments_of_the_saved_activations():
    models = {"net1": Small(1), "net2": Small(2)}
    dataset = data()
    studies = run_models(models, ["conv", "fc"], DataLoader(dataset, batch_size=16), progress=True)
    x = dataset.tensors[0]
    (c1, f1), (c2, f2) = saved_activations(models["net1"], x), saved_activations(models["net2"], x)
    rows = lambda c: c.transpose(0, 2, 3, 1).reshape(-1, c.shape[1])  # (input, y, x) rows of C units
    for name, nets in [("conv", (rows(c1), rows(c2))), ("fc", (f1, f2))]:
        m = studies[name].moments()
        mean, cov, corr = float64_moments(*nets)
        assert m.samples == len(nets[0])
        np.testing.assert_allclose(m.mean, mean, rtol=0, atol=1e-6 * np.abs(mean).max())  # float32 inputs
        scale = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
        assert np.all(np.abs(m.covariance - cov) <= COV_RTOL * scale)
        np.testing.assert_allclose(m.correlation, corr, rtol=0, atol=COV_RTOL)
    assert all(m.training for m in models.values())  # run in eval mode, then given back their mode


def test_hooks_equal_the_cli_on_the_saved_activations(cli, tmp_path):
    models = {"net1": Small(3), "net2": Small(4)}
    dataset = data(seed=1)
    study = run_models(models, "conv", DataLoader(dataset, batch_size=10))["conv"]
    study.save(tmp_path / "hooks", clusters=2, report=False)
    x = dataset.tensors[0]
    for name, model in models.items():
        np.save(tmp_path / f"{name}.npy", saved_activations(model, x)[0])
    done = subprocess.run([cli, "align", str(tmp_path / "net1.npy"), str(tmp_path / "net2.npy"), "--out",
                           str(tmp_path / "cli"), "--clusters", "2", "--no-report", "--backend", "cpu"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    hooks = json.loads((tmp_path / "hooks" / "summary.json").read_text())
    saved = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert hooks["samples"] == saved["samples"] == 80 * 36
    for h, s in zip(hooks["nets"], saved["nets"]):
        assert h["shape"] == s["shape"] == [80, 4, 6, 6]
        np.testing.assert_allclose(h["mean"], s["mean"], rtol=1e-12)  # float64 sums of the same values
        np.testing.assert_allclose(h["std"], s["std"], rtol=COV_RTOL)
    np.testing.assert_allclose(np.load(tmp_path / "hooks" / "corr_net1_net2.npy"),
                               np.load(tmp_path / "cli" / "corr_net1_net2.npy"), rtol=0, atol=COV_RTOL)
    assert (tmp_path / "hooks" / "matching_net1_net2.csv").read_text().splitlines()[1].split(",")[:2] == \
        (tmp_path / "cli" / "matching_net1_net2.csv").read_text().splitlines()[1].split(",")[:2]


def test_mutual_information_through_hooks_replayed_equals_the_cli(cli, tmp_path):
    models = {"net1": Small(5), "net2": Small(6)}
    loader = DataLoader(data(seed=2), batch_size=20)
    study = run_models(models, ["conv", "fc"], loader)["conv"]
    again = replay(models, ["conv", "fc"], loader, "conv")
    study.save(tmp_path / "hooks", clusters="none", analyses="mutual_information", report=False, replay=again)
    # The CLI on the replayed activations themselves, saved (a forward pass gives the same values again).
    for name in models:
        np.save(tmp_path / f"{name}.npy", np.concatenate([b[name].numpy() for b in again()]))
    done = subprocess.run([cli, "align", str(tmp_path / "net1.npy"), str(tmp_path / "net2.npy"), "--out",
                           str(tmp_path / "cli"), "--clusters", "none", "--analyses", "mutual_information",
                           "--no-report", "--backend", "cpu"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name in ["mi_mm_net1_net2.npy", "nmi_net1.npy"]:
        np.testing.assert_array_equal(np.load(tmp_path / "hooks" / name), np.load(tmp_path / "cli" / name))
    assert (tmp_path / "hooks" / "mi_matching_net1_net2.csv").read_text() == \
        (tmp_path / "cli" / "mi_matching_net1_net2.csv").read_text()
    with pytest.raises(convergent.Error, match="no study named 'conv2'"):
        replay(models, ["conv", "fc"], loader, "conv2")


def test_separate_loaders_in_the_same_order_are_accepted():
    models = {"net1": Small(5), "net2": Small(6)}
    dataset = data()
    loaders = {n: DataLoader(dataset, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(7))
               for n in models}
    study = run_models(models, "fc", loaders)["fc"]
    assert study.moments().samples == 80


def test_separate_loaders_in_another_order_are_an_error():
    models = {"net1": Small(5), "net2": Small(6)}
    dataset = data()
    loaders = {n: DataLoader(dataset, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))
               for n, seed in zip(models, [7, 8])}
    with pytest.raises(convergent.Error, match="batch 0: the loader of model 'net2' gives other inputs"):
        run_models(models, "fc", loaders)


def test_loaders_that_end_apart_are_an_error():
    models = {"net1": Small(5), "net2": Small(6)}
    loaders = {"net1": DataLoader(data(80), batch_size=16), "net2": DataLoader(data(64), batch_size=16)}
    with pytest.raises(convergent.Error, match="the loaders of net2 ended at batch 4"):
        run_models(models, "fc", loaders)


def test_a_missing_layer_is_an_error_and_no_hook_is_left():
    models = {"net1": Small(5), "net2": Small(6)}
    with pytest.raises(convergent.Error, match="model 'net1' has no layer named 'conv2'; its layers: conv, relu, fc"):
        run_models(models, ["fc", "conv2"], DataLoader(data(), batch_size=16))
    assert not models["net1"].fc._forward_hooks


def test_models_not_in_a_dict_are_a_type_error():
    # A list of models has no names for the nets; it reached Study's constructor as a list of modules.
    with pytest.raises(TypeError, match=r"models: a dict \{name: torch.nn.Module\} .*, not list"):
        run_models([Small(5), Small(6)], ["fc"], DataLoader(data(), batch_size=16))


def test_a_layer_that_runs_twice_is_an_error():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 64)

        def forward(self, x):
            return self.fc(self.fc(x.flatten(1)))

    models = {"net1": Twice(), "net2": Twice()}
    with pytest.raises(convergent.Error, match="layer 'fc' of model 'net1' ran 2 times in one forward pass"):
        run_models(models, "fc", DataLoader(data(), batch_size=16))


def test_layers_named_differently_per_model():
    models = {"net1": Small(5), "net2": torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))}
    studies = run_models(models, {"top": {"net1": "fc", "net2": "1"}}, DataLoader(data(), batch_size=16))
    assert list(studies["top"].moments().units) == [6, 3]
