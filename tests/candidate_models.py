"""Candidate models a rollout test serves: real ONNX graphs with the contract's inputs that
misbehave in a chosen way."""

from __future__ import annotations

from churnops.contract import TELCO


def failing_graph() -> bytes:
    """An ONNX graph with the contract's inputs that loads but fails when run on any number of
    customers but 14: it reshapes one column into 7 rows of 2."""
    from onnx import TensorProto, helper

    inputs = [
        helper.make_tensor_value_info(
            col.name, TensorProto.FLOAT if col.is_numeric else TensorProto.STRING, [None, 1]
        )
        for col in TELCO.feature_columns
    ]
    numeric = next(col.name for col in TELCO.feature_columns if col.is_numeric)
    graph = helper.make_graph(
        [helper.make_node("Reshape", [numeric, "shape"], ["probabilities"])],
        "fails-when-run",
        inputs,
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        initializer=[helper.make_tensor("shape", TensorProto.INT64, [2], [7, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return bytes(model.SerializeToString())
