"""Benchmarks from the user's own data: per-task tensors or datasets, class splits of one
dataset, permutations of one dataset; bad data is a DataError that says what is wrong."""

import pytest
import torch

from hlop.data import DataError, class_split, permuted, tasks_from


def data(n=12, classes=4, shape=(2, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.arange(n) % classes


class Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_tasks_from_tensors_and_datasets():
    (x0, y0), (x1, y1) = data(seed=0), data(seed=1)
    b = tasks_from([((x0, y0), (x0[:4], y0[:4])), (Pairs(x1, y1), Pairs(x1[:4], y1[:4]))])
    assert [t.num_classes for t in b.tasks] == [4, 4] and not b.shared_head
    assert b.input_shape == (2, 3)
    x, y = b.tasks[1].train.batch(torch.tensor([5, 2]))
    assert torch.equal(x, x1[[5, 2]]) and torch.equal(y, y1[[5, 2]]) and x.dtype == torch.float32


def test_class_split_relabels_each_group_in_order():
    x, y = data(n=16, classes=4)
    b = class_split((x, y), (x, y), groups=[[3, 1], [0, 2]])
    first = b.tasks[0].train
    assert torch.equal(first.labels, torch.where(y[(y == 3) | (y == 1)] == 3, 0, 1))
    assert torch.equal(first.images, x[(y == 3) | (y == 1)])
    assert [t.num_classes for t in class_split((x, y), (x, y), 2).tasks] == [2, 2]


def test_permuted_gives_each_task_its_own_fixed_permutation():
    x, y = data(n=6, shape=(3, 2))
    b = permuted((x, y), (x, y), tasks=3, seed=5)
    assert b.shared_head and b.input_shape == (6,)
    outs = [t.train.batch(torch.arange(6))[0] for t in b.tasks]
    assert all(torch.equal(o.sort(1).values, x.reshape(6, -1).sort(1).values) for o in outs)
    assert not torch.equal(outs[0], outs[1])
    again = permuted((x, y), (x, y), tasks=3, seed=5).tasks[1].train.batch(torch.arange(6))[0]
    assert torch.equal(again, outs[1])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda x, y: tasks_from([((x, y.float()), (x, y))]), "labels must be integers"),
        (lambda x, y: tasks_from([((x.long(), y), (x, y))]), "floating point or uint8"),
        (lambda x, y: tasks_from([((x, y[:5]), (x, y))]), "12 inputs but 5 labels"),
        (lambda x, y: tasks_from([((x, y), (x[:, :1], y))]), "one shape"),
        (lambda x, y: tasks_from([((x, y), (x, y)), ((x, y % 2), (x, y % 2))]), "same number"),
        (lambda x, y: class_split((x, y), (x, y), 3), "not whole tasks of 3"),
        (lambda x, y: class_split((x, y), (x, y), groups=[[0, 1], [1, 2]]), "in two tasks"),
        (lambda x, y: class_split((x, y), (x, y), groups=[[0, 7]]), "no samples of classes"),
        (lambda x, y: tasks_from([(x, (x, y))]), "tensors or a torch Dataset"),
    ],
)
def test_bad_data_is_a_clear_error(make, match):
    x, y = data()
    with pytest.raises(DataError, match=match):
        make(x, y)
