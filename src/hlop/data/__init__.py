"""Datasets and continual-learning benchmarks: the dataset table and its readers, fetching
with checks, and the task builders (permuted MNIST, split CIFAR-100, 5-Datasets, ...)."""

from hlop.data.benchmarks import (
    five_datasets,
    permuted_mnist,
    split_cifar100,
    split_classes,
    split_fashion_mnist,
    split_miniimagenet,
    split_mnist,
)
from hlop.data.containers import Benchmark, DataSplit, JointSplit, Task, joint_task
from hlop.data.datasets import (
    DATASETS,
    DatasetSpec,
    load_dataset,
    locate_files,
    missing_files_message,
)
from hlop.data.embedded import load_embedded_mnist
from hlop.data.fetch import fetch_dataset
from hlop.data.idx import MNIST_FILES, read_idx
from hlop.data.matlab import read_mat
from hlop.data.yours import class_split, permuted, tasks_from
from hlop.errors import DataError

__all__ = [
    "DATASETS",
    "MNIST_FILES",
    "Benchmark",
    "DataError",
    "class_split",
    "permuted",
    "tasks_from",
    "DatasetSpec",
    "JointSplit",
    "DataSplit",
    "Task",
    "fetch_dataset",
    "five_datasets",
    "joint_task",
    "load_dataset",
    "load_embedded_mnist",
    "locate_files",
    "missing_files_message",
    "permuted_mnist",
    "read_idx",
    "read_mat",
    "split_cifar100",
    "split_classes",
    "split_fashion_mnist",
    "split_miniimagenet",
    "split_mnist",
]
