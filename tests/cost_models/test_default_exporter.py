"""Networks exported as a user exports them, with ``torch.onnx.export``'s defaults (the dynamo
exporter, a recent opset): ``from_onnx`` reads them as ``from_torch`` reads the module."""

from __future__ import annotations

import io
import logging
import random
import warnings

import onnx
import pytest
import torch

from cost_models import from_onnx, from_torch
from experiments.held_out_nets import FAMILIES, build


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_default_exporter_agrees_with_torch(family: str) -> None:
    model = build(family, random.Random(11), 3, 11)
    buf = io.BytesIO()
    logging.disable(logging.WARNING)  # the exporter logs its progress
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), buf)  # type: ignore[arg-type]
    finally:
        logging.disable(logging.NOTSET)
    exported = onnx.load_from_string(buf.getvalue())
    assert exported.opset_import[0].version >= 18  # not the TorchScript exporter's
    ours, _ = from_onnx(exported)
    theirs = from_torch(model, (3, 32, 32))
    key = lambda g: sorted((la.kind, la.out_shape, la.macs, la.params) for la in g.layers)  # noqa: E731
    assert key(ours) == key(theirs)
