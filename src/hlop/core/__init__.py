"""The method's core, free of networks and training: lateral circuits, HLOP's task
lifecycle, the projection as plain functions, bf16 products, the subspace measures, the
settings base and the choice lists, and SGD/Adam as torch computes them."""
