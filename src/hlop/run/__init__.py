"""A run from its resolved configuration: the settings tree, the paper's presets, the
components built from them, resume state, outputs and the run's own plugins."""
