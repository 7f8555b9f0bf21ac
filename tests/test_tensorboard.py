"""The TensorBoard callback: fit small models with it into tmp_path, then read the files back
with TensorBoard's own reader (EventAccumulator) and compare with History, the learning rates
ReduceLROnPlateau set, the weights themselves and the model's layers.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import scripted_score

pytest.importorskip("tensorboard")  # a guard for partial installs; the test extra has it

from tensorboard.backend.event_processing import event_accumulator as ea

import splitgrad as sg
from splitgrad import callbacks as cbks
from splitgrad import losses, nn, optim
from splitgrad.tensorboard.events import histogram_parts
from splitgrad.tensorboard.graph import layer_nodes

KEEP_ALL = {ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0, ea.GRAPH: 0}


def read(folder):
    acc = ea.EventAccumulator(str(folder), size_guidance=KEEP_ALL)
    acc.Reload()
    return acc


def scalars(acc, tag):
    """{step: value} of one scalar tag."""
    return {e.step: e.value for e in acc.Scalars(tag)}


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def _model(lr=0.2):
    sg.seed(0)
    model = nn.Sequential([nn.Dense(8, activation="relu"), nn.Dropout(0.1), nn.Dense(2)])
    model.compile(
        optimizer=optim.SGD(learning_rate=lr),
        loss=losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class Snapshots(cbks.Callback):
    """The weights (by TensorBoard tag) and the learning rate the epoch trained with."""

    def __init__(self):
        self.weights, self.rates = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.rates.append(self.model.optimizer.learning_rate)

    def on_epoch_end(self, epoch, logs=None):
        layers = self.model.layers
        self.weights.append(
            {
                f"{la.name}/{key}": p.data.copy()
                for la in layers
                for key, p in la.named_weights().items()
            }
        )


@pytest.mark.parametrize("tensorboard_first", [False, True])
def test_scalars_histograms_and_graph_read_back(tmp_path, tensorboard_first):
    x, y = _data()
    model = _model()
    snaps = Snapshots()
    board = cbks.TensorBoard(tmp_path / "run", histogram_freq=1, update_freq="batch")
    reduce = cbks.ReduceLROnPlateau(monitor="score", mode="min", factor=0.5, patience=1)
    lr_callbacks = [scripted_score([3.0, 2.0, 2.5, 2.6, 1.0]), reduce]
    ordered = [board, *lr_callbacks] if tensorboard_first else [*lr_callbacks, board]
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=5,
        validation_split=0.25,
        verbose=0,
        seed=0,
        callbacks=[snaps, *ordered],
    )
    epochs = list(range(5))
    train, val = read(tmp_path / "run" / "train"), read(tmp_path / "run" / "validation")

    # Epoch scalars: History's numbers (stored as float32 by TensorBoard), at step = epoch.
    for name in ("loss", "accuracy"):
        assert scalars(train, f"epoch_{name}") == {
            e: np.float32(v) for e, v in zip(epochs, history.history[name])
        }
        assert scalars(val, f"epoch_{name}") == {
            e: np.float32(v) for e, v in zip(epochs, history.history[f"val_{name}"])
        }
    # The learning rate each epoch trained with, whichever side of ReduceLROnPlateau it is on.
    assert snaps.rates == pytest.approx([0.2, 0.2, 0.2, 0.1, 0.05])
    assert scalars(train, "epoch_learning_rate") == {
        e: np.float32(r) for e, r in zip(epochs, snaps.rates)
    }
    # Batch scalars: 72 training rows in batches of 32 = 3 per epoch, numbered from 1.
    assert sorted(scalars(train, "batch_loss")) == list(range(1, 16))
    assert sorted(scalars(val, "evaluation_loss_vs_iterations")) == [3, 6, 9, 12, 15]

    # Histograms of every weight at every epoch: the counts add up to its size, and min, max,
    # sum and the sum of squares are the weight's own.
    tags = train.Tags()["histograms"]
    assert sorted(tags) == sorted(f"{t}/histogram" for t in snaps.weights[0])
    for tag in snaps.weights[0]:
        events = train.Histograms(f"{tag}/histogram")
        assert [e.step for e in events] == epochs
        for event, weights in zip(events, snaps.weights):
            w, h = weights[tag].astype(np.float64), event.histogram_value
            assert sum(h.bucket) == h.num == w.size
            assert (h.min, h.max) == (w.min(), w.max())
            assert h.sum == pytest.approx(w.sum(), rel=1e-12, abs=1e-12)
            assert h.sum_squares == pytest.approx((w * w).sum(), rel=1e-12)
            assert len(h.bucket) in (1, 30)

    # The graph: an input, then one node per layer, each reading the one before.
    graph = train.Graph()
    assert [(n.name, n.op, list(n.input)) for n in graph.node] == [
        ("input", "Placeholder", []),
        ("dense", "Dense", ["input"]),
        ("dropout", "Dropout", ["dense"]),
        ("dense_1", "Dense", ["dropout"]),
    ]
    shapes = [[d.size for d in n.attr["_output_shapes"].list.shape[0].dim] for n in graph.node]
    assert shapes == [[-1, 4], [-1, 8], [-1, 8], [-1, 2]]
    assert [n.attr["params"].i for n in graph.node[1:]] == [40, 0, 18]


def test_update_freq_and_no_validation_folder(tmp_path):
    x, y = _data()
    model = _model()
    board = cbks.TensorBoard(tmp_path, update_freq=2, write_graph=False)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, seed=0, callbacks=[board])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]
    train = read(tmp_path / "train")
    assert sorted(scalars(train, "batch_loss")) == [2, 4, 6]
    assert train.Tags()["histograms"] == [] and not train.Tags()["graph"]
    # A second fit with the same callback goes on counting batches, in a new event file.
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, seed=0, callbacks=[board])
    assert sorted(scalars(read(tmp_path / "train"), "batch_loss")) == [2, 4, 6, 8]
    assert len(list((tmp_path / "train").iterdir())) == 2


def test_graph_of_a_convnet_with_a_nested_block(tmp_path):
    sg.seed(0)
    block = nn.Sequential(
        [nn.Dense(16, activation="relu"), nn.Dense(16, activation="relu")], name="block"
    )
    model = nn.Sequential(
        [
            nn.Conv2D(4, 3, activation="relu"),
            nn.MaxPooling2D(2),
            nn.Flatten(),
            block,
            nn.Dense(3),
        ]
    )
    model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype(np.float32)
    y = np.arange(8) % 3
    board = cbks.TensorBoard(tmp_path, histogram_freq=1)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[board])
    graph = read(tmp_path / "train").Graph()
    names = [n.name for n in graph.node]
    leaves = [*model.layers[:3], *block.layers, model.layers[4]]
    scoped = [la.name for la in model.layers[:3]] + ["block/dense", "block/dense_1", "dense"]
    assert names == ["input", *scoped]
    assert [n.op for n in graph.node[1:]] == [type(la).__name__ for la in leaves]
    assert [n.op for n in graph.node[1:4]] == ["Conv2D", type(model.layers[1]).__name__, "Flatten"]
    # Each node reads the one before it; its shape is what the layer really outputs.
    assert all(list(n.input) == [prev] for n, prev in zip(graph.node[1:], names))
    out, expected = x[:1], []
    for layer in leaves:
        out = layer(out)
        expected.append([-1, *out.shape[1:]])
    shapes = [[d.size for d in n.attr["_output_shapes"].list.shape[0].dim] for n in graph.node]
    assert shapes[1:] == expected
    hist = read(tmp_path / "train").Tags()["histograms"]
    assert "block/dense_1/kernel/histogram" in hist and "conv2d/kernel/histogram" in hist


def test_subclassed_model_with_repeated_layer_names():
    class TwoHeads(sg.model.Model):
        def __init__(self):
            super().__init__(name="two_heads")
            self.first = nn.Dense(4, name="proj")
            self.second = nn.Dense(2, name="proj")

        def call(self, x):
            return self.second(self.first(x))

    model = TwoHeads()
    model(np.zeros((1, 3), np.float32))
    nodes = layer_nodes(model)
    assert [(n.name, n.op, n.inputs) for n in nodes] == [
        ("input", "Placeholder", []),
        ("proj", "Dense", ["input"]),
        ("proj_1", "Dense", ["proj"]),
    ]
    assert [n.output_shapes for n in nodes] == [[(None, 3)], [(None, 4)], [(None, 2)]]


def test_graph_of_a_functional_model_has_its_real_edges(tmp_path):
    from splitgrad.layers.input_layer import Input
    from splitgrad.layers.merge import Add, Concatenate
    from splitgrad.model import Model

    sg.seed(0)
    a, b = Input((4,), name="a"), Input((4,), name="b")
    shared = nn.Dense(5, name="shared")  # called on both inputs: one node, two edges in
    both = Concatenate(name="both")([shared(a), shared(b)])
    model = Model([a, b], nn.Dense(2, name="head")(Add(name="twice")([both, both])))
    model.compile(optimizer="sgd", loss="mse")
    x = [np.zeros((8, 4), np.float32), np.ones((8, 4), np.float32)]
    board = cbks.TensorBoard(tmp_path, histogram_freq=1)
    model.fit(x, np.zeros((8, 2), np.float32), epochs=1, verbose=0, callbacks=[board])
    train = read(tmp_path / "train")
    graph = train.Graph()
    assert [(n.name, n.op, list(n.input)) for n in graph.node] == [
        ("a", "Placeholder", []),
        ("b", "Placeholder", []),
        ("shared", "Dense", ["a", "b"]),
        ("both", "Concatenate", ["shared"]),
        ("twice", "Add", ["both"]),
        ("head", "Dense", ["twice"]),
    ]
    shapes = [[d.size for d in n.attr["_output_shapes"].list.shape[0].dim] for n in graph.node]
    assert shapes == [[-1, 4], [-1, 4], [-1, 5], [-1, 10], [-1, 10], [-1, 2]]
    assert sorted(train.Tags()["histograms"]) == sorted(
        f"{la}/{w}/histogram" for la in ("shared", "head") for w in ("kernel", "bias")
    )


def test_histogram_parts_edge_cases():
    constant = histogram_parts(np.full((3, 2), 0.5))
    assert constant["bucket"] == [6.0] and constant["bucket_limit"] == [0.5]
    assert (constant["min"], constant["max"], constant["num"]) == (0.5, 0.5, 6.0)
    diverged = histogram_parts(np.array([1.0, np.nan, -1.0, np.inf]), bins=4)
    assert diverged["num"] == 2.0 and sum(diverged["bucket"]) == 2.0
    assert (diverged["min"], diverged["max"]) == (-1.0, 1.0)
    assert diverged["bucket_limit"] == [-0.5, 0.0, 0.5, 1.0]


def test_arguments_keras_has_and_we_do_not():
    with pytest.raises(ValueError, match="write_images=True.*leave write_images unset"):
        cbks.TensorBoard(write_images=True)
    with pytest.raises(ValueError, match="update_freq must be 'epoch', 'batch'"):
        cbks.TensorBoard(update_freq="step")
    with pytest.raises(ValueError, match="histogram_freq"):
        cbks.TensorBoard(histogram_freq=-1)
    board = cbks.TensorBoard(write_images=False, profile_batch=0, embeddings_freq=0)
    assert board.update_freq == "epoch" and board.write_graph


def test_missing_tensorboard_names_the_extra(monkeypatch):
    # None in sys.modules makes `import` fail, for the package and every loaded submodule.
    for name in [m for m in sys.modules if m.split(".")[0] == "tensorboard"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'splitgrad\[tensorboard\]'"):
        cbks.TensorBoard("logs")


def test_importing_splitgrad_loads_neither_tensorboard_nor_protobuf():
    code = (
        "import sys, splitgrad\n"
        "from splitgrad.callbacks import ReduceLROnPlateau, TensorBoard\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'google')]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_train_command_writes_event_files(tmp_path):
    """`splitgrad train RECIPE --tensorboard DIR`: the recipe's epochs and weights land in DIR."""
    from splitgrad import cli

    logs = tmp_path / "tb"
    cli.main(
        ["train", "digits-mlp", "--quick", "--quiet", "--out", str(tmp_path / "run"),
         "--tensorboard", str(logs)]
    )  # fmt: skip
    acc = read(logs / "train")
    assert len(scalars(acc, "epoch_loss")) >= 1
    assert any(tag.endswith("kernel/histogram") for tag in acc.Tags()["histograms"])
