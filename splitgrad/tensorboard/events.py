"""`EventWriter`: one TensorBoard event file, written synchronously.

An event file is a sequence of records, each one serialised `Event` protobuf framed as
TFRecord does (length, CRC of the length, bytes, CRC of the bytes). tensorboard's own
`RecordWriter` does the framing and the CRCs; this file only builds the events:

* a scalar is a `Summary.Value(simple_value=...)` (float32, as TensorBoard stores scalars);
* a histogram is a `HistogramProto` (min, max, num, sum, sum of squares, and buckets whose
  right edges are `bucket_limit`), TensorBoard's classic histogram, read by its
  Histograms and Distributions tabs;
* the graph is a serialised `GraphDef` in `Event.graph_def` (see graph.py).

The file is named like TensorFlow's (events.out.tfevents.<time>.<host>.<pid>.<n>.v2), so that
TensorBoard finds it in any folder under `--logdir`.
"""

from __future__ import annotations

import itertools
import os
import socket
import time

import numpy as np

from . import require

_FILE_NUMBER = itertools.count()  # two writers opened in the same second get distinct names


def histogram_parts(values, bins=30) -> dict:
    """The fields of a HistogramProto for `values` (any shape; float64 arithmetic).

    `bins` equal-width buckets over [min, max] (np.histogram: each bucket includes its left
    edge, the last also its right). TensorBoard takes bucket i to span
    (bucket_limit[i−1], bucket_limit[i]] with min and max as the outer edges, so the right
    edges are exactly np.histogram's. All-equal values make one bucket. Non-finite entries
    (a diverged run) are left out of every field: `num` counts the finite ones.
    """
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return {"min": 0.0, "max": 0.0, "num": 0.0, "sum": 0.0, "sum_squares": 0.0}
    low, high = float(flat.min()), float(flat.max())
    if low == high:
        counts, limits = np.array([flat.size]), np.array([high])
    else:
        counts, edges = np.histogram(flat, bins=bins, range=(low, high))
        limits = edges[1:]
    return {
        "min": low,
        "max": high,
        "num": float(flat.size),
        "sum": float(flat.sum()),
        "sum_squares": float(np.dot(flat, flat)),
        "bucket_limit": limits.tolist(),
        "bucket": counts.astype(np.float64).tolist(),
    }


class EventWriter:
    """Appends events to a new event file in `log_dir` (created if missing).

    `scalar(tag, value, step)`, `histogram(tag, values, step)` and `graph(graph_def)` each
    write one event; `flush()` makes them visible to a running TensorBoard; `close()` ends
    the file. Writes happen in the caller's thread (no background writer to outlive `fit`).
    """

    def __init__(self, log_dir):
        self._pb = require()
        self.log_dir = os.fspath(log_dir)
        os.makedirs(self.log_dir, exist_ok=True)
        stamp = f"{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        name = f"events.out.tfevents.{stamp}.{next(_FILE_NUMBER)}.v2"
        self.path = os.path.join(self.log_dir, name)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self._records = self._pb.RecordWriter(self._file)
        # The first event of every file names the format version; readers check it.
        self._write(self._pb.event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event):
        self._records.write(event.SerializeToString())

    def _summary(self, step, value):
        summary = self._pb.summary_pb2.Summary(value=[value])
        self._write(
            self._pb.event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        )

    def scalar(self, tag, value, step):
        self._summary(step, self._pb.summary_pb2.Summary.Value(tag=tag, simple_value=float(value)))

    def histogram(self, tag, values, step, bins=30):
        histo = self._pb.summary_pb2.HistogramProto(**histogram_parts(values, bins))
        self._summary(step, self._pb.summary_pb2.Summary.Value(tag=tag, histo=histo))

    def graph(self, graph_def):
        self._write(
            self._pb.event_pb2.Event(wall_time=time.time(), graph_def=graph_def.SerializeToString())
        )

    def flush(self):
        self._records.flush()

    def close(self):
        if not self._file.closed:
            self._records.flush()
            self._records.close()
