"""TensorBoard output: event files that TensorBoard itself reads, written with the `tensorboard`
package's own protobufs and record writer (an optional extra: pip install 'splitgrad[tensorboard]').

| file      | what                                                                      |
|-----------|---------------------------------------------------------------------------|
| events.py | `EventWriter`: one event file; scalars, weight histograms, the graph      |
| graph.py  | the model as a GraphDef: one node per layer, for the Graphs tab           |

The callback that drives them during `fit` is `splitgrad.callbacks.TensorBoard`
(splitgrad/callbacks/tensorboard.py). Nothing here imports `tensorboard` until `require()` is
called, so `import splitgrad` stays light.
"""

from __future__ import annotations

from types import SimpleNamespace

INSTALL = "pip install 'splitgrad[tensorboard]'"


def require() -> SimpleNamespace:
    """The tensorboard modules splitgrad writes with (event_pb2, summary_pb2, graph_pb2,
    node_def_pb2, attr_value_pb2, tensor_shape_pb2, RecordWriter), or an ImportError that
    names the extra to install."""
    try:
        from tensorboard.compat.proto import (
            attr_value_pb2,
            event_pb2,
            graph_pb2,
            node_def_pb2,
            summary_pb2,
            tensor_shape_pb2,
        )
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError as exc:
        raise ImportError(
            f"The TensorBoard callback writes TensorBoard's event files with the `tensorboard` "
            f"package, which is not installed ({exc}). Install the extra: {INSTALL}"
        ) from exc
    return SimpleNamespace(
        attr_value_pb2=attr_value_pb2,
        event_pb2=event_pb2,
        graph_pb2=graph_pb2,
        node_def_pb2=node_def_pb2,
        summary_pb2=summary_pb2,
        tensor_shape_pb2=tensor_shape_pb2,
        RecordWriter=RecordWriter,
    )
