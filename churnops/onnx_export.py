"""Export a fitted pipeline to ONNX (interface 2); `churnops.scoring` runs it.

One ONNX input per contract feature, named as the column, shape [None, 1]: tensor(string) for
categories (canonical spellings), tensor(float) for numerics. Output ``probabilities`` is
[N, 2] (ZipMap off) with the positive class at index 1. The serving Lambda uses only
onnxruntime and numpy to run it.
"""

from __future__ import annotations

from typing import Any

from churnops.contract import Contract
from churnops.scoring import POSITIVE_INDEX, PROBABILITY_OUTPUT

TARGET_OPSET = 17


def onnx_signature(contract: Contract) -> dict[str, Any]:
    """The card's `onnx` entry."""
    numeric = set(contract.numeric_features)
    return {
        "inputs": [
            {"name": name, "type": "float" if name in numeric else "string"}
            for name in contract.feature_names
        ],
        "probability_output": PROBABILITY_OUTPUT,
        "positive_index": POSITIVE_INDEX,
    }


def export(model: Any, contract: Contract) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if list(model.classes_) != [0, 1]:
        raise ValueError(f"expected classes [0, 1], got {list(model.classes_)}")
    numeric = set(contract.numeric_features)
    initial_types = [
        (name, FloatTensorType([None, 1]) if name in numeric else StringTensorType([None, 1]))
        for name in contract.feature_names
    ]
    onx = convert_sklearn(
        model,
        initial_types=initial_types,
        options={id(model): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    names = [o.name for o in onx.graph.output]
    if PROBABILITY_OUTPUT not in names:
        raise ValueError(f"ONNX graph lacks output {PROBABILITY_OUTPUT}: {names}")
    return bytes(onx.SerializeToString())
