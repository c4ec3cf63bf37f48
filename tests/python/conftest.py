"""Where the tests find the package and the CLI: the package is imported as installed (pip install .) or
from the build tree (PYTHONPATH=build/python, as scripts/test runs it); the CLI is $CONVERGENT_CLI or
build/convergent. A missing CLI fails the tests that need it, it does not skip them."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cli():
    path = os.environ.get("CONVERGENT_CLI", str(ROOT / "build" / "convergent"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"the convergent CLI is not at {path}: build it (scripts/setup) or set CONVERGENT_CLI")
    return path
