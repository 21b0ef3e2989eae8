"""What no circuit protects in a model: the trainable parameters outside the protected layers
and the running statistics of its norms, and the choice of what to do with them after the
first task.

HLOP and GPM keep old tasks' responses by projecting the updates of ``nn.Linear`` /
``nn.Conv2d`` weights (and their biases).  Everything else that learns moves freely: the
affine parameters and running statistics of batch norm and other norms, learnable neuron
parameters (SpikingJelly's ``ParametricLIFNode.w``, learnable thresholds), embeddings, the
parameters of layers left out.  Two choices (``unprotected``):

- ``"fix"``: after the first task they stop training, and norms normalise with the running
  statistics of the first task (evaluation-mode normalisation) while later tasks train, as
  the paper does for batch norm and hlop's built-in networks do for every parameter that is
  not a weight matrix;
- ``"train"``: they keep training (and norms keep updating their statistics) on every task.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from torch import Tensor, nn

from hlop.layers.attached import SUPPORTED

#: the choices for what no circuit protects
CHOICES = ("fix", "train")


def check_choice(value: str, where: str = "unprotected") -> str:
    if value not in CHOICES:
        raise ValueError(f"{where} must be one of {CHOICES}, got {value!r}")
    return value


def has_statistics(module: nn.Module) -> bool:
    """A norm that keeps running statistics (batch norm, instance norm with tracking...)."""
    return getattr(module, "running_mean", None) is not None or (
        getattr(module, "running_var", None) is not None
    )


@dataclass
class Unprotected:
    """What no circuit protects: ``parameters`` (name -> the type of the module holding it)
    and ``statistics`` (names of norm modules with running statistics -> their type)."""

    parameters: dict[str, str] = field(default_factory=dict)
    statistics: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.parameters or self.statistics)

    def describe(self) -> str:
        """One line: the unprotected parameters and statistics, grouped by module type."""
        groups: dict[str, list[int]] = {}
        for kind in self.parameters.values():
            groups.setdefault(kind, [0, 0])[0] += 1
        for kind in self.statistics.values():
            groups.setdefault(kind, [0, 0])[1] += 1
        parts = []
        for kind, (p, s) in groups.items():
            what = [f"{p} parameter{'s' * (p != 1)}"] if p else []
            what += [f"the running statistics of {s} module{'s' * (s != 1)}"] if s else []
            parts.append(f"{kind} ({', '.join(what)})")
        return "; ".join(parts)


def find_unprotected(model: nn.Module, protected: Iterable[Tensor]) -> Unprotected:
    """The trainable parameters of ``model`` not in ``protected``, and its norms with running
    statistics."""
    ids = {id(p) for p in protected}
    out = Unprotected()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in ids:
                full = f"{module_name}.{name}" if module_name else name
                out.parameters[full] = type(module).__name__
        if has_statistics(module):
            out.statistics[module_name] = type(module).__name__
    return out


def layer_parameters(model: nn.Module) -> list[Tensor]:
    """The weights and biases of the model's ``nn.Linear`` / ``nn.Conv2d`` layers: what HLOP
    and GPM protect when every such layer has a circuit."""
    return [
        p
        for m in model.modules()
        if isinstance(m, SUPPORTED)
        for p in (m.weight, m.bias)
        if p is not None
    ]


def message(found: Unprotected, choice: str, setting: str) -> str:
    """What no circuit protects, what was chosen, and how to choose otherwise (``setting``:
    how the user sets it, with ``{}`` or ``{!r}`` for the value)."""
    if choice == "fix":
        done = "they are fixed after the first task (norms keep its statistics)"
        other = f"{setting.format('train')} lets them train on every task"
    else:
        done = "they train on every task"
        other = f"{setting.format('fix')} fixes them after the first task"
    return f"not protected by any circuit: {found.describe()}; {done}; {other}"


def fix_statistics(norm: nn.Module) -> list:
    """Make ``norm`` normalise with its running statistics (and leave them alone) in every
    forward, training or not; returns the hooks' handles (remove them to undo)."""
    state = {}

    def before(module: nn.Module, args: tuple) -> None:
        state["training"], module.training = module.training, False

    def after(module: nn.Module, args: tuple, output) -> None:
        module.training = state.pop("training", module.training)

    return [norm.register_forward_pre_hook(before), norm.register_forward_hook(after)]


class Fixing:
    """What no circuit protects, fixed (:meth:`fix`, idempotent) and released again."""

    def __init__(self) -> None:
        self.fixed: list[Tensor] = []  # the parameters stopped training
        self.handles: list = []

    def fix(self, model: nn.Module, found: Unprotected) -> None:
        """Stop ``found``'s parameters training; its norms normalise with their running
        statistics."""
        if self.fixed or self.handles:
            return
        params = dict(model.named_parameters())
        self.fixed = [params[n] for n in found.parameters if n in params]
        for p in self.fixed:
            p.requires_grad_(False)
        modules = dict(model.named_modules())
        for name in found.statistics:
            self.handles += fix_statistics(modules[name])

    def release(self) -> None:
        for p in self.fixed:
            p.requires_grad_(True)
        for h in self.handles:
            h.remove()
        self.fixed, self.handles = [], []
