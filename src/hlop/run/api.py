"""``hlop.train``: the harness from Python, for a network and data of one's own.

::

    import hlop

    def mlp(input_shape, num_classes):            # a module-level function (re-imported
        return nn.Sequential(...)                 # by name on resume)

    results = hlop.train(mlp, "pmnist-subset", method="gpm", out_dir="runs/mlp-gpm",
                         settings={"epochs": 2, "optimizer": "adam", "lr": 1e-3})

The same run as ``hlop train pmnist-subset --model FILE.py:mlp --method gpm --set ...``: the
benchmark's preset, the defaults for any network, then ``settings`` (the keys of ``--set``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from hlop.errors import ConfigError
from hlop.models.external import is_factory_reference
from hlop.run.config import Config, apply_overrides
from hlop.run.presets import for_any_model, preset


def reference_of(thing: str | Callable | None, what: str) -> str | None:
    """``FILE.py:FUNCTION`` or ``package.module:FUNCTION`` for a function defined at the top
    of a module (a script's functions by its file), or the string given."""
    if thing is None or isinstance(thing, str):
        return thing
    module, name = getattr(thing, "__module__", None), getattr(thing, "__qualname__", "")
    if module is None or not name.isidentifier():
        raise ConfigError(
            f"{what}: {thing!r} is not a function defined at the top of a module; the run "
            "records it by name, to import it again on resume"
        )
    if module == "__main__":
        main = getattr(sys.modules["__main__"], "__file__", None)
        if main is None:
            raise ConfigError(
                f"{what}: {name} is defined in an interactive session; put it in a file and "
                "import it (the run imports it again by name on resume)"
            )
        return f"{Path(main).resolve()}:{name}"
    return f"{module}:{name}"


def run_config(
    model: str | Callable | None = None,
    benchmark: str | Callable = "pmnist-subset",
    method: str = "hlop",
    settings: dict[str, Any] | None = None,
    training: str = "dsr",
) -> Config:
    """The configuration of :func:`train` (nothing trained)."""
    cfg = preset(reference_of(benchmark, "benchmark"), training)
    model = reference_of(model, "model")
    if model is not None:
        if is_factory_reference(model):
            for_any_model(cfg)
        cfg.model = model
    cfg.method = method
    items = [f"{key}={json.dumps(value)}" for key, value in (settings or {}).items()]
    return apply_overrides(cfg, items)


def train(
    model: str | Callable | None = None,
    benchmark: str | Callable = "pmnist-subset",
    method: str = "hlop",
    *,
    out_dir: str | Path,
    settings: dict[str, Any] | None = None,
    training: str = "dsr",
    overwrite: bool = False,
    resume: bool = False,
    stream: TextIO | None = None,
) -> dict:
    """Train ``method`` on ``benchmark`` with ``model`` and write the run to ``out_dir``;
    returns its results (results.json).

    ``model``: a factory (a function, or ``"FILE.py:FUNCTION"``) or a built-in network's
    name (None: the benchmark's); ``benchmark``: a name of ``hlop train``'s, or a function
    returning a :class:`hlop.data.Benchmark` of your data (``hlop.data.tasks_from``,
    ``class_split``, ``permuted``); ``settings``: ``{key: value}`` as ``--set key=value``;
    ``resume``: continue the run saved in ``out_dir``."""
    from hlop.run import experiment

    cfg = run_config(model, benchmark, method, settings, training)
    return experiment.train(cfg, out_dir, overwrite=overwrite, stream=stream, resume=resume)
