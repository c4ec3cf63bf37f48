"""Makes the bundled example: hidden-layer activations of three small MLPs trained on scikit-learn's
8x8 digits from different random seeds (the setting of Li et al., in miniature).

    python3 examples/make_digits_example.py   # needs numpy and scikit-learn; writes examples/digits/*.npy

The .npy files are committed, so the demo itself needs neither.
"""
import pathlib
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

out = pathlib.Path(__file__).parent / "digits"
out.mkdir(exist_ok=True)
digits = load_digits()
x = digits.data / 16.0
for seed in (1, 2, 3):
    net = MLPClassifier(hidden_layer_sizes=(64,), activation="relu", max_iter=300, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(x, digits.target)
    hidden = np.maximum(x @ net.coefs_[0] + net.intercepts_[0], 0.0).astype(np.float32)
    np.save(out / f"net{seed}.npy", hidden)
    print(f"net{seed}: train accuracy {net.score(x, digits.target):.3f}, hidden {hidden.shape}, "
          f"dead units {(hidden.std(axis=0) == 0).sum()}")
