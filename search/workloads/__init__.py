"""The workload of a study: the teacher, the data subsets and the teacher's logits.

A spec names a model and a data set, either built in or as ``module:function``; they are turned
into objects here, in one place:

* :mod:`search.workloads.data`: :class:`Dataset`, :func:`load_data` and :func:`split` (the
  fine-tune, validation and calibration subsets);
* :mod:`search.workloads.build`: :func:`build_model`, :func:`model_as_written`,
  :func:`load_teacher`, :func:`teacher_cache_path`, and :func:`build_workload`, which makes
  the :class:`Workload` every trial of a study shares;
* :mod:`search.workloads.objects`: a model and data given as Python objects (``search.api``)
  instead of names;
* :mod:`search.workloads.augment`: ``data.augment``, resolved and tried once;
* :mod:`search.workloads.models`: the built-in models (``resnet8``, ``dscnn``,
  ``mobilenetv2``, ``mobilenetv3``, ``densenet``);
* :mod:`search.workloads.fashion_mnist`: the built-in data set's idx reader and normalization.

Importing this package does not import torch: the built-in models and data set are imported
when a spec names them.
"""

from __future__ import annotations

from search.workloads.build import (
    Workload,
    build_model,
    build_workload,
    load_teacher,
    model_as_written,
    teacher_cache_path,
)
from search.workloads.data import Dataset, load_data, split, training_images

__all__ = [
    "Dataset",
    "Workload",
    "build_model",
    "build_workload",
    "load_data",
    "load_teacher",
    "model_as_written",
    "split",
    "teacher_cache_path",
    "training_images",
]
