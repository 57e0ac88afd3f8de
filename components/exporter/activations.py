"""Which op computes a signature output: tells a sigmoid/softmax classifier from a regressor.

A float ``[batch, 1]`` output is a regression value or the probability of a binary classifier;
the shape cannot tell, the graph can. Keras ``Dense(..., activation="sigmoid")``,
``keras.layers.Softmax``, ``tf.nn.sigmoid``/``tf.nn.softmax`` and Estimator heads all end in a
``Sigmoid`` or ``Softmax`` op. This module follows the output tensor back through ops that only
forward a value (identities, reshapes, function calls: TF2 SavedModels wrap the model in nested
``StatefulPartitionedCall``s into the function library) to the op that computes it, reading
``saved_model.pb`` only (nothing is loaded or run).
"""

from __future__ import annotations

import os

import tensorflow as tf
from tensorflow.core.framework import function_pb2, node_def_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

SIGMOID = "Sigmoid"
SOFTMAX = "Softmax"
_FORWARDING = frozenset({"Identity", "IdentityN", "Snapshot", "Reshape", "Squeeze", "ExpandDims"})
_CALLS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})
_MAX_HOPS = 200  # graphs are acyclic; this only bounds a malformed one


def output_ops(saved_model_dir: str, signature_name: str) -> dict[str, str | None]:
    """Output key -> computing op type, for one signature of the ``serve`` MetaGraph."""
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == {"serve"}:
            signature = meta_graph.signature_def.get(signature_name)
            if signature is None:
                return {}
            return {k: computing_op(meta_graph, v.name) for k, v in signature.outputs.items()}
    return {}


def computing_op(meta_graph: meta_graph_pb2.MetaGraphDef, tensor_name: str) -> str | None:
    """The type of the op that computes ``tensor_name`` (a signature output's ``name``),
    looking through forwarding ops and function calls; None if it cannot be followed."""
    functions = {f.signature.name: f for f in meta_graph.graph_def.library.function}
    graph_nodes = {n.name: n for n in meta_graph.graph_def.node}
    scope: function_pb2.FunctionDef | None = None
    nodes = graph_nodes
    name = tensor_name
    for _ in range(_MAX_HOPS):
        node_name, output_index = _parse(name, in_function=scope is not None)
        if scope is not None and node_name in {a.name for a in scope.signature.input_arg}:
            return None  # a function argument: the value comes from the caller's input
        node: node_def_pb2.NodeDef | None = nodes.get(node_name)
        if node is None:
            return None
        if node.op in _CALLS:
            callee = functions.get(node.attr["f"].func.name)
            if callee is None or output_index >= len(callee.signature.output_arg):
                return None
            scope = callee
            nodes = {n.name: n for n in callee.node_def}
            name = callee.ret[callee.signature.output_arg[output_index].name]
        elif node.op in _FORWARDING:
            data_inputs = [i for i in node.input if not i.startswith("^")]
            index = output_index if node.op == "IdentityN" else 0
            if index >= len(data_inputs):
                return None
            name = data_inputs[index]
        else:
            return node.op
    return None


def _parse(name: str, *, in_function: bool) -> tuple[str, int]:
    """``node:index`` in a graph, ``node:output_arg:index`` inside a function body."""
    parts = name.split(":")
    if len(parts) == 1:
        return parts[0], 0
    if in_function and len(parts) == 3:
        return parts[0], int(parts[2])
    return parts[0], int(parts[-1])
