"""Layers that protect old tasks: projected Linear / Conv2d layers with their lateral
circuits, and the hooks that give any model's layers circuits (``hlop.HLOP``)."""
