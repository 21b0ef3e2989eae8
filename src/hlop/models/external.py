"""A network of the user's own in the continual loop: its factory, and the adapter that gives
it what the loop and the methods read of a network.

``hlop train BENCHMARK --model FILE.py:FUNCTION`` (or ``package.module:FUNCTION``) builds the
network with the factory, called with the keywords it takes of::

    input_shape   the shape of one input sample, e.g. (784,) or (1, 32, 32)
    num_classes   the scores the network must return: the classes of one task, or, on a
                  benchmark with a head per task, of every task (task t's classes are the
                  slice [t C, (t + 1) C) of them)
    tasks         the number of tasks of the run
    timesteps     the run's T (a spiking network may simulate as many steps)

The network's ``forward`` takes a batch and returns class scores ``[B, num_classes]``; how it
meets time is its own business (a SpikingJelly multi-step network, an snnTorch loop over steps
or an ANN all fit).  Its state is reset after every batch: every submodule with a ``reset()``
method and memories (SpikingJelly's ``MemoryModule``, what ``functional.reset_net`` resets),
then the network's own ``reset_state()`` if it has one.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hlop.core.circuit import LateralCircuit
from hlop.errors import ConfigError
from hlop.layers.unprotected import check_choice, find_unprotected, layer_parameters, message
from hlop.spiking.training import TrainingRule

#: the keywords a factory may take
FACTORY_KEYWORDS = ("input_shape", "num_classes", "tasks", "timesteps")


def is_factory_reference(model: str) -> bool:
    """Whether the run's ``model`` names a factory (``FILE.py:FUNCTION``, ``module:FUNCTION``)
    rather than a built-in network."""
    return ":" in model


def load_factory(reference: str, flag: str = "--model") -> Callable[..., Any]:
    """The function ``reference`` names: ``path/to/file.py:function`` (a path relative to the
    working directory, or absolute) or ``package.module:function``; a clear ConfigError for a
    file, module or function that cannot be found or imported (``flag``: where it was
    given, for messages)."""
    where, _, name = reference.rpartition(":")
    if not where or not name.isidentifier():
        raise ConfigError(
            f"{flag} {reference!r}: expected FILE.py:FUNCTION or package.module:FUNCTION"
        )
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise ConfigError(f"{flag} {reference}: no such file {path}")
        module_name = f"hlop_model_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look modules up
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[module_name]
            raise ConfigError(f"{flag} {reference}: importing {path} failed: {e!r}") from e
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:
            raise ConfigError(f"{flag} {reference}: cannot import {where}: {e!r}") from e
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ConfigError(f"{flag} {reference}: {where} has no function {name!r}")
    return factory


def build_network(reference: str, **available: Any) -> nn.Module:
    """Call the factory ``reference`` with the keywords of ``available`` it takes (every one
    when it takes ``**kwargs``); ConfigError when it raises or returns no ``nn.Module``."""
    factory = load_factory(reference)
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        params = []
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params)
    names = {p.name for p in params}
    kwargs = {k: v for k, v in available.items() if takes_all or k in names}
    try:
        net = factory(**kwargs)
    except Exception as e:
        raise ConfigError(f"--model {reference}: the factory raised {e!r}") from e
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"--model {reference}: the factory returned a {type(net).__name__}, not a "
            "torch.nn.Module"
        )
    return net


def state_resets(net: nn.Module) -> list[tuple[nn.Module, str]]:
    """What :func:`reset_state` calls, in its order, as (module, method name): ``reset`` of
    SpikingJelly's memories (what ``functional.reset_net`` resets), then the network's own
    ``reset_state`` if it has one."""
    found = [
        (m, "reset")
        for m in net.modules()
        if hasattr(m, "_memories") and callable(getattr(m, "reset", None))
    ]
    if callable(getattr(net, "reset_state", None)):
        found.append((net, "reset_state"))
    return found


def reset_state(net: nn.Module, resets: Sequence[tuple[nn.Module, str]] | None = None) -> None:
    """Forget the state a network keeps between batches: SpikingJelly's memories (what
    ``functional.reset_net`` resets), then the network's own ``reset_state()``.
    ``resets``: :func:`state_resets` of ``net``, when already known."""
    for module, method in state_resets(net) if resets is None else resets:
        getattr(module, method)()


class ExternalModel(nn.Module):
    """A user's network as the continual loop drives it.

    Args:
        net: the network (``net(x)`` returns scores ``[B, num_classes]``).
        reference: its factory, as given (recorded in the run's configuration).
        num_classes: the scores ``net`` returns.
        classes_per_task: the classes of one task; below ``num_classes``, each task reads its
            own slice of the scores (a head per task, task-incremental).
        unprotected: what no method protects (every trainable parameter but the weights
            and biases of the ``nn.Linear`` / ``nn.Conv2d`` layers, and the norms' running
            statistics; :mod:`hlop.layers.unprotected`): ``"fix"`` after the first task
            (as hlop's built-in networks do), or ``"train"``; the same for every method.

    Attributes:
        rule: plain training: forward, cross-entropy, backward (the network handles time).
        shared_head: True: the network has one output layer (heads are slices of it).
        unprotected_found: what no method protects (:class:`Unprotected`).
        circuits_attached: the :class:`hlop.HLOP` giving the network's layers circuits, once
            a method that uses circuits attached one (:meth:`attach_circuits`).
    """

    external = True

    def __init__(
        self,
        net: nn.Module,
        reference: str,
        num_classes: int,
        classes_per_task: int,
        unprotected: str = "fix",
    ) -> None:
        super().__init__()
        self.unprotected = check_choice(unprotected)
        if num_classes % classes_per_task:
            raise ConfigError(
                f"--model {reference}: {num_classes} scores are not whole tasks of "
                f"{classes_per_task} classes"
            )
        self.net, self.reference = net, reference
        self.num_classes, self.classes_per_task = num_classes, classes_per_task
        self.rule = TrainingRule()
        self.shared_head = True
        self.heads = nn.ModuleList()  # none: the network's own output layer serves
        self.consolidated = False
        self.circuits_attached = None
        self.lateral = nn.ModuleList()  # the circuits, registered for state dicts
        self._protected = None  # the optimiser whose steps are projected (protect)
        self._resets = None  # what resets the network's state (state_resets), once known
        self.unprotected_found = find_unprotected(net, layer_parameters(net))

    def unprotected_message(self) -> str | None:
        """What no method protects and what the run does with it (None: nothing)."""
        if not self.unprotected_found:
            return None
        return f"{self.reference}: " + message(
            self.unprotected_found, self.unprotected, "--set unprotected={}"
        )

    def train(self, mode: bool = True) -> ExternalModel:
        super().train(mode)
        if mode and self.consolidated and self.unprotected == "fix":
            for name in self.unprotected_found.statistics:  # the first task's statistics
                self.net.get_submodule(name).eval()
        return self

    # ------------------------------------------------------------------ what the loop reads
    @property
    def task_heads(self) -> bool:
        """Whether each task reads its own slice of the scores (task-incremental): a
        task-agnostic evaluation reads the slices of every seen task (``forward(x, [tasks])``)."""
        return self.classes_per_task < self.num_classes

    def forward(self, x: Tensor, task: int | Tensor | Sequence[int] = 0) -> Tensor:
        """The network's scores of ``task``: its slice (a task id), each sample's own task's
        slice (one id per sample), or the slices of a list of tasks concatenated in that order
        (a task-agnostic evaluation); all the scores where the tasks share them."""
        try:
            out = self.net(x)
        finally:
            if self._resets is None:  # the network's modules, read at its first batch
                self._resets = state_resets(self.net)
            reset_state(self.net, self._resets)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[1] != self.num_classes:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ConfigError(
                f"--model {self.reference}: the network returned {shape} for a batch of "
                f"{x.shape[0]}; it must return scores ({x.shape[0]}, {self.num_classes})"
            )
        c = self.classes_per_task
        if isinstance(task, list | tuple):
            if not self.task_heads:
                raise ValueError("the tasks share every score: there are no slices to concatenate")
            columns = torch.tensor(task, dtype=torch.int64).view(-1, 1) * c + torch.arange(c)
            return out[:, columns.flatten().to(out.device)]
        if c == self.num_classes:
            return out
        if isinstance(task, Tensor):  # each sample its own task's slice
            columns = task.to(out.device).view(-1, 1) * c + torch.arange(c, device=out.device)
            return out.gather(1, columns)
        return out[:, task * c : (task + 1) * c]

    @torch.no_grad()
    def probe(self, x: Tensor) -> None:
        """Run the network once on a few samples (in evaluation mode, nothing changes but
        its reset state): what it cannot take or what it returns of the wrong shape is a
        ConfigError before anything trains."""
        was_training = self.training
        self.eval()
        try:
            self(x)
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(
                f"--model {self.reference}: the network raised {e!r} on a batch of shape "
                f"{tuple(x.shape)} ({x.dtype}), the benchmark's inputs"
            ) from e
        finally:
            self.train(was_training)

    def begin_task(self, task: int, num_classes: int) -> None:
        if num_classes != self.classes_per_task:
            raise ConfigError(
                f"--model {self.reference}: task {task} has {num_classes} classes, the "
                f"network's tasks {self.classes_per_task}"
            )
        self.consolidated = task > 0
        if self.consolidated and self.unprotected == "fix":
            for name, p in self.net.named_parameters():
                if name in self.unprotected_found.parameters:
                    p.requires_grad_(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def gated_layers(self):
        raise ConfigError(
            f"HAT gates the neuron layers of hlop's built-in networks, where it knows them; "
            f"--model {self.reference} is a network of your own: choose another method"
        )

    # ------------------------------------------------------------------ circuits
    def attach_circuits(self, attach: Callable[[nn.Module], Any]) -> None:
        """Give the network's layers circuits once: ``attach(net)`` returns an
        :class:`hlop.HLOP`."""
        if self.circuits_attached is None:
            self.circuits_attached = attach(self.net)
            self.lateral.extend(self.circuits_attached.circuits.values())

    def projected_layers(self) -> list[tuple[str, nn.Module]]:
        hl = self.circuits_attached
        return [] if hl is None else list(hl.layers.items())

    def circuits(self) -> list[LateralCircuit]:
        return list(self.lateral)

    def circuit_inputs(self) -> list[tuple[nn.Module, Callable[[Tensor], Tensor]]]:
        """Every layer with a circuit (:meth:`projected_layers` order) with the function
        giving the activity rows its circuit reads of the layer's input
        (:meth:`hlop.HLOP.rows`: every step of a multi-step input, a convolution's unfolded
        patches, the constant 1 of a protected bias)."""
        hl = self.circuits_attached
        if hl is None:
            return []
        return [(layer, functools.partial(hl.rows, name)) for name, layer in hl.layers.items()]

    def protect(self, optimizer: torch.optim.Optimizer) -> None:
        """Project every step of ``optimizer`` with the circuits' old subspaces
        (:meth:`hlop.HLOP.protect`: Adam, momentum and weight decay keep old responses too);
        an optimiser already protected is left as it is, and nothing happens without
        circuits."""
        if self.circuits_attached is not None and optimizer is not self._protected:
            self.circuits_attached.protect(optimizer)
            self._protected = optimizer

    def circuit_sizes(self) -> list[int]:
        return [c.rows for c in self.circuits()]

    def extra_repr(self) -> str:
        return f"reference={self.reference!r}, num_classes={self.num_classes}"


def fit_preset_lists(
    model: ExternalModel,
    names: Sequence[str],
    section: Any,
    key: str,
    defaults: dict[str, Any],
    also: Sequence[str] = (),
) -> None:
    """Fit a method's settings ``section`` (the configuration section ``key``) to the
    circuits on a network of the user's own, named ``names``: each per-circuit list
    ``section.<field>`` of ``defaults`` whose length is neither 0, 1 nor one per circuit
    (the preset's, written for a built-in network) gives way to ``defaults[field]``.  A
    warning lists what was replaced (and the changes ``also`` made by the caller) and says
    how to set them."""
    changed = []
    for name, default in defaults.items():
        values = getattr(section, name)
        if isinstance(values, list) and len(values) not in (0, 1, len(names)):
            changed.append(f"{key}.{name}={values} -> {default}")
            setattr(section, name, default)
    changed += also
    if changed:
        warnings.warn(
            f"{model.reference} has {len(names)} layers with circuits ({', '.join(names)}); "
            f"the preset's values for another network were replaced: {'; '.join(changed)}. "
            "Set them with --set (one value for every circuit, or one per circuit)",
            stacklevel=3,
        )


def external_model(
    reference: str,
    input_shape: Sequence[int],
    classes_per_task: int,
    tasks: int,
    shared_head: bool,
    timesteps: int,
    unprotected: str = "fix",
) -> ExternalModel:
    """The user's network of ``reference`` for a benchmark, adapted for the loop."""
    num_classes = classes_per_task if shared_head else classes_per_task * tasks
    net = build_network(
        reference,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        tasks=tasks,
        timesteps=timesteps,
    )
    return ExternalModel(net, reference, num_classes, classes_per_task, unprotected)
