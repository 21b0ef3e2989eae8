"""The built-in spiking networks: a base class, one file per architecture, the registry."""
