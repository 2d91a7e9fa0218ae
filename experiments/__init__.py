"""Benchmarks and scripts, the demo spec folder (``fashion_mnist/``: spec, teacher) and the
committed results (``results/``).

Nothing at run time imports this package: the built-in models and data sets live in
:mod:`search.workloads`.
"""
