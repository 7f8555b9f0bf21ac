"""Weights from PyTorch, written as a user would: build the model in PyTorch, save its
state_dict with safetensors, load it into the same splitgrad model and get the same outputs
(float32 to 1e-5, float64 to 1e-10). A model that differs is named in the error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from splitgrad import nn
from splitgrad.interop.torch_weights import load_torch_state_dict

F32 = {"rtol": 1e-5, "atol": 1e-5}
F64 = {"rtol": 1e-10, "atol": 1e-10}


def _saved(tmp_path, torch_model, name="model.safetensors"):
    path = tmp_path / name
    save_file(torch_model.state_dict(), str(path))
    return path


def _torch_out(torch_model, x):
    torch_model.eval()
    with torch.no_grad():
        return torch_model(torch.from_numpy(x)).numpy()


def _randomize_batchnorm(bn, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t, low, high in (
            (bn.weight, 0.5, 2.0),
            (bn.bias, -1.0, 1.0),
            (bn.running_mean, -1.0, 1.0),
            (bn.running_var, 0.5, 2.0),
        ):
            t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (high - low) + low)


# ----- PyTorch --------------------------------------------------------------------------------
def test_a_deep_pytorch_mlp_in_float32_past_ten_modules(tmp_path):
    """nn.Sequential keys 0..14: the file stores them sorted as text ("10" before "2"), and
    they are matched in the order PyTorch numbered them."""
    torch.manual_seed(0)
    mods = [torch.nn.Linear(6, 8), torch.nn.ReLU()]
    for _ in range(6):
        mods += [torch.nn.Linear(8, 8), torch.nn.Tanh()]
    ref = torch.nn.Sequential(*mods, torch.nn.Linear(8, 3)).float()
    path = _saved(tmp_path, ref)

    model = nn.Sequential(
        [nn.Dense(8, activation="relu")]
        + [nn.Dense(8, activation="tanh") for _ in range(6)]
        + [nn.Dense(3)]
    )
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    model(x[:1])
    report = load_torch_state_dict(model, path)
    assert len(report.loaded) == 16 and not report.missing_keys and not report.unexpected_keys
    np.testing.assert_allclose(model.predict(x), _torch_out(ref, x), **F32)


def test_a_pytorch_cnn_with_batchnorm_and_flatten(tmp_path):
    """NCHW → NHWC: kernels move from (out, in, kh, kw) to (kh, kw, in, out), and the Dense
    after Flatten gets its rows reordered from PyTorch's (C, H, W) to splitgrad's (H, W, C)."""
    torch.manual_seed(1)
    ref = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 5, 3, padding=1),
        torch.nn.BatchNorm2d(5),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(5 * 3 * 3, 6),
        torch.nn.ReLU(),
        torch.nn.Linear(6, 2),
    ).double()
    _randomize_batchnorm(ref[4], 2)
    path = _saved(tmp_path, ref)

    model = nn.Sequential(
        [
            nn.Conv2D(4, 3, activation="relu"),
            nn.MaxPool2D(2),
            nn.Conv2D(5, 3, padding="same"),
            nn.BatchNormalization(epsilon=1e-5, momentum=0.9),
            nn.Activation("relu"),
            nn.Flatten(),
            nn.Dense(6, activation="relu"),
            nn.Dense(2),
        ],
        dtype="float64",
    )
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 3))
    model(x[:1])
    load_torch_state_dict(model, path)
    expected = _torch_out(ref, np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(model.predict(x), expected, **F64)


def test_pytorch_batchnorm_agrees_in_inference_training_and_its_statistics(tmp_path):
    """BatchNorm1d's momentum=0.1 is splitgrad's momentum=0.9 and eps must be set to 1e-5; then
    the outputs agree in both modes and so do the running statistics after a training pass."""
    torch.manual_seed(3)
    ref = torch.nn.Sequential(
        torch.nn.Linear(5, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(), torch.nn.Linear(6, 2)
    ).double()
    _randomize_batchnorm(ref[1], 4)
    path = _saved(tmp_path, ref)
    model = nn.Sequential(
        [
            nn.Dense(6),
            nn.BatchNormalization(epsilon=1e-5, momentum=0.9),
            nn.Activation("relu"),
            nn.Dense(2),
        ],
        dtype="float64",
    )
    x = np.random.default_rng(3).normal(size=(8, 5))
    model(x[:2])
    load_torch_state_dict(model, path)
    np.testing.assert_allclose(model.predict(x), _torch_out(ref, x), **F64)

    ref.train()
    model.train()
    np.testing.assert_allclose(model(x).data, ref(torch.from_numpy(x)).detach().numpy(), **F64)
    bn = model.layers[1]
    np.testing.assert_allclose(bn.moving_mean.data, ref[1].running_mean.numpy(), **F64)
    np.testing.assert_allclose(bn.moving_variance.data, ref[1].running_var.numpy(), **F64)


class _TaggerLSTM(torch.nn.Module):
    """Named modules registered as emb, lstm, fc: sorted by name the file says emb, fc, lstm."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 4)
        self.lstm = torch.nn.LSTM(4, 5, batch_first=True)
        self.fc = torch.nn.Linear(5, 3)

    def forward(self, ids):
        out, _ = self.lstm(self.emb(ids))
        return self.fc(out[:, -1])


def test_a_pytorch_embedding_lstm_module_into_a_sequential(tmp_path):
    torch.manual_seed(5)
    ref = _TaggerLSTM().double()
    path = _saved(tmp_path, ref)
    model = nn.Sequential([nn.Embedding(20, 4), nn.LSTM(5), nn.Dense(3)], dtype="float64")
    ids = np.random.default_rng(5).integers(0, 20, size=(4, 7))
    model(ids[:1])
    report = load_torch_state_dict(model, path)
    assert ("layers.1.w_ih", "lstm.weight_ih_l0") in report.loaded
    np.testing.assert_allclose(model.predict(ids), _torch_out(ref, ids), **F64)


class _TwoLayerGRU(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(3, 4, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])


def test_a_two_layer_pytorch_gru_is_two_stacked_grus(tmp_path):
    torch.manual_seed(6)
    ref = _TwoLayerGRU().double()
    path = _saved(tmp_path, ref)
    model = nn.Sequential(
        [nn.GRU(4, return_sequences=True), nn.GRU(4), nn.Dense(2)], dtype="float64"
    )
    x = np.random.default_rng(6).normal(size=(3, 6, 3))
    model(x[:1])
    load_torch_state_dict(model, path)
    np.testing.assert_allclose(model.predict(x), _torch_out(ref, x), **F64)


class _BiRNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.RNN(3, 4, nonlinearity="relu", batch_first=True, bidirectional=True)
        self.out = torch.nn.Linear(8, 2)

    def forward(self, x):
        seq, _ = self.rnn(x)
        return self.out(seq)


def test_a_bidirectional_pytorch_rnn_into_bidirectional_simple_rnn(tmp_path):
    torch.manual_seed(7)
    ref = _BiRNN().double()
    path = _saved(tmp_path, ref)
    model = nn.Sequential(
        [
            nn.Bidirectional(nn.SimpleRNN(4, activation="relu", return_sequences=True)),
            nn.Dense(2),
        ],
        dtype="float64",
    )
    x = np.random.default_rng(7).normal(size=(3, 5, 3))
    model(x[:1])
    load_torch_state_dict(model, path)
    np.testing.assert_allclose(model.predict(x), _torch_out(ref, x), **F64)


def test_a_pytorch_transposed_convolution(tmp_path):
    torch.manual_seed(8)
    ref = torch.nn.Sequential(torch.nn.ConvTranspose2d(3, 2, 3, stride=2)).double()
    path = _saved(tmp_path, ref)
    model = nn.Sequential([nn.Conv2DTranspose(2, 3, strides=2)], dtype="float64")
    x = np.random.default_rng(8).normal(size=(2, 4, 4, 3))
    model(x[:1])
    load_torch_state_dict(model, path)
    expected = _torch_out(ref, np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(model.predict(x), expected.transpose(0, 2, 3, 1), **F64)


class _NoBiases(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 4, batch_first=True, bias=False)
        self.norm = torch.nn.BatchNorm1d(4, affine=False)
        self.fc = torch.nn.Linear(4, 2, bias=False)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(self.norm(out[:, -1]))


def test_pytorch_layers_without_bias_or_affine_parameters(tmp_path):
    torch.manual_seed(11)
    ref = _NoBiases().double()
    with torch.no_grad():
        ref.norm.running_mean.uniform_(-1, 1)
        ref.norm.running_var.uniform_(0.5, 2)
    path = _saved(tmp_path, ref)
    model = nn.Sequential(
        [
            nn.LSTM(4),
            nn.BatchNormalization(epsilon=1e-5, center=False, scale=False),
            nn.Dense(2, use_bias=False),
        ],
        dtype="float64",
    )
    x = np.random.default_rng(11).normal(size=(3, 5, 3))
    model.predict(x[:1])
    load_torch_state_dict(model, path)
    np.testing.assert_allclose(model.predict(x), _torch_out(ref, x), **F64)


class _TwoHeads(torch.nn.Module):
    """Two same-sized modules whose names sort against their registration order."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.head(torch.tanh(self.proj(x)))


def test_equal_modules_are_matched_by_name_or_the_dict_order_never_by_a_guess(tmp_path):
    torch.manual_seed(9)
    ref = _TwoHeads().double()
    path = _saved(tmp_path, ref)
    x = np.random.default_rng(9).normal(size=(3, 8))

    def model(**names):
        m = nn.Sequential(
            [nn.Dense(8, activation="tanh", name=names.get("a")), nn.Dense(8, name=names.get("b"))],
            dtype="float64",
        )
        m(x[:1])
        return m

    with pytest.raises(ValueError, match=r"fits both PyTorch modules 'head' and 'proj'") as info:
        load_torch_state_dict(model(), path)
    assert "name='head'" in str(info.value) and "state_dict()" in str(info.value)

    by_dict = model()
    load_torch_state_dict(by_dict, ref.state_dict())  # a dict keeps PyTorch's order
    np.testing.assert_allclose(by_dict.predict(x), _torch_out(ref, x), **F64)

    by_name = model(a="proj", b="head")
    load_torch_state_dict(by_name, path)
    np.testing.assert_allclose(by_name.predict(x), _torch_out(ref, x), **F64)


def test_a_different_pytorch_architecture_names_the_layer_key_and_shapes(tmp_path):
    ref = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    path = _saved(tmp_path, ref.double())
    model = nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(4, name="classifier")])
    model(np.zeros((1, 6)))
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(model, path)
    text = str(info.value)
    for part in ("'classifier' (Dense", "'2.weight'", "(4, 8)", "(3, 8)", "strict=False"):
        assert part in text, text
    assert model.layers[0].kernel.data.std() > 0  # nothing was written before the error

    conv = nn.Sequential([nn.Conv2D(4, 3), nn.Flatten(), nn.Dense(3)])
    conv(np.zeros((1, 5, 5, 3)))
    with pytest.raises(ValueError, match=r"'conv2d' \(Conv2D.*'0.weight'.*\(4, 3, 3, 3\)"):
        load_torch_state_dict(conv, path)


def test_strict_false_loads_what_fits_and_reports_the_rest(tmp_path):
    torch.manual_seed(10)
    ref = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    path = _saved(tmp_path, ref.double())
    x = np.random.default_rng(10).normal(size=(2, 6))

    longer = nn.Sequential([nn.Dense(8), nn.Dense(3), nn.Dense(5)], dtype="float64")
    longer(x[:1])
    before = longer.layers[2].kernel.data.copy()
    with pytest.raises(
        ValueError, match=r"nothing in the file for layer 'dense_2' \(Dense, at 'layers.2'\)"
    ):
        load_torch_state_dict(longer, path)
    with pytest.warns(UserWarning, match="layers.2.kernel"):
        report = load_torch_state_dict(longer, path, strict=False)
    assert report.missing_keys == ["layers.2.kernel", "layers.2.bias"]
    np.testing.assert_array_equal(longer.layers[2].kernel.data, before)
    np.testing.assert_allclose(longer.layers[1].bias.data, ref[2].bias.detach().numpy(), **F64)

    shorter = nn.Sequential([nn.Dense(8)], dtype="float64")
    shorter(x[:1])
    with pytest.warns(UserWarning):
        report = load_torch_state_dict(shorter, path, strict=False)
    assert sorted(report.unexpected_keys) == ["2.bias", "2.weight"]


def test_pytorch_loading_errors_say_what_to_do(tmp_path):
    ref = torch.nn.Sequential(torch.nn.Linear(6, 8))
    unbuilt = nn.Sequential([nn.Dense(8)])
    with pytest.raises(ValueError, match=r"not built yet.*model\(x\[:1\]\)"):
        load_torch_state_dict(unbuilt, ref.state_dict())

    pickled = tmp_path / "model.pt"
    torch.save(ref.state_dict(), pickled)
    built = nn.Sequential([nn.Dense(8)])
    built(np.zeros((1, 6)))
    with pytest.raises(ValueError, match="save_file.*pickle"):
        load_torch_state_dict(built, pickled)

    built.save_weights(tmp_path / "own")
    with pytest.raises(ValueError, match=r"splitgrad's own weight names.*load_weights"):
        load_torch_state_dict(built, tmp_path / "own" / "weights.safetensors")


def test_model_load_weights_picks_the_reader_from_the_file_name(tmp_path):
    """`model.load_weights` reads a .safetensors file as PyTorch's, a folder as splitgrad's."""
    from safetensors.numpy import save_file

    torch.manual_seed(0)
    f32 = torch.float32  # whatever default dtype another test left set
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 4, dtype=f32), torch.nn.ReLU(), torch.nn.Linear(4, 2, dtype=f32)
    )
    path = tmp_path / "net.safetensors"
    save_file({k: v.detach().numpy() for k, v in net.state_dict().items()}, str(path))
    model = nn.Sequential([nn.Dense(4, activation="relu"), nn.Dense(2)])
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    model.predict(x[:1])
    report = model.load_weights(path)
    assert not report.missing_keys and not report.unexpected_keys
    with torch.no_grad():
        assert np.allclose(model.predict(x), net(torch.from_numpy(x)).numpy(), atol=1e-6)
    model.save_weights(tmp_path / "ours")
    twin = nn.Sequential([nn.Dense(4, activation="relu"), nn.Dense(2)])
    twin.predict(x[:1])
    assert twin.load_weights(tmp_path / "ours") is None
    assert np.array_equal(twin.predict(x), model.predict(x))
