"""Time layouts: how the rows of an activity tensor hold the ``T`` time steps of ``B``
samples.  One vocabulary for the neurons, the projected layers and the hooks of
:class:`hlop.HLOP`; a network sets one layout for all its layers at once.

* ``STEPS``: every step in one call, time-major: ``T * B`` rows (``[T, B, ...]`` flattened;
  a multi-step layer's ``[T, B, ...]`` input is the same rows).
* ``FAST``: the DSR fast layout, ``T + 1`` slices: the ``T`` exact per-step values, then the
  rate slice, which alone carries gradient (:mod:`hlop.spiking.neurons`).
* ``ONLINE``: one time step per call (``[B, ...]``), state kept between calls (OTTT).  A
  projected layer's input then stacks ``[spikes; traces]``: the forward reads the spikes,
  the weight update the presynaptic traces.
* ``STATIC``: the input layer on the static image, computed once for every step (the image
  is the same at each); its rows are the ``B`` samples.
"""

from __future__ import annotations

from enum import Enum


class TimeLayout(str, Enum):
    """The time layout of an activity tensor (module docstring).  Members compare equal to
    their names' strings (``TimeLayout.FAST == "fast"``), so settings may be given either
    way."""

    STEPS = "steps"
    FAST = "fast"
    ONLINE = "online"
    STATIC = "static"

    def __str__(self) -> str:
        return self.value


def time_layout(value: str | TimeLayout, accepted: tuple[TimeLayout, ...], who: str) -> TimeLayout:
    """``value`` as a :class:`TimeLayout`, if it is one of ``accepted``; else ValueError
    naming ``who`` and the layouts it accepts."""
    try:
        layout = TimeLayout(value)
    except ValueError:
        layout = None
    if layout not in accepted:
        names = ", ".join(repr(a.value) for a in accepted)
        raise ValueError(f"{who} supports the layouts {names}, not {value!r}")
    return layout
