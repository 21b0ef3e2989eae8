"""Datasets and continual-learning benchmarks: IDX files, MNIST fetching, permuted MNIST."""

from hlop.data.benchmarks import Benchmark, Split, Task, permuted_mnist
from hlop.data.embedded import load_embedded_mnist
from hlop.data.errors import DataError
from hlop.data.fetch import MNIST_SHA256, fetch_mnist
from hlop.data.idx import MNIST_FILES, load_mnist_dir, read_idx, write_idx

__all__ = [
    "MNIST_FILES",
    "MNIST_SHA256",
    "Benchmark",
    "DataError",
    "Split",
    "Task",
    "fetch_mnist",
    "load_embedded_mnist",
    "load_mnist_dir",
    "permuted_mnist",
    "read_idx",
    "write_idx",
]
