"""ONNX export: every recipe's model, every layer and activation, run in ONNX Runtime (CPU),
gives what splitgrad's `predict` gives, to float32 precision (atol and rtol 1e-5).

ONNX Runtime is the independent witness here: it has its own convolutions, pools and
recurrent kernels, so a layout, gate-order or padding slip in a converter shows up as a
difference. Hypothesis draws the convolution and pool geometries.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")  # a guard for partial installs: CI installs the onnx extra
ort = pytest.importorskip("onnxruntime")

import onnx
from hypothesis import assume, given
from hypothesis import strategies as st

import splitgrad as sg
from splitgrad import cli, nn, recipes
from splitgrad.interop import export_cli
from splitgrad.interop import onnx_export as ox
from splitgrad.layers import activations

TOL = {"atol": 1e-5, "rtol": 1e-5}


def run_onnx(proto, x):
    """The exported model's output on x, from ONNX Runtime's CPU provider."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    x = np.asarray(x).astype(np.int64 if spec.type == "tensor(int64)" else np.float32)
    return session.run(None, {spec.name: x})[0]


def check(model, x, opset=ox.DEFAULT_OPSET, also=(), sample=True):
    """Export (from a sample, x's first row, unless sample=False), then assert ONNX Runtime's
    output equals predict on x and on each array in `also` (other batch sizes or lengths)."""
    proto = ox.to_onnx(model, sample=x[:1] if sample else None, opset=opset)
    for batch in (x, *also):
        got = run_onnx(proto, batch)
        want = model.predict(batch)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, **TOL)
    return proto


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----- every recipe ------------------------------------------------------------------------
def recipe_model(name):
    """The recipe's model, built by its build_model on its QUICK data, and inputs for it."""
    recipe = recipes.get(name)
    settings = recipes.settings_for(recipe, quick=True)
    sg.seed(0)
    data, _ = recipes.load_recipe_data(name, recipe, True, 0)
    model = recipe.build_model(settings["learning_rate"], data)
    x = getattr(data, "x_test", None)
    if x is None:  # the agents: observations of the environment
        x = rand(16, data.info.obs_size)
    return model, np.asarray(x[:16])


@pytest.mark.parametrize("name", list(recipes.RECIPES))
def test_every_recipe_model_runs_in_onnxruntime_like_predict(name):
    model, x = recipe_model(name)
    model.build_from_sample(x[:1])  # built as training builds it: exported without a sample
    proto = check(model, x, also=[x[:3]], sample=False)
    if x.ndim == 2 and x.dtype.kind in "iu":  # token ids: any sequence length
        assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
        np.testing.assert_allclose(run_onnx(proto, x[:4, :37]), model.predict(x[:4, :37]), **TOL)


def test_briefly_trained_models_with_batchnorm_statistics():
    rng = np.random.default_rng(0)
    x = rng.random((256, 8, 8, 1), dtype=np.float32) * 4 + 1  # far from BN's initial 0 / 1
    y = rng.integers(0, 3, 256)
    sg.seed(0)
    model = nn.Sequential(
        [
            nn.Conv2D(6, 3, padding="same"),
            nn.BatchNormalization(momentum=0.5),
            nn.Activation("relu"),
            nn.MaxPool2D(2),
            nn.Flatten(),
            nn.Dense(16),
            nn.BatchNormalization(momentum=0.5, epsilon=1e-5),
            nn.Dropout(0.3),
            nn.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    assert np.abs(model.layers[1].moving_mean.data).max() > 0.5
    check(model, x[:32], also=[x[:5]])

    gan, images = recipe_model("gan")  # the DCGAN generator: Conv2DTranspose and BatchNorm
    gan.compile()
    for _ in range(2):
        gan.train_on_batch(images, images)
    assert np.abs(gan.generator.layers[1].moving_mean.data).max() > 0
    check(gan.generator, gan.noise(8, np.random.default_rng(1)))


def test_an_autoencoders_and_a_vaes_networks_export_on_their_own():
    for name in ("autoencoder", "vae"):
        model, x = recipe_model(name)
        model.build_from_sample(x[:1])
        check(model.encoder, x)
        check(model.decoder, rand(8, model.latent_dim))


# ----- layers ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(k for k in activations.ACTIVATIONS if k))
def test_every_activation(name):
    x = rand(16, 5) * 12  # large values too: softplus, elu and the exponentials' tails
    check(nn.Sequential([nn.Dense(7, activation=name)]), x)
    check(nn.Sequential([nn.Activation(name)]), x)


@given(
    size=st.tuples(st.integers(3, 9), st.integers(3, 9)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    strides=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dilation=st.integers(1, 2),
    padding=st.sampled_from(["valid", "same", 0, 1, 2]),
    channels=st.integers(1, 3),
    transpose=st.booleans(),
)
def test_convolutions(size, kernel, strides, dilation, padding, channels, transpose):
    layer_cls = nn.Conv2DTranspose if transpose else nn.Conv2D
    if transpose and isinstance(padding, int):
        assume(padding < min(kernel))  # leaves output pixels
    if not transpose:
        span = [dilation * (k - 1) + 1 for k in kernel]
        pad = 0 if padding in ("valid", "same") else 2 * padding
        assume(padding == "same" or all(s + pad >= w for s, w in zip(size, span)))
    model = nn.Sequential(
        [layer_cls(4, kernel, strides=strides, padding=padding, dilation_rate=dilation)]
    )
    check(model, rand(3, *size, channels), also=[rand(1, *size, channels, seed=1)])


@given(
    size=st.tuples(st.integers(2, 9), st.integers(2, 9)),
    pool=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    strides=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    padding=st.sampled_from(["valid", "same", 1]),
    kind=st.sampled_from([nn.MaxPool2D, nn.AvgPool2D]),
)
def test_pools(size, pool, strides, padding, kind):
    pad = 2 if padding == 1 else 0
    assume(padding == "same" or all(s + pad >= p for s, p in zip(size, pool)))
    if padding == 1:
        assume(min(pool) > 1)  # ONNX wants pads smaller than the window
    check(nn.Sequential([kind(pool, strides=strides, padding=padding)]), rand(2, *size, 3))


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_average_pooling(keepdims):
    check(nn.Sequential([nn.GlobalAveragePooling2D(keepdims=keepdims)]), rand(4, 5, 6, 3))


@pytest.mark.parametrize(
    "shape, axis, center, scale",
    [((8, 5), -1, True, True), ((8, 4, 4, 3), -1, True, False), ((8, 4, 6, 3), 2, False, True)],
)
def test_batch_normalization_uses_its_moving_statistics(shape, axis, center, scale):
    layer = nn.BatchNormalization(axis=axis, center=center, scale=scale)
    model = nn.Sequential([layer])
    model.predict(rand(*shape))
    rng = np.random.default_rng(3)
    for w in layer.weights:
        w.data[...] = rng.random(w.shape) + 0.5
    check(model, rand(*shape, seed=4) * 3)


@pytest.mark.parametrize("cls", ["SimpleRNN-tanh", "SimpleRNN-relu", "LSTM", "GRU"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_recurrent_layers(cls, return_sequences, go_backwards):
    kind, _, act = cls.partition("-")
    extra = {"activation": act} if act else {}
    layer = getattr(nn, kind)(
        6, return_sequences=return_sequences, go_backwards=go_backwards, **extra
    )
    # Any batch size and any sequence length: batch and time are free axes of the graph.
    proto = check(nn.Sequential([layer]), rand(4, 7, 3), also=[rand(2, 12, 3, seed=1)])
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[:2]] == ["batch", "time"]


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional(merge_mode, return_sequences):
    layer = nn.Bidirectional(nn.GRU(4, return_sequences=return_sequences), merge_mode=merge_mode)
    check(nn.Sequential([layer, nn.Dense(2)]), rand(3, 6, 5), also=[rand(2, 9, 5, seed=2)])


def test_embedding_reshape_flatten_dropout_and_nested_models():
    inner = nn.Sequential([nn.Dense(8, activation="tanh"), nn.Dropout(0.5)], name="inner")
    model = nn.Sequential(
        [
            nn.Embedding(30, 4),
            nn.Reshape((-1,)),
            inner,
            nn.Reshape((2, 4)),
            nn.LSTM(5),
            nn.Flatten(),
            nn.Dense(3),
        ]
    )
    ids = np.random.default_rng(0).integers(0, 30, (6, 5))
    model.train()  # export switches to inference mode (no dropout) and back
    proto = check(model, ids)
    assert model.training
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_recompute_blocks_export_as_the_block():
    recompute = pytest.importorskip("splitgrad.layers.recompute")
    block = nn.Sequential([nn.Conv2D(4, 3, activation="relu"), nn.MaxPool2D(2)])
    model = nn.Sequential([recompute.Recompute(block), nn.Flatten(), nn.Dense(3)])
    check(model, rand(4, 8, 8, 2))


@pytest.mark.parametrize("opset", [13, 17, 18, 20])
def test_opsets(opset):
    model = nn.Sequential(
        [nn.Conv2D(3, 3, activation="gelu"), nn.GlobalAveragePooling2D(), nn.Dense(2)]
    )
    proto = check(model, rand(4, 6, 6, 2), opset=opset)
    assert proto.opset_import[0].version == opset
    assert any(n.op_type == "Gelu" for n in proto.graph.node) == (opset >= 20)


def test_a_float64_model_exports_in_float32_and_integer_features_stay_numbers():
    model = nn.Sequential([nn.Dense(6, activation="relu"), nn.Dense(2)], dtype="float64")
    check(model, rand(5, 4).astype(np.float64))
    proto = check(nn.Sequential([nn.Dense(3)]), np.arange(12).reshape(4, 3))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_export_writes_a_file_that_onnx_checks(tmp_path):
    model = nn.Sequential([nn.Dense(3)])
    path = ox.export_onnx(model, tmp_path / "m.onnx", sample=rand(2, 4))
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert ox.compare_with_runtime(model, path, rand(9, 4)) < 1e-6
    assert model.export(tmp_path / "m2.onnx") == tmp_path / "m2.onnx"  # Keras 3's spelling
    assert (tmp_path / "m2.onnx").read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match="format 'tf_saved_model' is not supported"):
        model.export(tmp_path / "m3", format="tf_saved_model")


# ----- functional models -------------------------------------------------------------------
functional_api = pytest.mark.skipif(
    not hasattr(nn, "Input"), reason="the functional API (splitgrad.Input) is not in this tree"
)


@functional_api
def test_a_functional_model_with_two_inputs_two_outputs_and_a_shared_layer(
    tmp_path, capsys, with_export
):
    words = nn.Input((None,), dtype="int64", name="words")
    numbers = nn.Input((4,), name="numbers")
    shared = nn.Dense(6, activation="tanh", name="shared")
    text = nn.LSTM(6, name="reader")(nn.Embedding(40, 5)(words))
    a, b = shared(text), shared(nn.Dense(6)(numbers))
    joined = nn.Concatenate()([a, b, nn.Add()([a, b])])
    mixed = nn.Average()([nn.Subtract()([a, b]), nn.Multiply()([a, b])])
    model = sg.Model(
        [words, numbers],
        [nn.Dense(3, name="kind")(joined), nn.Dense(1, name="price")(mixed)],
        name="shop",
    )
    rng = np.random.default_rng(0)
    x = [rng.integers(0, 40, (5, 9)), rand(5, 4)]
    proto = ox.to_onnx(model)  # built when made: no sample needed
    assert [i.name for i in proto.graph.input] == ["words", "numbers"]
    assert [o.name for o in proto.graph.output] == ["kind", "price"]
    words_dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in words_dims] == ["batch", "words_axis1"]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    for batch in (x, [x[0][:2, :4], x[1][:2]]):  # another batch size and sentence length
        got = ort.InferenceSession(proto.SerializeToString()).run(
            None, {"words": batch[0], "numbers": batch[1]}
        )
        for g_out, want in zip(got, model.predict(batch)):
            np.testing.assert_allclose(g_out, want, **TOL)
    path = ox.export_onnx(model, tmp_path / "shop.onnx")
    assert ox.compare_with_runtime(model, path, {"numbers": x[1], "words": x[0]}) < 1e-5
    model.save(tmp_path / "run")  # and from a saved folder, through `splitgrad export`
    assert cli.main(["export", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "input  words (batch, words_axis1) int64" in out and "output price (batch, 1)" in out
    assert "largest difference from predict" in out


@functional_api
def test_functional_and_sequential_models_nest_both_ways():
    inputs = nn.Input((6, 6, 2))
    h = nn.Conv2D(3, 3, padding="same", activation="relu")(inputs)
    block = sg.Model(inputs, nn.Add()([h, nn.Conv2D(3, 1)(inputs)]), name="block")
    outer_in = nn.Input((6, 6, 2))
    tail = nn.Sequential([nn.GlobalAveragePooling2D(), nn.Dense(2)])
    outer = sg.Model(outer_in, tail(block(outer_in)))
    check(outer, rand(4, 6, 6, 2), sample=False)
    check(nn.Sequential([block, nn.Flatten(), nn.Dense(3)]), rand(3, 6, 6, 2))


def test_a_model_subclass_with_its_own_call_is_named():
    class Twice(sg.nn.Model):
        def __init__(self):
            super().__init__()
            self.dense = nn.Dense(2)

        def call(self, x):
            return self.dense(x) * 2.0

    with pytest.raises(ox.UnsupportedLayer, match="class Twice.*call"):
        ox.to_onnx(Twice(), sample=rand(1, 3))


# ----- errors ------------------------------------------------------------------------------
class Doubler(nn.Layer):
    def call(self, x):
        return x * 2.0


class OddDense(nn.Dense):
    def call(self, x):
        return super().call(x) + 1.0


@pytest.mark.parametrize("layer, why", [(Doubler(), "no converter"), (OddDense(2), "overrides")])
def test_an_unknown_layer_is_named_with_what_is_supported(layer, why):
    model = nn.Sequential([nn.Dense(4), layer], name="net")
    with pytest.raises(ox.UnsupportedLayer) as err:
        ox.to_onnx(model, sample=rand(1, 3))
    message = str(err.value)
    assert f"layer {layer.name!r} of class {type(layer).__name__}" in message
    assert "at net/" in message and why in message
    assert "Supported: " in message and "Conv2D" in message and "LSTM" in message


def test_a_converter_of_your_own():
    class Tripler(nn.Layer):
        def call(self, x):
            return x * 3.0

    with pytest.raises(ox.UnsupportedLayer, match="Tripler"):
        ox.to_onnx(nn.Sequential([Tripler()]), sample=rand(1, 2))

    @ox.converter(Tripler)
    def tripler(g, layer, x):
        return ox.Value(g.op("Mul", [x.name, g.const(3.0, "three")]), x.shape)

    check(nn.Sequential([nn.Dense(3), Tripler()]), rand(4, 2))


@pytest.mark.parametrize(
    "layer, match",
    [
        (nn.LSTM(3, return_state=True), "return_state"),
        (nn.Bidirectional(nn.GRU(3), merge_mode=None), "merge_mode=None"),
    ],
)
def test_options_without_an_onnx_form_are_named(layer, match):
    with pytest.raises(ox.UnsupportedLayer, match=match):
        ox.to_onnx(layer, sample=rand(2, 4, 3))


def test_a_stateful_recurrent_layer_is_named():
    try:
        layer = nn.LSTM(3, stateful=True)
    except TypeError:
        pytest.skip("the recurrent layers have no stateful=True in this tree")
    with pytest.raises(ox.UnsupportedLayer, match="stateful=True"):
        ox.to_onnx(nn.Sequential([layer]), sample=rand(2, 4, 3))


def test_usage_errors(tmp_path):
    with pytest.raises(ValueError, match="not built yet"):
        ox.to_onnx(nn.Sequential([nn.Dense(2)]))
    with pytest.raises(ValueError, match="opset must be an int from 13"):
        ox.to_onnx(nn.Sequential([nn.Dense(2)]), sample=rand(1, 2), opset=7)
    with pytest.raises(ValueError, match="does not exist"):
        ox.export_onnx(nn.Sequential([nn.Dense(2)]), tmp_path / "no" / "m.onnx", rand(1, 2))


# ----- the command line --------------------------------------------------------------------
@pytest.fixture
def with_export(monkeypatch):
    """`splitgrad export` registered (as cli._extensions will do once the lead adds it)."""
    found = cli._extensions()
    if export_cli.add_cli not in found:
        monkeypatch.setattr(cli, "_extensions", lambda: [*found, export_cli.add_cli])


def test_cli_exports_a_trained_run(tmp_path, capsys, with_export):
    run = tmp_path / "run"
    assert cli.main(["train", "digits-cnn", "--quick", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["export", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {run / 'model.onnx'}" in out
    assert "input (batch, 8, 8, 1) float32" in out and "output (batch, 10)" in out
    assert "largest difference from predict" in out
    model = sg.load_model(run)  # the run folder still loads with the file beside it
    x = recipes.get("digits-cnn").load_data(quick=True).x_test[:20]
    proto = onnx.load(str(run / "model.onnx"))
    np.testing.assert_allclose(run_onnx(proto, x), model.predict(x), **TOL)
    assert cli.main(["export", str(run), "--out", str(tmp_path / "m.onnx"), "--no-check"]) == 0
    assert (tmp_path / "m.onnx").is_file()


def test_cli_names_a_missing_or_damaged_run_folder(tmp_path, capsys, with_export):
    assert cli.main(["export", str(tmp_path / "nothing")]) == 2
    assert "splitgrad: error:" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    assert cli.main(["export", str(tmp_path / "bad")]) == 2
    assert "splitgrad: error:" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "model.onnx").exists()
