"""Datasets and continual-learning benchmarks: readers of the standard files, fetching with
checksums, and the benchmarks (permuted MNIST, split CIFAR-100, 5-Datasets, miniImageNet)."""

from hlop.data.benchmarks import (
    Benchmark,
    Split,
    Task,
    five_datasets,
    permuted_mnist,
    split_cifar100,
    split_classes,
    split_fashion_mnist,
    split_miniimagenet,
    split_mnist,
)
from hlop.data.embedded import load_embedded_mnist
from hlop.data.errors import DataError
from hlop.data.fetch import DATASET_NAMES, MNIST_SHA256, fetch_dataset, fetch_mnist
from hlop.data.idx import MNIST_FILES, load_mnist_dir, read_idx, write_idx
from hlop.data.readers import (
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_miniimagenet,
    load_notmnist,
    load_svhn,
    read_mat,
    write_mat,
)

__all__ = [
    "DATASET_NAMES",
    "MNIST_FILES",
    "MNIST_SHA256",
    "Benchmark",
    "DataError",
    "Split",
    "Task",
    "fetch_dataset",
    "fetch_mnist",
    "five_datasets",
    "load_cifar10",
    "load_cifar100",
    "load_fashion_mnist",
    "load_miniimagenet",
    "load_notmnist",
    "load_svhn",
    "read_mat",
    "split_cifar100",
    "split_classes",
    "split_fashion_mnist",
    "split_miniimagenet",
    "split_mnist",
    "write_mat",
    "load_embedded_mnist",
    "load_mnist_dir",
    "permuted_mnist",
    "read_idx",
    "write_idx",
]
