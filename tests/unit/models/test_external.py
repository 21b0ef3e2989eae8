"""A network of the user's own in the loop (hlop.models.external): the factory, its errors,
the scores of a task, the state reset."""

import pytest
import torch
from torch import nn

from hlop.errors import ConfigError
from hlop.models.external import (
    ExternalModel,
    build_network,
    is_factory_reference,
    load_factory,
    reset_state,
    state_resets,
)

FACTORIES = """
import torch
from torch import nn

def mlp(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], num_classes))

def everything(**kwargs):
    everything.seen = kwargs
    return nn.Linear(4, 2)

def raises(num_classes):
    raise RuntimeError("no GPU here")

def not_a_module():
    return 3
"""


@pytest.fixture
def factories(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(FACTORIES)
    return path


def test_references_name_a_file_or_a_module(factories):
    assert is_factory_reference(f"{factories}:mlp") and not is_factory_reference("mlp")
    net = build_network(f"{factories}:mlp", input_shape=(6,), num_classes=3, tasks=2)
    assert isinstance(net, nn.Sequential) and net[1].out_features == 3
    # a factory taking **kwargs gets every keyword; a module path works too
    every = load_factory(f"{factories}:everything")
    build_network(f"{factories}:everything", input_shape=(4,), num_classes=2, tasks=5)
    assert every.__module__.startswith("hlop_model_")
    assert build_network("torch.nn:Identity").__class__ is nn.Identity


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("{dir}/missing.py:mlp", "no such file"),
        ("{file}:nothing", "has no function 'nothing'"),
        ("{file}:raises", "the factory raised RuntimeError('no GPU here')"),
        ("{file}:not_a_module", "returned a int, not a torch.nn.Module"),
        ("no_such_package.nets:mlp", "cannot import no_such_package.nets"),
        ("{file}:", "expected FILE.py:FUNCTION"),
    ],
)
def test_bad_factories_are_clear_errors(factories, tmp_path, reference, message):
    reference = reference.format(dir=tmp_path, file=factories)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_network(reference, num_classes=2)


def test_a_file_that_does_not_import_names_itself(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import torch\ndef f(:\n")
    with pytest.raises(ConfigError, match=f"importing {path} failed"):
        load_factory(f"{path}:f")


def test_each_task_reads_its_own_slice_of_the_scores():
    torch.manual_seed(0)
    net = nn.Linear(5, 6)
    model = ExternalModel(net, "x.py:f", num_classes=6, classes_per_task=2)
    x = torch.randn(4, 5)
    full = net(x)
    assert torch.equal(model(x, 1), full[:, 2:4]) and torch.equal(model(x, 0), full[:, :2])
    tasks = torch.tensor([2, 0, 1, 2])
    expected = torch.stack([full[i, 2 * t : 2 * t + 2] for i, t in enumerate(tasks.tolist())])
    assert torch.equal(model(x, tasks), expected)
    one = ExternalModel(nn.Linear(5, 3), "x.py:f", num_classes=3, classes_per_task=3)
    assert one(x, 7).shape == (4, 3)  # one head for every task (domain-incremental)
    with pytest.raises(ConfigError, match="5 scores are not whole tasks of 2 classes"):
        ExternalModel(nn.Linear(5, 5), "x.py:f", num_classes=5, classes_per_task=2)


def test_a_list_of_tasks_reads_their_slices_side_by_side():
    """The task-agnostic evaluation's scores: the seen tasks' slices in the list's order."""
    torch.manual_seed(0)
    net = nn.Linear(5, 6)
    model = ExternalModel(net, "x.py:f", num_classes=6, classes_per_task=2)
    assert model.task_heads
    x = torch.randn(4, 5)
    full = net(x)
    assert torch.equal(model(x, [0, 1]), full[:, :4])
    assert torch.equal(model(x, [2, 0]), torch.cat([full[:, 4:6], full[:, 0:2]], dim=1))
    one = ExternalModel(nn.Linear(5, 3), "x.py:f", num_classes=3, classes_per_task=3)
    assert not one.task_heads  # domain-incremental: no task-agnostic matrix to record
    with pytest.raises(ValueError, match="share every score"):
        one(x, [0, 1])


def test_wrong_outputs_and_inputs_are_refused_before_training():
    model = ExternalModel(nn.Linear(5, 4), "x.py:f", num_classes=3, classes_per_task=3)
    with pytest.raises(ConfigError, match=r"returned \(2, 4\) for a batch of 2; it must return"):
        model.probe(torch.randn(2, 5))
    model = ExternalModel(nn.Linear(7, 3), "x.py:f", num_classes=3, classes_per_task=3)
    with pytest.raises(ConfigError, match=r"raised RuntimeError.*on a batch of shape \(2, 5\)"):
        model.probe(torch.randn(2, 5))
    with pytest.raises(ConfigError, match="task 1 has 2 classes, the network's tasks 3"):
        model.begin_task(1, 2)
    with pytest.raises(ConfigError, match="HAT gates the neuron layers"):
        model.gated_layers()


class Memory(nn.Module):
    """A layer with state between calls, as SpikingJelly's MemoryModule keeps it."""

    def __init__(self):
        super().__init__()
        self._memories = {"v": 0.0}
        self.v = 0.0

    def reset(self):
        self.v = 0.0

    def forward(self, x):
        self.v = self.v + 1.0
        return x * self.v


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.mem, self.resets = nn.Linear(3, 2), Memory(), 0

    def forward(self, x):
        return self.mem(self.fc(x))

    def reset_state(self):
        self.resets += 1


def test_state_is_reset_after_every_batch():
    net = Net()
    model = ExternalModel(net, "x.py:f", num_classes=2, classes_per_task=2)
    x = torch.randn(4, 3)
    assert torch.equal(model(x), model(x))  # the memory starts afresh each batch
    assert net.mem.v == 0.0 and net.resets == 2
    net.mem.v = 5.0
    reset_state(net)
    assert net.mem.v == 0.0


class OwnMemory(Memory):
    """A network that is itself a memory and has its own reset_state too."""

    def __init__(self):
        super().__init__()
        self.inner, self.resets = Memory(), 0

    def forward(self, x):
        return self.inner(super().forward(x))

    def reset_state(self):
        self.resets += 1


def test_every_reset_is_called_at_every_batch():
    net = OwnMemory()
    assert state_resets(net) == [(net, "reset"), (net.inner, "reset"), (net, "reset_state")]
    model = ExternalModel(net, "x.py:f", num_classes=3, classes_per_task=3)
    x = torch.randn(2, 3)
    for batch in range(1, 4):
        assert torch.equal(model(x), x)  # v = 1 in both memories: reset after each batch
        assert net.v == net.inner.v == 0.0 and net.resets == batch
