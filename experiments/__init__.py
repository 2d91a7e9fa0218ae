"""The workloads: built-in models (``experiments.models``), data set loaders
(``experiments.fashion_mnist``), example specs, benchmark scripts and their committed results.

Nothing is imported here, so naming one workload does not load torch for the others.
"""
